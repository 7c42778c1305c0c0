"""Backends that hang, reset connections or answer garbage, while a steady load goes to a
healthy host through the same proxy: each bad exchange is a prompt 504/502 carrying a trace id
(in its body, its X-Trace-Id header and its event), the proxy workers live on without a
traceback, and the healthy host loses nothing."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.models import Route
from app.stores import RouteStore
from app.tracing import new_trace_id
from harness.procs import wait_until
from tests.e2e.conftest import PROXY_ENV, request, request_events
from tests.faults.bad_backends import HANG, RESET, BadBackend
from tests.faults.load import SteadyLoad
from tests.faults.platform import explain

pytestmark = pytest.mark.faults

# host -> (behaviour, the status the client must get)
BAD = {
    "hang.test": (HANG, 504),
    "reset.test": (RESET, 502),
    "garbage.test": (b"this is not HTTP\r\n\r\n", 502),
    "length.test": (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nbody", 502),
    "colon.test": (b"HTTP/1.1 200 OK\r\nNo colon in this header\r\n\r\n", 502),
}
PER_HOST = 6  # on fresh connections, so both proxy workers meet each backend
# A bounded wait per request: the proxy's read timeout and a margin (no timing assertion).
CLIENT_TIMEOUT_S = float(PROXY_ENV["BERTH_PROXY_READ_TIMEOUT_S"]) + 5


def test_bad_backends_get_prompt_502_504_with_trace_ids_and_nothing_else_fails(
        proxy, routes, backend, redis_client, figures):
    bad = {host: BadBackend(behaviour).start() for host, (behaviour, _) in BAD.items()}
    store = RouteStore(redis_client)
    log_from = len(proxy.output())
    workers = set(proxy.worker_pids())
    try:
        for host, server in bad.items():
            store.create(store.new("alice", Route.clean({"host": host,
                                                         "targets": [server.url]})))
        routes.add("steady.test", [backend.url])  # served, so the routes above are too

        def one(host: str) -> tuple[str, str, int, str, dict]:
            trace = new_trace_id()
            status, headers, body = request(proxy.port, "GET", "/x", host,
                                            headers={"X-Trace-Id": trace},
                                            timeout=CLIENT_TIMEOUT_S)
            return host, trace, status, headers.get("X-Trace-Id"), json.loads(body)

        with SteadyLoad(proxy.port, "steady.test") as load:
            load.wait_for(50)
            with ThreadPoolExecutor(max_workers=len(BAD) * PER_HOST) as pool:
                answers = list(pool.map(one, [h for h in BAD for _ in range(PER_HOST)]))
            load.wait_for(50)

        wrong = [(h, s) for h, _t, s, _hd, _b in answers if s != BAD[h][1]]
        untraced = [h for h, t, _s, header, body in answers
                    if not (body.get("trace_id") == t == header
                            and body.get("title") and body.get("description"))]
        events = {t: request_events(redis_client, t)[0] for _h, t, *_ in answers}
        unreported = [h for h, t, s, *_ in answers
                      if (events[t].type, events[t].data["status"]) != ("proxy_request_failed", s)]
        new_log = proxy.output()[log_from:]
        hung = bad["hang.test"]
        figures(bad_requests=len(answers), wrong_status=len(wrong), without_trace=len(untraced),
                without_event=len(unreported), steady_sent=load.sent, steady_failed=load.failed,
                hung_connections=hung.accepted, released_by_proxy=hung.released,
                proxy_workers_replaced=len(workers - set(proxy.worker_pids())))
        assert wrong == [] and untraced == [] and unreported == []
        assert {events[t].data["error"] for h, t, *_ in answers if h == "hang.test"} == {
            "upstream_timeout"}
        assert load.failed == 0, explain(redis_client, load.failures)
        assert set(proxy.worker_pids()) == workers  # none died nor was replaced
        # The proxy gave up each hung upstream connection rather than keeping it.
        wait_until(lambda: hung.released == hung.accepted, timeout=10,
                   what="the hung upstream connections closed by the proxy")
        assert "Traceback" not in new_log, new_log[-3000:]
    finally:
        for server in bad.values():
            server.stop()
