"""This worker's report of the table versions it serves (the layout: app/served.py).

Reported with every heartbeat (so a Redis that lost its data learns it again within a beat)
and at once after each reload, so a command waiting for its change to be served does not
wait for the next beat.
"""

from __future__ import annotations

import logging

import redis

from app import redis as keys
from app.heartbeat import Heartbeat
from app.served import encode
from proxy.route_cache import TableCache

log = logging.getLogger(__name__)


class ServedReport:
    def __init__(self, client: redis.Redis, caches: dict[str, TableCache]):
        self.client = client
        self.caches = caches
        self.heartbeat: Heartbeat | None = None  # whose member names this worker
        for cache in caches.values():
            cache.on_reload = self.now

    def versions(self) -> dict[str, int]:
        return {noun: cache.version for noun, cache in self.caches.items()
                if cache.version >= 0}

    def stage(self, pipe) -> None:
        """Queue the report on the heartbeat's pipeline (Heartbeat `also`)."""
        if self.heartbeat is not None:
            pipe.hset(keys.PROXY_SERVED, self.heartbeat.member, encode(self.versions()))

    def now(self) -> None:
        """After a reload (in the refresher, or in a request's first load)."""
        if self.heartbeat is None:
            return
        try:
            self.client.hset(keys.PROXY_SERVED, self.heartbeat.member, encode(self.versions()))
        except redis.RedisError as ex:  # the next beat reports it; the reload stands
            log.debug("reporting the served versions failed: %s", ex)

    def clear(self) -> None:
        if self.heartbeat is None:
            return
        try:
            self.client.hdel(keys.PROXY_SERVED, self.heartbeat.member)
        except redis.RedisError as ex:
            log.warning("could not remove the served versions of %s: %s",
                        self.heartbeat.member, ex)
