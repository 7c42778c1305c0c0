"""The real web process (`app.api.wsgi:app`, which serves the metrics API, /metrics and the
dashboard) and the real consumer process, for e2e tests."""

from __future__ import annotations

import http.client
import sys
import time
from pathlib import Path

from app.models import Route
from app.stores.routes import RouteStore
from tests.support.api import start_web
from tests.support.procs import Proc

__all__ = ["serve_route", "start_consumer", "start_web"]


def start_consumer(redis_url: str, log_path: Path, env: dict | None = None) -> Proc:
    """`python -m workers.consumers`, taking over a dead consumer's entries after 0.5 s."""
    return Proc([sys.executable, "-m", "workers.consumers"], log_path,
                env={"REDIS_URL": redis_url, "BERTH_CONSUMER_CLAIM_IDLE_MS": "500",
                     "BERTH_CONSUMER_BATCH": "100", "BERTH_LOG_FORMAT": "text",
                     "BERTH_ALERT_EVAL_S": "0.5", **(env or {})})


def serve_route(redis_client, proxy_port: int, host: str, target: str,
                owner: str = "root") -> int:
    """Create an exact route for `host` and wait until every proxy worker serves it (six
    answers in a row). Returns how many probes the route answered: they count in its metrics,
    so a test can expect exact figures."""
    store = RouteStore(redis_client)
    store.create(store.new(owner, Route.clean({"host": host, "targets": [target]})))
    answered = streak = 0
    deadline = time.monotonic() + 15
    while streak < 6:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the proxy does not serve {host}")
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=5)
        try:
            conn.request("GET", "/echo", headers={"Host": host})
            ok = conn.getresponse().status == 200
        finally:
            conn.close()
        answered += ok
        streak = streak + 1 if ok else 0
        if not ok:
            time.sleep(0.05)
    return answered
