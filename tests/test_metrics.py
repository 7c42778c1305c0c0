"""Request metrics: histogram accuracy, batch aggregation and rolling windows, on a real Redis."""

from __future__ import annotations

import math
import random
import time

import pytest

from app import redis as keys
from app.events import Event
from app.metrics.aggregate import ROUTER, SERVICE, UNMATCHED, aggregate, apply, count_events
from app.metrics.histogram import (
    EXACT_BELOW,
    PROMETHEUS_BOUNDS_S,
    fine_bounds,
    fine_bucket,
    fine_value,
    prometheus_bucket,
    quantiles,
)
from app.metrics.query import MetricsQuery
from app.models import Route
from app.stores import RouteStore
from workers.consumers.routes import RouteHosts

NOW = time.time() // 60 * 60 + 20.0  # a fixed clock, 20 s into a minute (see fresh_clock)
MINUTE = int(NOW // 60)


@pytest.fixture(autouse=True)
def fresh_clock():
    """Set the fixed clock near real time for each test: minute keys expire by Redis's real
    clock, so a clock taken at import would be minutes stale late in a long run."""
    global NOW, MINUTE
    NOW = time.time() // 60 * 60 + 20.0
    MINUTE = int(NOW // 60)


def request(host="shop.test", status=200, duration_ms=10.0, method="GET", ts_s=None,
            upstream="http://127.0.0.1:9001", route="rt_1", kind="proxy_request_completed",
            bytes_in=10, bytes_out=100) -> Event:
    ts_s = NOW if ts_s is None else ts_s
    return Event(type=kind, source="proxy", subject=host, ts_ms=int(ts_s * 1000),
                 data={"host": host, "route_id": route, "method": method, "path": "/x",
                       "status": status, "duration_ms": duration_ms, "bytes_in": bytes_in,
                       "bytes_out": bytes_out, "upstream": upstream, "client_ip": "10.0.0.1",
                       "error": ""})


def exact_quantile(values: list[float], q: float) -> float:
    """Nearest rank: the ceil(q * n)-th smallest value."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(round(q * len(ordered), 9))) - 1]


def store(client, events, now=None, batch=500):
    now = NOW if now is None else now
    for start in range(0, len(events), batch):
        pipe = client.pipeline(transaction=True)
        chunk = events[start:start + batch]
        delta = aggregate(chunk, now_s=now)
        count_events(chunk, "request", delta)
        apply(delta, pipe)
        pipe.execute()


# -- histogram --------------------------------------------------------------------------------


def test_fine_buckets_tile_the_line_and_stay_within_one_percent():
    previous_upper = 0
    for index in range(fine_bucket(3_600_000_000) + 1):  # up to one hour
        lower, upper = fine_bounds(index)
        assert lower == previous_upper  # no gaps, no overlaps
        previous_upper = upper
        assert fine_bucket(lower) == index and fine_bucket(upper - 1) == index
        if lower >= EXACT_BELOW:
            assert (upper - lower) / 2 / lower <= 1 / 128  # midpoint error bound
    rng = random.Random(3)
    for _ in range(20_000):
        us = int(rng.lognormvariate(9, 3))
        assert abs(fine_value(fine_bucket(us)) - us) <= max(0.5, us / 128)


def test_prometheus_buckets_use_upper_inclusive_bounds():
    assert prometheus_bucket(0) == 0
    assert prometheus_bucket(5000) == 0  # le="0.005" includes 5 ms exactly
    assert prometheus_bucket(5001) == 1
    assert prometheus_bucket(10_000_001) == len(PROMETHEUS_BOUNDS_S)  # +Inf


@pytest.mark.parametrize("distribution", ["lognormal", "uniform", "bimodal"])
def test_quantiles_within_one_percent_of_the_exact_values(distribution):
    rng = random.Random(11)
    if distribution == "lognormal":
        values_ms = [rng.lognormvariate(3.0, 1.2) for _ in range(50_000)]
    elif distribution == "uniform":
        values_ms = [rng.uniform(0.2, 2000) for _ in range(50_000)]
    else:
        values_ms = [rng.gauss(5, 0.5) if rng.random() < 0.9 else rng.gauss(800, 50)
                     for _ in range(50_000)]
    values_us = [max(0, int(v * 1000 + 0.5)) for v in values_ms]
    counts: dict[int, int] = {}
    for us in values_us:
        counts[fine_bucket(us)] = counts.get(fine_bucket(us), 0) + 1
    estimated = quantiles(counts, (0.5, 0.95, 0.99))
    for q, value in estimated.items():
        exact = exact_quantile(values_us, q)
        assert abs(value - exact) / exact < 0.01, (q, value, exact)


def test_quantiles_of_nothing_and_of_one_value():
    assert quantiles({}, (0.5,)) == {0.5: None}
    assert quantiles({fine_bucket(42): 1}, (0.5, 0.99)) == {0.5: 42.0, 0.99: 42.0}


# -- aggregation and windows, through Redis ----------------------------------------------------


def test_percentiles_through_redis_match_the_exact_ones(redis_client):
    rng = random.Random(5)
    durations = [round(rng.lognormvariate(2.5, 1.0), 3) for _ in range(20_000)]
    store(redis_client, [request(duration_ms=d) for d in durations])
    query = MetricsQuery(redis_client, clock=lambda: NOW)
    values_us = [int(d * 1000 + 0.5) for d in durations]
    for window in ("1m", "total"):
        summary = query.summaries(ROUTER, window)[0]
        assert summary["requests"] == 20_000
        for q in (0.5, 0.95, 0.99):
            exact_ms = exact_quantile(values_us, q) / 1000
            got = summary["latency_ms"][f"p{round(q * 100)}"]
            assert abs(got - exact_ms) / exact_ms < 0.01, (window, q, got, exact_ms)
        assert summary["latency_ms"]["mean"] == pytest.approx(
            sum(values_us) / len(values_us) / 1000, abs=1e-3)


def test_counts_by_router_service_status_and_method(redis_client):
    events = [request(status=200), request(status=200, method="POST"),
              request(status=503, upstream="http://127.0.0.1:9002"),
              request(status=404, route="", host="nobody.test"),
              request(kind="proxy_request_failed", status=0, method="BREW", duration_ms=1500),
              request(host="blog.test", status=301, bytes_in=5, bytes_out=7)]
    store(redis_client, events)
    query = MetricsQuery(redis_client, clock=lambda: NOW)
    routers = {s["name"]: s for s in query.summaries(ROUTER, "total")}
    assert set(routers) == {"shop.test", "blog.test", UNMATCHED}
    shop = routers["shop.test"]
    assert shop["requests"] == 4 and shop["errors"] == 2 and shop["error_rate"] == 0.5
    assert shop["status"] == {"2xx": 2, "5xx": 2}
    assert shop["codes"] == {"200": 2, "502": 1, "503": 1}  # failed without a status: 502
    assert shop["methods"] == {"GET": 2, "OTHER": 1, "POST": 1}
    assert shop["bytes_in"] == 40 and shop["bytes_out"] == 400
    assert routers[UNMATCHED]["codes"] == {"404": 1}
    assert routers["blog.test"]["bytes_out"] == 7
    services = {s["name"]: s["requests"] for s in query.summaries(SERVICE, "total")}
    assert services == {"http://127.0.0.1:9001": 5, "http://127.0.0.1:9002": 1}
    assert redis_client.hgetall(keys.METRICS_EVENTS) == {
        "request:proxy_request_completed": "5", "request:proxy_request_failed": "1"}


def test_rolling_windows_sum_minute_buckets(redis_client):
    # One request per minute over the last 90 minutes, and one 3 h ago.
    events = [request(ts_s=NOW - 60 * m) for m in range(90)] + [request(ts_s=NOW - 3 * 3600)]
    store(redis_client, events)
    query = MetricsQuery(redis_client, clock=lambda: NOW)
    # W whole minutes and the current one so far (20 s into it).
    requests = {w: query.summaries(ROUTER, w)[0]["requests"] for w in ("1m", "5m", "1h")}
    assert requests == {"1m": 2, "5m": 6, "1h": 61}
    assert query.summaries(ROUTER, "total")[0]["requests"] == 91
    one_minute = query.summaries(ROUTER, "1m")[0]
    assert one_minute["seconds"] == 80.0 and one_minute["rate"] == 0.025
    assert query.summaries(ROUTER, "5m")[0]["seconds"] == 320.0


def test_a_window_does_not_empty_when_a_minute_turns(redis_client):
    # 30 requests in the 10 s before a minute turns, then 2 s into the next minute.
    turn = NOW // 60 * 60 + 60
    store(redis_client, [request(ts_s=turn - 10 + i / 3) for i in range(30)])
    before = MetricsQuery(redis_client, clock=lambda: turn - 0.5).summaries(ROUTER, "1m")[0]
    after = MetricsQuery(redis_client, clock=lambda: turn + 2).summaries(ROUTER, "1m")[0]
    assert before["requests"] == after["requests"] == 30
    assert after["seconds"] == 62.0 and after["rate"] == round(30 / 62, 4)
    # Minute keys expire after the longest window; the 3 h old request is only in the total.
    expires_at = (MINUTE + 1) * 60 + 3600 + 120  # the end of the minute plus 1 h 2 min
    ttl = redis_client.ttl(keys.metrics_minute(ROUTER, "shop.test", MINUTE))
    assert abs(ttl - (expires_at - time.time())) <= 2
    assert not redis_client.exists(keys.metrics_minute(ROUTER, "shop.test", MINUTE - 180))
    assert abs(redis_client.ttl(keys.metrics_latency_minute(ROUTER, "shop.test", MINUTE))
               - (expires_at - time.time())) <= 2
    assert redis_client.ttl(keys.metrics_total(ROUTER, "shop.test")) == -1


def test_a_router_quiet_for_a_window_is_not_listed_in_it(redis_client):
    store(redis_client, [request(host="old.test", ts_s=NOW - 600), request(host="new.test")])
    query = MetricsQuery(redis_client, clock=lambda: NOW)
    assert [s["name"] for s in query.summaries(ROUTER, "5m")] == ["new.test"]
    assert [s["name"] for s in query.summaries(ROUTER, "1h")] == ["new.test", "old.test"]


def test_batches_of_any_size_give_the_same_aggregates(redis_client):
    rng = random.Random(9)
    events = [request(host=rng.choice(("a.test", "b.test")), status=rng.choice((200, 500)),
                      duration_ms=rng.uniform(0, 300), ts_s=NOW - rng.randrange(300))
              for _ in range(3000)]
    store(redis_client, events, batch=3000)
    whole = {k: redis_client.hgetall(k) for k in sorted(redis_client.scan_iter("berth:metrics:*"))
             if redis_client.type(k) == "hash"}
    redis_client.flushdb()
    store(redis_client, events, batch=7)
    pieces = {k: redis_client.hgetall(k) for k in sorted(redis_client.scan_iter("berth:metrics:*"))
              if redis_client.type(k) == "hash"}
    assert whole == pieces


def test_requests_count_under_their_routes_host_pattern(redis_client):
    store = RouteStore(redis_client)
    wild = store.create(store.new("alice", Route.clean({"host": "*.wild.test",
                                                        "targets": ["http://127.0.0.1:9"]})))
    ticks = [0.0]
    router_of = RouteHosts(store, clock=lambda: ticks[0])
    events = [request(host=f"r{i}.wild.test", route=wild.id) for i in range(50)]
    pipe = redis_client.pipeline(transaction=True)
    apply(aggregate(events, now_s=NOW, router_of=router_of), pipe)
    pipe.execute()
    query = MetricsQuery(redis_client, clock=lambda: NOW)
    assert [(s["name"], s["requests"]) for s in query.summaries(ROUTER, "total")] == [
        ("*.wild.test", 50)]  # not 50 routers: clients choose subdomains

    # A route created since: its id is unknown, looked up again once the refresh pace allows.
    exact = store.create(store.new("alice", Route.clean({"host": "new.test",
                                                         "targets": ["http://127.0.0.1:9"]})))
    assert router_of(exact.id, "NEW.test") == "NEW.test"  # within the same second: as sent
    ticks[0] += 1.0
    assert router_of(exact.id, "NEW.test") == "new.test"
