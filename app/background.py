"""A background thread (a greenlet under gevent) that belongs to one process.

A forked child (every gunicorn and dramatiq worker) inherits the parent's objects but none of
its threads. So an object that flushes or beats from a thread starts it lazily, in the process
that uses it: `ensure_started()` is a pid comparison when the thread already runs here, and
starts a new one, with a fresh stop event, in a new process or after `stop()`.
"""

from __future__ import annotations

import os
import threading
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
