"""The dashboard in headless Chromium (Debian's, over the DevTools protocol), against the real
web, consumer and proxy processes: it loads without console errors, shows what real traffic
produced, updates live, filters the event tail by trace id; a screenshot is saved."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from pathlib import Path

import pytest

from app.events import Event
from app.models import Certificate, Service
from app.redis import stream
from app.stores import CertificateStore, ServiceStore
from app.stores.health import Health, HealthStore
from app.stores.tokens import TokenStore
from app.tracing import format_traceparent, new_trace_id
from tests.support.cdp import Browser
from tests.support.observability import serve_route, start_consumer, start_web
from tests.support.procs import ROOT, find_binary

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not (find_binary("chromium") or find_binary("chromium-browser")),
                                 reason="chromium is not installed (scripts/bootstrap.sh)")]

HOST = "shop.dash.test"
RESULTS = ROOT / "bench" / "results"


def send(port: int, count: int, path: str = "/echo", trace: str | None = None) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Host": HOST}
    if trace:
        headers["traceparent"] = format_traceparent(trace)
    for _ in range(count):
        conn.request("GET", path, headers=headers)
        conn.getresponse().read()
    conn.close()


def rows(page, table: str) -> list[list[str]]:
    return page.evaluate(
        f"[...document.querySelectorAll('#{table} tbody tr')]"
        ".map(tr => [...tr.cells].map(td => td.textContent))")


# The requests the routes table shows for HOST (0 before its row appears).
SHOWN = (f"(() => {{ const tr = document.querySelector('#routes tr[data-host=\"{HOST}\"]');"
         " return tr ? Number(tr.cells[2].textContent) : 0; })()")


def test_dashboard_shows_live_data_from_real_traffic(proxy, backend, redis_server,
                                                     redis_client, tmp_path):
    probes = serve_route(redis_client, proxy.port, HOST, backend.url)
    now = time.time()
    CertificateStore(redis_client).create(Certificate(
        id="shop", domains=(HOST,), owner="root", status="active",
        not_after=now + 40 * 86400, renew_after=now + 10 * 86400))
    ServiceStore(redis_client).create(Service(id="web", image="busybox", port=80, owner="root",
                                              status="running"))
    HealthStore(redis_client).record("web", {"web-1-0": Health(True, "", now),
                                             "web-1-1": Health(False, "refused", now)})
    admin = TokenStore(redis_client).issue(name="admin", scope="admin", owner="root")[1]
    web, url = start_web(redis_server.url, tmp_path)
    consumer = start_consumer(redis_server.url, tmp_path / "consumer.log")
    procs = {"web": web, "consumer": consumer}
    try:
        send(proxy.port, 40)
        send(proxy.port, 10, "/status/503")
        redis_client.xadd(stream("service"), Event.create(
            "service_unhealthy", "worker", "web", {"reason": "health check refused"}).to_fields())

        with Browser(tmp_path / "chromium") as browser:
            page = browser.new_page()
            page.navigate(f"{url}/dashboard")
            page.wait_for("!document.getElementById('login').hidden")
            page.evaluate(f"document.getElementById('token').value = {json.dumps(admin)};"
                          "document.getElementById('login-form').requestSubmit()")
            page.wait_for("!document.getElementById('app').hidden")

            # Data from real traffic, the stores and the consumer's alert.
            page.wait_for(f"{SHOWN} >= {probes + 50}")
            page.wait_for("document.querySelectorAll('#alerts tr[data-alert]').length === 2")
            shown = next(r for r in rows(page, "routes") if r[0] == HOST)
            assert shown[0] == HOST and shown[2] == str(probes + 50)
            assert shown[3] == f"{10 / (probes + 50):.1%}"
            assert float(shown[5]) > 0  # p99 ms
            assert rows(page, "certificates")[0][:2] == ["shop", "active"]
            assert 39 < float(rows(page, "certificates")[0][2]) <= 40
            assert rows(page, "services")[0] == ["web", "running", "1/2 healthy"]
            alerts = {row[1]: row for row in rows(page, "alerts")}
            assert alerts["service_failed"][:3] == ["critical", "service_failed", "web"]
            assert "health check refused" in alerts["service_failed"][3]
            assert alerts["error_rate"][2] == HOST
            page.wait_for("document.getElementById('live').textContent === 'live'")
            page.wait_for("document.querySelectorAll('#tail li').length > 0")
            painted = ("(() => { const c = document.getElementById('chart-rate');"
                       " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                       " for (let i = 3; i < d.length; i += 4) if (d[i]) return true;"
                       " return false; })()")
            page.wait_for(painted)

            # Live: more traffic shows up without a reload, in the table and the tail.
            trace = new_trace_id()
            send(proxy.port, 5)
            send(proxy.port, 1, "/echo/traced", trace=trace)
            page.wait_for(f"{SHOWN} >= {probes + 56}")
            page.wait_for(f"document.querySelector('#tail li[data-trace=\"{trace}\"]')")

            # Filtered by trace id: that request only, and it stays live.
            page.evaluate(f"document.getElementById('trace').value = '{trace}';"
                          "document.getElementById('tail-form').requestSubmit()")
            page.wait_for(f"document.getElementById('tail-state').textContent === "
                          f"'trace {trace}'")
            page.wait_for(f"document.querySelectorAll('#tail li[data-trace=\"{trace}\"]')"
                          ".length === 1")
            send(proxy.port, 3)
            send(proxy.port, 1, "/echo/again", trace=trace)
            page.wait_for(f"document.querySelectorAll('#tail li[data-trace=\"{trace}\"]')"
                          ".length === 2")
            traces = page.evaluate("[...document.querySelectorAll('#tail li')]"
                                   ".map(li => li.dataset.trace)")
            assert set(traces) == {trace}

            # Acknowledge from the page.
            page.evaluate("document.querySelector('#alerts tr[data-alert] button').click()")
            page.wait_for("document.querySelector('#alerts tr[data-alert] td:last-child')"
                          ".textContent === 'acknowledged'")

            shot = page.screenshot(tmp_path / "dashboard.png")
            errors = page.errors()
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, RESULTS / "dashboard.png")
        assert shot.stat().st_size > 10_000
        assert errors == []
        print(f"screenshot: {shot} and {Path('bench/results/dashboard.png')}")
    except BaseException:
        for name, proc in procs.items():
            print(f"----- {name} -----\n{proc.output()[-4000:]}")
        raise
    finally:
        for proc in procs.values():
            proc.stop()
