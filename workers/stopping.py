"""One stop per SIGTERM burst for a Dramatiq worker process.

Dramatiq's worker process takes its first SIGTERM as "finish the messages in hand, then stop"
and a second one as "exit now". Supervisors that signal a whole process group (honcho under
`make run`, systemd's default KillMode, the test harness) deliver two at once: one from the
supervisor, one forwarded by Dramatiq's main process. When the forwarded one is handled apart
from the first (a loaded machine takes milliseconds to run the main process's handler), the
worker exits mid-message: the job is cut off and its message waits for the 60 s heartbeat
timeout to be redelivered. Here a SIGTERM within `window_s` of the first is the same stop;
a later one still means "exit now".
"""

from __future__ import annotations

import logging
import signal
import threading
import time

log = logging.getLogger(__name__)

REPEAT_WINDOW_S = 2.0


def coalesce_repeated_sigterm(window_s: float = REPEAT_WINDOW_S) -> bool:
    """Wrap the process's SIGTERM handler (Dramatiq's); False where it cannot (not the main
    thread, or no Python handler installed)."""
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        return False
    first: float | None = None

    def on_sigterm(signum, frame):
        nonlocal first
        now = time.monotonic()
        if first is not None and now - first < window_s:
            log.info("SIGTERM again %.3f s after the first: the same stop", now - first)
            return
        first = first if first is not None else now
        previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    return True
