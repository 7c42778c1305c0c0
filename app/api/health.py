"""/healthz (no token): is this process up and can it reach Redis."""

from __future__ import annotations

import falcon
import redis

from app.api.params import query


class HealthResource:
    auth_required = False

    def __init__(self, client: redis.Redis):
        self.client = client

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        try:
            ok = bool(self.client.ping())
        except redis.RedisError:
            ok = False
        resp.set_header("Cache-Control", "no-store")
        resp.status = falcon.HTTP_200 if ok else falcon.HTTP_503
        resp.media = {"status": "ok" if ok else "unavailable", "redis": ok}
