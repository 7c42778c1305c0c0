"""Per-worker in-memory copies of a stored table (routes; certificates for TLS).

The hot path reads `cache.current`, one attribute, and never waits on Redis. A background
thread (a greenlet under gevent) keeps it fresh: it listens on the noun's pub/sub changes
channel and reloads on each announcement, and every `interval_s` compares the stored table
version with its own, which also catches announcements lost while disconnected. While Redis
is unreachable the last table keeps serving and the thread retries with a backoff.

The thread starts lazily in the process that first uses the cache, so a cache built before
gunicorn forks still refreshes in every worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import redis

from app import redis as keys
from app.background import Backoff, current_pid
from app.errors import Unavailable
from app.stores.base import Repository
from proxy.routing import RouteTable

log = logging.getLogger(__name__)

T = TypeVar("T")
PAGE = 1000


class TableCache(Generic[T]):
    def __init__(self, store: Repository, build: Callable[[list, int], T], *,
                 interval_s: float = 2.0):
        self.store = store
        self.build = build
        self.interval_s = interval_s
        self.channel = keys.changes_channel(store.noun)
        self.current: T | None = None
        self.version = -1
        self.reloads = 0
        self.on_reload: Callable[[], None] | None = None
        self._pid: int | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._backoff = Backoff(f"{store.noun} table refresh", log, first_s=0.2,
                                max_s=interval_s)
        self._retry_at = 0.0

    def get(self) -> T | None:
        """The current table; loads it on first use in this process (None while Redis cannot
        be reached then; tried again at most once per interval, not on every request)."""
        if self._pid != current_pid():  # a cheap fork check: `get` runs on every request
            self.start()
        if self.current is None and time.monotonic() >= self._retry_at:
            with self._lock:
                if self.current is None and time.monotonic() >= self._retry_at:
                    try:
                        self.reload()
                        self._redis_up()
                    except (redis.RedisError, Unavailable) as ex:
                        self._redis_down(ex)
                        self._retry_at = time.monotonic() + self.interval_s
        return self.current

    def start(self) -> None:
        """Start the refresher in this process unless it runs here already."""
        pid = os.getpid()
        with self._lock:
            if self._pid == pid:
                return
            self._pid = pid
            self._stop = threading.Event()
            threading.Thread(target=self._run, args=(self._stop,), daemon=True,
                             name=f"berth-{self.store.noun}-cache").start()

    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        """Load every record and swap the table in (version first: a change during the load
        leaves the stored version ahead of ours, so the next check loads again)."""
        version = self.store.table_version()
        total = self.store.count()
        records: list = []
        for offset in range(0, total, PAGE):
            records.extend(self.store.list(offset=offset, limit=PAGE))
        self.current = self.build(records, version)
        self.version = version
        self.reloads += 1
        if self.on_reload is not None:
            self.on_reload()

    def reload_if_changed(self) -> None:
        if self.store.table_version() != self.version or self.current is None:
            self.reload()

    @property
    def _redis_ok(self) -> bool:
        return self._backoff.ok

    def _redis_down(self, ex: Exception) -> float:
        """Logged once per state change (the last known table keeps serving meanwhile);
        returns how long to wait before the next attempt."""
        return self._backoff.failed(ex)

    def _redis_up(self) -> None:
        self._backoff.succeeded()

    def _run(self, stop: threading.Event) -> None:
        pubsub = None
        backoff = 0.0
        while not stop.is_set():
            if backoff:
                stop.wait(backoff)
            try:
                if pubsub is None:
                    pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.channel)
                    # Whatever changed while we were not subscribed. A full load, not a version
                    # check: a Redis restarted without its data counts versions from 0 again.
                    self.reload()
                message = pubsub.get_message(timeout=self.interval_s)
                if message is not None:
                    # A burst of changes costs one reload: drop the announcements already
                    # here, without waiting for more (waiting 10 ms for more delayed every
                    # change by that much). A full load, not a version check: after Redis
                    # lost its data, a new change may bring back the version we hold.
                    while pubsub.get_message(timeout=0) is not None:
                        pass
                    self.reload()
                else:
                    self.reload_if_changed()
                backoff = 0.0
                self._redis_up()
            except (redis.RedisError, Unavailable, OSError) as ex:
                backoff = self._redis_down(ex)
                pubsub = _close(pubsub)
            except Exception:  # e.g. a record that no longer parses: log it, keep refreshing
                log.exception("%s table: refresh failed; serving the last known table",
                              self.store.noun)
                backoff = self.interval_s
                pubsub = _close(pubsub)
        _close(pubsub)


def _close(pubsub) -> None:
    if pubsub is not None:
        with contextlib.suppress(Exception):  # it is being discarded; nothing left to do
            pubsub.close()


def route_cache(store: Repository, interval_s: float = 2.0) -> TableCache[RouteTable]:
    return TableCache(store, lambda routes, version: RouteTable.build(routes, version),
                      interval_s=interval_s)
