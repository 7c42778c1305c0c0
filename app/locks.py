"""Redis leases: held while their holder works, expiring soon after it dies.

- `KeptLock`: redis-py's Lock, which expires after `ttl_s`, extended from a background thread
  every third of that, so a long operation keeps it while a SIGKILLed holder loses it within
  `ttl_s`. For work one process does at a time (a certificate's order, a service's rollout).
- `FencedLease`: a lease its holder extends itself (the scheduler's leadership), whose value
  carries a fencing token: a number from INCR that grows with every new holder. A holder's
  work checks, in Redis, that the lease still holds its token (`Fence`), so a holder that was
  paused or cut off past the expiry, and replaced, does nothing on waking.
"""

from __future__ import annotations

import logging
import threading

import redis
from redis.exceptions import LockError

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The lease no longer holds this holder's fencing token: another holder took over."""


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


# Extend the lease when it holds ARGV[1] (returns its token), or take it when free with a new
# token (INCR of KEYS[2]); false when another holder has it. Value: "<token>:<holder>".
_TAKE_OR_EXTEND = """
local value = redis.call('GET', KEYS[1])
if value then
  local token, holder = string.match(value, '^(%d+):(.*)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# What a script checking a Fence starts with (KEYS[1] the lease, ARGV[1] the expected value):
# `FENCE_CHECK .. body` returns false, changing nothing, when the lease moved on.
FENCE_CHECK = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
"""


class Fence:
    """One holder's term of a FencedLease: `check()` raises LeaseLost once the lease holds
    another token; a script prefixed with FENCE_CHECK makes the same check atomically with its
    writes (pass `keys=[fence.key, ...]`, `args=[fence.value, ...]`)."""

    def __init__(self, client: redis.Redis, key: str, value: str):
        self.client = client
        self.key = key
        self.value = value

    @property
    def token(self) -> int:
        return int(self.value.partition(":")[0])

    def check(self) -> None:
        if self.client.get(self.key) != self.value:
            raise LeaseLost(f"{self.key} no longer holds token {self.token}")


class Unfenced(Fence):
    """For work run outside any lease (tests, a one-off call): every check passes."""

    def __init__(self):
        super().__init__(None, "", "")  # type: ignore[arg-type]

    def check(self) -> None:
        return None


class FencedLease:
    """A lease on `key` that its holder renews by calling `take()` well within `ttl_s`;
    `fence_key` counts the terms (the fencing tokens)."""

    def __init__(self, client: redis.Redis, key: str, fence_key: str, holder: str, *,
                 ttl_s: float):
        self.client = client
        self.key = key
        self.fence_key = fence_key
        self.holder = holder
        self.ttl_ms = int(ttl_s * 1000)
        self._take = client.register_script(_TAKE_OR_EXTEND)
        self._release = client.register_script(_RELEASE)

    def take(self) -> Fence | None:
        """Take the lease or extend ours: the Fence of our term, None when another holds it."""
        token = self._take(keys=[self.key, self.fence_key],
                           args=[self.holder, self.ttl_ms])
        if token is None:
            return None
        return Fence(self.client, self.key, f"{token}:{self.holder}")

    def release(self, fence: Fence) -> None:
        self._release(keys=[self.key], args=[fence.value])
