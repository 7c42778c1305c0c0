"""The last health check of each service container: written by workers, read by the API."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis

from app import redis as keys
from app.redis_errors import raise_unavailable


@dataclass(frozen=True)
class Health:
    healthy: bool
    error: str = ""
    checked_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"healthy": self.healthy, "error": self.error,
                           "checked_at": self.checked_at})

    @classmethod
    def from_json(cls, raw: str) -> Health:
        data = json.loads(raw)
        return cls(bool(data.get("healthy")), data.get("error", ""), data.get("checked_at", 0.0))

    def public(self) -> dict:
        return {"healthy": self.healthy, "error": self.error, "checked_at": self.checked_at}


class HealthStore:
    """One hash per service: container name -> its last Health."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def record(self, service: str, results: Mapping[str, Health]) -> None:
        if results:
            self._call(self.client.hset, keys.service_health(service),
                       mapping={name: h.to_json() for name, h in results.items()})

    def read(self, service: str) -> dict[str, Health]:
        raw = self._call(self.client.hgetall, keys.service_health(service))
        return {name: Health.from_json(value) for name, value in raw.items()}

    def forget(self, service: str, containers: Iterable[str]) -> None:
        names = list(containers)
        if names:
            self._call(self.client.hdel, keys.service_health(service), *names)

    def clear(self, service: str) -> None:
        self._call(self.client.delete, keys.service_health(service))

    @staticmethod
    def _call(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as ex:
            raise_unavailable(ex)  # Redis unreachable or refusing: 503
            raise
