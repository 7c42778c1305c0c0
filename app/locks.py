"""A Redis lock that stays held while its holder works, and expires soon after it dies.

redis-py's Lock expires after `ttl_s`; `KeptLock` extends it from a background thread every
third of that, so a long operation keeps it while a SIGKILLed holder loses it within `ttl_s`.
"""

from __future__ import annotations

import logging
import threading

import redis
from redis.exceptions import LockError

log = logging.getLogger(__name__)


class LockBusy(Exception):
    """Another holder has the lock (not a BerthError: callers decide what it means)."""


class KeptLock:
    def __init__(self, client: redis.Redis, name: str, *, ttl_s: float, wait_s: float = 0.0):
        self.name = name
        self.ttl_s = ttl_s
        self._lock = client.lock(name, timeout=ttl_s, blocking=wait_s > 0,
                                 blocking_timeout=wait_s or None, thread_local=False)
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self.lost = threading.Event()  # set when the lock could not be extended

    def __enter__(self) -> KeptLock:
        if not self._lock.acquire():
            raise LockBusy(f"{self.name} is held by another process")
        self._keeper = threading.Thread(target=self._keep, name=f"keep {self.name}",
                                        daemon=True)
        self._keeper.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(timeout=5)
        try:
            self._lock.release()
        except LockError:  # expired meanwhile (and maybe taken): nothing of ours to release
            log.warning("lock %s had expired before release", self.name)

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._lock.reacquire()
            except LockError as ex:  # expired or taken: the holder should stop writing
                log.warning("lost lock %s: %s", self.name, ex)
                self.lost.set()
                return
            except redis.RedisError as ex:  # try again next round; it may not expire yet
                log.warning("could not extend lock %s: %s", self.name, ex)
