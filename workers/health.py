"""HTTP health checks of service containers, made from the worker to their published ports."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Mapping

from app.models import now_s
from app.stores.health import Health


def probe(host: str, port: int, path: str, timeout_s: float) -> Health:
    """One GET of `path`: healthy on any 2xx or 3xx answer within `timeout_s`."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"User-Agent": "berth-health/1", "Connection": "close"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as ex:
        return Health(False, f"GET {path}: {ex or type(ex).__name__}", now_s())
    finally:
        conn.close()
    if 200 <= status < 400:
        return Health(True, "", now_s())
    return Health(False, f"GET {path} answered {status}", now_s())


def wait_healthy(targets: Mapping[str, tuple[str, int]], path: str, timeout_s: float,
                 deadline_s: float, still_running: Callable[[str], str | None],
                 clock: Callable[[], float] = time.monotonic) -> dict[str, Health]:
    """Probe every target (name -> (host, port)) until each is healthy or `deadline_s` passes.

    Probes start at once and back off from 50 ms to 1 s, so a fast container is routable
    within milliseconds of listening. `still_running(name)` is asked about once a second and
    returns why a container can no longer become healthy (it exited), or None.
    """
    results: dict[str, Health] = {}
    pending = dict(targets)
    end = clock() + deadline_s
    delay, next_liveness = 0.05, clock() + 1.0
    while pending:
        for name, (host, port) in list(pending.items()):
            result = probe(host, port, path, timeout_s)
            results[name] = result
            if result.healthy:
                del pending[name]
        if not pending:
            break
        now = clock()
        if now >= next_liveness:
            next_liveness = now + 1.0
            for name in list(pending):
                reason = still_running(name)
                if reason:
                    results[name] = Health(False, reason, now_s())
                    del pending[name]
        if now >= end or not pending:
            break
        time.sleep(min(delay, max(0.0, end - now)))
        delay = min(delay * 1.5, 1.0)
    return results
