"""A background thread (a greenlet under gevent) that belongs to one process.

A forked child (every gunicorn and dramatiq worker) inherits the parent's objects but none of
its threads. So an object that flushes or beats from a thread starts it lazily, in the process
that uses it: `ensure_started()` is a pid comparison when the thread already runs here, and
starts a new one, with a fresh stop event, in a new process or after `stop()`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable

# This process's id, kept current across forks: os.getpid() is a system call, and
# `ensure_started` runs for every event the proxy publishes.
_process = {"pid": os.getpid()}
os.register_at_fork(after_in_child=lambda: _process.update(pid=os.getpid()))


def current_pid() -> int:
    return _process["pid"]


class ProcessThread:
    def __init__(self, name: str, target: Callable[[threading.Event], None]):
        """`target(stop)` runs in the thread and returns once `stop` is set."""
        self.name = name
        self._target = target
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        """Start the thread unless it already runs in this process (thread-safe)."""
        pid = _process["pid"]
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            # Each thread gets its own event: one stopped earlier never resumes.
            self._stop = threading.Event()
            self.thread = threading.Thread(target=self._target, args=(self._stop,),
                                           name=self.name, daemon=True)
            self.thread.start()
            self._pid = pid

    @property
    def started_here(self) -> bool:
        return self._pid == os.getpid()

    def stop(self) -> threading.Thread | None:
        """Tell the thread to stop (not waiting); returns it when it was started in this
        process. The next `ensure_started()` starts a new one."""
        self._stop.set()
        here = self.started_here
        self._pid = None
        return self.thread if here else None


# -- the loops' state: what this process's heartbeat reports -------------------------------

# loop name -> why it is degraded now, for the loops of this process that are failing.
# A forked child starts none of its parent's threads, so it starts with none of their states.
_degraded: dict[str, str] = {}
os.register_at_fork(after_in_child=_degraded.clear)


def degraded() -> dict[str, str]:
    """The loops of this process that are failing now, with why (a copy)."""
    return dict(_degraded)


class Backoff:
    """The pace and the log of one long-running loop that meets errors (Redis refusing or
    unreachable, above all): `failed(ex)` returns how long to wait, growing exponentially
    from `first_s` to `max_s` with jitter (so N processes do not retry in step after an
    outage), and logs a warning only when the loop becomes degraded or its reason changes;
    `succeeded()` logs once that it recovered. While degraded the loop is listed in
    `degraded()`, which the process's heartbeat reports (unless `report` is False)."""

    def __init__(self, name: str, logger: logging.Logger, *, first_s: float = 0.1,
                 max_s: float = 5.0, report: bool = True):
        self.name = name
        self.log = logger
        self.first_s = first_s
        self.max_s = max_s
        self.report = report
        self.reason: str | None = None
        self.failures = 0
        self._delay = 0.0
        self._since = 0.0

    @property
    def ok(self) -> bool:
        return self.reason is None

    def failed(self, ex: BaseException) -> float:
        reason = _reason(ex)
        if reason != self.reason:
            if self.reason is None:
                self._since = time.monotonic()
            self.log.warning("%s degraded: %s (%s); retrying with backoff", self.name, reason,
                             _one_line(ex))
            self.reason = reason
            if self.report:
                _degraded[self.name] = reason
        self.failures += 1
        self._delay = min(self.max_s, max(self.first_s, self._delay * 2))
        return random.uniform(self._delay / 2, self._delay)

    def succeeded(self) -> None:
        self._delay = 0.0
        if self.reason is None:
            return
        self.log.info("%s recovered after %.1f s (%d failed attempts)", self.name,
                      time.monotonic() - self._since, self.failures)
        self.reason = None
        self.failures = 0
        _degraded.pop(self.name, None)

    def wait(self, stop: threading.Event, ex: BaseException) -> bool:
        """`failed(ex)`, then wait that long or until `stop` is set (returns whether set)."""
        return stop.wait(self.failed(ex))


def _reason(ex: BaseException) -> str:
    from app.redis_errors import refusal  # redis is imported late (see app/redis.py)

    found = refusal(ex)
    return f"Redis {found}" if found else type(ex).__name__


def _one_line(ex: BaseException) -> str:
    text = " ".join(str(ex).split())
    return text[:200] if text else type(ex).__name__
