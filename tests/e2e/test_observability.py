"""Observability end to end: requests through the real proxy, the real consumer process
SIGKILLed and restarted twice meanwhile, and the real web process reporting exactly N in the
metrics API and in /metrics."""

from __future__ import annotations

import http.client
import threading

import pytest
import requests

from app.stores.tokens import TokenStore
from tests.support.observability import serve_route, start_consumer, start_web
from tests.support.procs import wait_until
from tests.support.prometheus import parse_exposition

pytestmark = pytest.mark.e2e

HOST = "n.count.test"


def drive(port: int, total: int, sent: list[int], threads: int = 8) -> list[threading.Thread]:
    """`total` GETs to HOST over keep-alive connections from `threads` threads."""
    def run(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(count):
            conn.request("GET", "/echo?q=secret", headers={"Host": HOST})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            sent.append(1)
        conn.close()
    workers = [threading.Thread(target=run, args=(total // threads,), daemon=True)
               for _ in range(threads)]
    for worker in workers:
        worker.start()
    return workers


def test_exactly_n_requests_reported_with_the_consumer_killed_twice(
        proxy, backend, redis_server, redis_client, tmp_path):
    total = 2000
    probes = serve_route(redis_client, proxy.port, HOST, backend.url)
    admin = TokenStore(redis_client).issue(name="admin", scope="admin", owner="root")[1]
    web, url = start_web(redis_server.url, tmp_path)
    procs = {"web": web}
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin}"

    def reported() -> int:
        body = session.get(f"{url}/api/v1/orchestrator/metrics",
                           params={"window": "total", "host": HOST}, timeout=10).json()
        return body["requests"] - probes  # the route's probes before the N requests

    try:
        sent: list[int] = []
        drivers = drive(proxy.port, total, sent)
        for run in range(3):
            procs["consumer"] = start_consumer(redis_server.url, tmp_path / f"consumer-{run}.log")
            if run < 2:  # SIGKILL it once another third of the requests is reported
                wait_until(lambda run=run: reported() >= total * (run + 1) // 3, timeout=60,
                           interval=0.02, what="consumer progress")
                procs["consumer"].kill()
        for driver in drivers:
            driver.join(timeout=120)
        assert len(sent) == total
        wait_until(lambda: reported() >= total, timeout=60, what="every request reported")

        metrics = session.get(f"{url}/api/v1/orchestrator/metrics",
                              params={"window": "total", "host": HOST}, timeout=10).json()
        assert metrics["requests"] == probes + total and metrics["errors"] == 0
        assert metrics["routers"][0]["codes"] == {"200": probes + total}
        assert metrics["routers"][0]["methods"] == {"GET": probes + total}
        hour = session.get(f"{url}/api/v1/orchestrator/metrics",
                           params={"window": "1h", "host": HOST}, timeout=10).json()
        assert hour["requests"] == probes + total

        exposition = session.get(f"{url}/metrics", timeout=10)
        assert exposition.status_code == 200
        samples = parse_exposition(exposition.text)
        counted = sum(v for labels, v in samples["berth_router_requests_total"]
                      if labels["router"] == HOST)
        assert counted == probes + total
        assert [v for labels, v in samples["berth_router_request_duration_seconds_count"]
                if labels["router"] == HOST] == [probes + total]
        assert "secret" not in exposition.text and "/echo" not in exposition.text
    except BaseException:
        for name, proc in procs.items():
            print(f"----- {name} -----\n{proc.output()[-5000:]}")
        raise
    finally:
        for proc in procs.values():
            proc.stop()
