"""The observability API in-process (falcon TestClient) over a real Redis: metrics, series,
alerts, alert rules, the Prometheus exposition, the overview and the dashboard's files."""

from __future__ import annotations

import re
import time

import pytest

from app import redis as keys
from app.alerts.rules import merge
from app.alerts.state import Signal, apply_signals
from app.events import Event
from app.metrics.aggregate import aggregate, apply, count_events
from app.models import Certificate, Route, Service
from app.stores import CertificateStore, RouteStore, ServiceStore
from app.stores.health import Health, HealthStore
from tests.support.api import Api
from tests.support.prometheus import parse_exposition

NOW = time.time() // 60 * 60 + 30


@pytest.fixture
def make_api(redis_client):
    made = []

    def make(settings) -> Api:
        helper = Api(settings, redis_client, clock=lambda: NOW)
        made.append(helper)
        return helper

    yield make
    for helper in made:
        helper.close()


@pytest.fixture
def api(settings, make_api):
    return make_api(settings)


def traffic(client, host="shop.test", count=10, status=200, upstream="http://127.0.0.1:9001",
            duration_ms=20.0, ts=NOW):
    events = [Event(type="proxy_request_completed", source="proxy", subject=host,
                    ts_ms=int(ts * 1000),
                    data={"host": host, "route_id": "rt_1", "method": "GET", "path": "/p",
                          "status": status, "duration_ms": duration_ms, "bytes_in": 1,
                          "bytes_out": 2, "upstream": upstream, "client_ip": "10.1.2.3"})
              for _ in range(count)]
    pipe = client.pipeline(transaction=True)
    apply(count_events(events, "request", aggregate(events, now_s=NOW)), pipe)
    pipe.execute()


def add_route(client, host: str, owner: str, target: str) -> None:
    store = RouteStore(client)
    store.create(store.new(owner, Route.clean({"host": host, "targets": [target]})))


def fire(client, rule="service_failed", subject="web") -> None:
    apply_signals(client, [Signal(merge().rules[rule], subject, True, message="down")],
                  int(NOW * 1000))


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_per_router_and_service(api, redis_client):
    traffic(redis_client, "shop.test", 30)
    traffic(redis_client, "shop.test", 10, status=502, upstream="http://127.0.0.1:9002")
    traffic(redis_client, "blog.test", 5, ts=NOW - 7200)
    body = api.get("/api/v1/orchestrator/metrics?window=total", api.admin).json
    assert body["requests"] == 45 and body["errors"] == 10
    shop = next(r for r in body["routers"] if r["name"] == "shop.test")
    assert shop["status"] == {"2xx": 30, "5xx": 10} and shop["error_rate"] == 0.25
    assert shop["latency_ms"]["p99"] == pytest.approx(20, rel=0.01)
    assert {s["name"]: s["requests"] for s in body["services"]} == {
        "http://127.0.0.1:9001": 35, "http://127.0.0.1:9002": 10}

    five = api.get("/api/v1/orchestrator/metrics", api.admin).json  # default: 5m
    assert five["window"] == "5m" and five["requests"] == 40 and five["seconds"] == 330.0
    assert [r["name"] for r in five["routers"]] == ["shop.test"]
    assert five["routers"][0]["rate"] == pytest.approx(40 / 330, abs=1e-4)

    one = api.get("/api/v1/orchestrator/metrics?window=total&host=blog.test", api.admin).json
    assert [r["name"] for r in one["routers"]] == ["blog.test"] and one["requests"] == 5


def test_metrics_input_and_visibility(api, redis_client):
    traffic(redis_client, "app.alice.test", 3, upstream="http://127.0.0.1:7001")
    traffic(redis_client, "bob.test", 4, upstream="http://127.0.0.1:7002")
    add_route(redis_client, "*.alice.test", "alice", "http://127.0.0.1:7001")
    add_route(redis_client, "bob.test", "bob", "http://127.0.0.1:7002")
    alice = api.token("user", "alice")
    body = api.get("/api/v1/orchestrator/metrics?window=1h", alice).json
    assert [r["name"] for r in body["routers"]] == ["app.alice.test"]
    assert [s["name"] for s in body["services"]] == ["http://127.0.0.1:7001"]
    assert body["requests"] == 3
    assert api.get("/api/v1/orchestrator/metrics").status_code == 401
    bad = api.get("/api/v1/orchestrator/metrics?window=2m", api.admin)
    assert bad.status_code == 400 and bad.json["field"] == "window"
    assert api.get("/api/v1/orchestrator/metrics?path=/x", api.admin).status_code == 400


def test_series_per_minute(api, redis_client):
    traffic(redis_client, "shop.test", 6, ts=NOW - 120)
    traffic(redis_client, "shop.test", 3, status=500, duration_ms=300, ts=NOW)
    body = api.get("/api/v1/orchestrator/metrics/series?minutes=5", api.admin).json
    points = body["points"]
    assert len(points) == 5 and points[-1]["ts"] == NOW // 60 * 60
    assert [p["requests"] for p in points] == [0, 0, 6, 0, 3]
    assert points[-1]["errors"] == 3 and points[-1]["rate"] == 0.1  # 3 in 30 s
    assert points[-1]["p99_ms"] == pytest.approx(300, rel=0.01) and points[0]["p99_ms"] is None


# -- alerts --------------------------------------------------------------------------------------


def test_alerts_active_history_and_acknowledge(api, redis_client):
    fire(redis_client)
    active = api.get("/api/v1/orchestrator/alerts", api.admin).json
    assert active["state"] == "active"
    [alert] = active["items"]
    assert alert["rule"] == "service_failed" and alert["subject"] == "web"
    assert alert["fired_at"] == int(NOW * 1000) and alert["acknowledged_at"] is None

    acked = api.post(f"/api/v1/orchestrator/alerts/{alert['id']}/ack", api.admin)
    assert acked.status_code == 200 and acked.json["acknowledged_at"] is not None
    assert acked.json["acknowledged_by"].startswith("tok_")
    assert api.get("/api/v1/orchestrator/alerts?state=all", api.admin).json["items"][0][
        "acknowledged_at"] is not None
    assert api.post("/api/v1/orchestrator/alerts/al_nope/ack", api.admin).status_code == 404
    assert api.post("/api/v1/orchestrator/alerts/a%20b/ack", api.admin).status_code == 400
    user = api.token("user", "alice")
    assert api.get("/api/v1/orchestrator/alerts", user).status_code == 403
    assert api.post(f"/api/v1/orchestrator/alerts/{alert['id']}/ack", user).status_code == 403


def test_alert_rules_read_and_replace(api):
    body = api.get("/api/v1/orchestrator/alert-rules", api.admin).json
    assert body["effective"]["rules"]["error_rate"]["threshold"] == 0.05
    assert body["overrides"] == {} and body["settings"] == {}
    changed = api.client.simulate_put(
        "/api/v1/orchestrator/alert-rules", headers={"Authorization": f"Bearer {api.admin}"},
        json={"rules": {"error_rate": {"threshold": 0.2, "window": "1m"}},
              "webhooks": ["https://hooks.example.com/x"]})
    assert changed.status_code == 200
    assert changed.json["effective"]["rules"]["error_rate"]["threshold"] == 0.2
    assert changed.json["effective"]["webhooks"] == ["https://hooks.example.com/x"]
    bad = api.client.simulate_put(
        "/api/v1/orchestrator/alert-rules", headers={"Authorization": f"Bearer {api.admin}"},
        json={"rules": {"error_rate": {"threshold": "high"}}})
    assert bad.status_code == 400 and bad.json["field"] == "rules.error_rate.threshold"
    user = api.token("user", "alice")
    assert api.get("/api/v1/orchestrator/alert-rules", user).status_code == 403


# -- /metrics ----------------------------------------------------------------------------------

def test_prometheus_exposition(api, redis_client):
    traffic(redis_client, "shop.test", 7, duration_ms=3)
    traffic(redis_client, "shop.test", 2, status=503, duration_ms=700)
    traffic(redis_client, 'we"ird.test', 1)
    CertificateStore(redis_client).create(Certificate(
        id="site", domains=("shop.test",), owner="alice", status="active",
        not_after=NOW + 20 * 86400, renew_after=NOW + 10 * 86400))
    redis_client.incrby(keys.EVENTS_DROPPED, 4)
    redis_client.xgroup_create(keys.stream("service"), "consumer", id="0", mkstream=True)
    fire(redis_client)

    assert api.get("/metrics").status_code == 401
    assert api.get("/metrics", api.token("user", "alice")).status_code == 403
    response = api.get("/metrics", api.admin)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse_exposition(response.text)

    requests = {(s["router"], s["code"], s["method"]): v
                for s, v in samples["berth_router_requests_total"]}
    assert requests[("shop.test", "200", "GET")] == 7
    assert requests[("shop.test", "503", "GET")] == 2
    assert requests[('we\\"ird.test', "200", "GET")] == 1  # escaped, not broken
    assert sum(v for _s, v in samples["berth_service_requests_total"]) == 10
    buckets = [(s["le"], v) for s, v in samples["berth_router_request_duration_seconds_bucket"]
               if s["router"] == "shop.test"]
    assert buckets[0] == ("0.005", 7) and buckets[-1] == ("+Inf", 9)
    assert dict(buckets)["0.5"] == 7 and dict(buckets)["1.0"] == 9
    assert [v for _le, v in buckets] == sorted(v for _le, v in buckets)  # cumulative
    count = dict((s["router"], v) for s, v in
                 samples["berth_router_request_duration_seconds_count"])
    assert count["shop.test"] == 9
    total = dict((s["router"], v) for s, v in samples["berth_router_request_duration_seconds_sum"])
    assert total["shop.test"] == pytest.approx(7 * 0.003 + 2 * 0.7)
    assert samples["berth_certificate_not_after_seconds"] == [({"name": "site"},
                                                               NOW + 20 * 86400)]
    assert samples["berth_events_dropped_total"] == [({}, 4.0)]
    assert ({"stream": keys.stream("service"), "group": "consumer"}, 0.0) in samples[
        "berth_stream_consumer_lag_seconds"]
    assert samples["berth_alerts_active"] == [({"rule": "service_failed",
                                                "severity": "critical"}, 1.0)]
    queues = {(s["queue"], s["state"]) for s, _v in samples["berth_dramatiq_queue_messages"]}
    assert ("alerts", "ready") in queues and ("alerts", "dead") in queues
    for name, rows in samples.items():  # bounded labels only
        for labels, _v in rows:
            assert not {"path", "client", "client_ip", "trace_id"} & set(labels), name


def test_prometheus_without_a_token_when_public(settings, redis_client, make_api):
    api = make_api(settings.__class__.from_env({"BERTH_METRICS_PUBLIC": "true"},
                                               redis_url=settings.redis_url))
    traffic(redis_client, "shop.test", 1)
    response = api.get("/metrics")
    assert response.status_code == 200
    assert "berth_router_requests_total" in response.text


# -- overview and dashboard ---------------------------------------------------------------------


def test_overview_for_the_dashboard(api, redis_client):
    traffic(redis_client, "shop.test", 12, status=500)
    CertificateStore(redis_client).create(Certificate(
        id="site", domains=("shop.test",), owner="alice", status="active",
        not_after=NOW + 10 * 86400, renew_after=NOW + 3 * 86400))
    ServiceStore(redis_client).create(Service(id="web", image="busybox", port=80,
                                              owner="alice", status="running"))
    HealthStore(redis_client).record("web", {"web-1-0": Health(True, "", NOW),
                                             "web-1-1": Health(False, "refused", NOW)})
    fire(redis_client)
    body = api.get("/api/v1/orchestrator/overview", api.admin).json
    assert body["window"] == "1m" and body["totals"] == {"requests": 12, "errors": 12,
                                                         "rate": round(12 / 90, 4)}
    assert body["routers"][0]["error_rate"] == 1.0
    assert body["certificates"] == [{"name": "site", "domains": ["shop.test"],
                                     "status": "active", "not_after": NOW + 10 * 86400,
                                     "days_left": 10.0, "renew_after": NOW + 3 * 86400,
                                     "last_error": ""}]
    assert body["services"][0]["healthy"] == 1 and len(body["services"][0]["containers"]) == 2
    assert [a["rule"] for a in body["alerts"]] == ["service_failed"]
    mine = api.get("/api/v1/orchestrator/overview", api.token("user", "alice")).json
    assert mine["alerts"] is None and [c["name"] for c in mine["certificates"]] == ["site"]
    assert mine["routers"] == []  # alice has no route for shop.test
    assert api.get("/api/v1/orchestrator/overview", api.token("user", "bob")).json[
        "certificates"] == []


def test_dashboard_files_are_served_without_a_token(api):
    page = api.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/dashboard/app.js"' in page.text
    assert api.get("/dashboard/app.js").headers["content-type"].startswith("text/javascript")
    assert api.get("/dashboard/app.css").status_code == 200
    assert api.get("/dashboard/secret.py").status_code == 404
    assert api.get("/dashboard/..%2Fapi%2Fapp.py").status_code == 404
    for url in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert url.startswith("/dashboard/") or url == "data:,", url  # nothing external
