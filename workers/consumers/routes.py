"""Router names: a request counts under its route's host pattern, not the Host it asked for.

Under a wildcard route (`*.example.com`) every subdomain a client makes up would otherwise be
a router of its own: an unbounded label set in Redis and in /metrics. An exact route's pattern
is its host, so for those nothing changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from app.errors import Unavailable
from app.stores.routes import RouteStore

log = logging.getLogger(__name__)

REFRESH_S = 1.0


class RouteHosts:
    """route id -> host pattern, reloaded when the routes table version changes (checked at
    most every REFRESH_S, and at once for an id it does not know, at the same pace)."""

    def __init__(self, store: RouteStore, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.clock = clock
        self._hosts: dict[str, str] = {}
        self._version = -1
        self._checked = float("-inf")

    def __call__(self, route_id: str, host: str) -> str:
        if route_id not in self._hosts or self.clock() - self._checked >= REFRESH_S:
            self._refresh()
        return self._hosts.get(route_id, host)

    def _refresh(self) -> None:
        if self.clock() - self._checked < REFRESH_S:
            return
        self._checked = self.clock()
        try:
            version = self.store.table_version()
            if version != self._version:
                self._hosts = {r.id: r.host for r in self.store.list(limit=1_000_000)}
                self._version = version
        except (Unavailable, redis.RedisError) as ex:
            # Keep the table we have: the batch's own transaction will meet the outage and
            # the Reader waits it out; failing the handler here would dead-letter the batch.
            log.warning("route table not refreshed: %s", ex)
