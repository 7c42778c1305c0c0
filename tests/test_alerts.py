"""Alert rules against a real Redis: each fires once, stays quiet during its cooldown, resolves.

Every step uses a new Evaluator or Reader, as a restarted consumer would: all state is in Redis.
The clock is injected; the cooldowns are minutes long and nothing here sleeps.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from app import redis as keys
from app.alerts.rules import RuleStore, merge
from app.alerts.state import AlertStore, open_states
from app.errors import ValidationError
from app.events import Event, Reader
from app.metrics.aggregate import aggregate, apply
from app.metrics.query import MetricsQuery
from workers.consumers.alerts import Evaluator
from workers.consumers.handlers import lifecycle_handler

COOLDOWN_S = 600
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class Clock:
    def __init__(self):
        self.now = time.time() // 60 * 60 + 5

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def configure(redis_client, settings):
    def save(rule: str, **fields):
        RuleStore(redis_client, settings).save(
            {"rules": {rule: {"cooldown_s": COOLDOWN_S, **fields}}})
    return save


def announced(client, rule: str) -> Counter:
    """alert_fired / alert_resolved events of one rule on the alert stream, by (type, subject)."""
    counts = Counter()
    for entry in client.xrange(keys.stream("alert")):
        event = Event.from_entry(*entry)
        if event.type in ("alert_fired", "alert_resolved") and event.data["rule"] == rule:
            counts[(event.type, event.subject)] += 1
    return counts


def evaluate(client, settings, clock) -> None:
    Evaluator(client, RuleStore(client, settings), MetricsQuery(client, clock), clock).evaluate()


def deliver(client, settings, clock, domain: str, *events: Event) -> None:
    """Lifecycle events through a consumer-group Reader with the consumer's handler."""
    for event in events:
        client.xadd(keys.stream(domain), event.to_fields())
    handler = lifecycle_handler(domain, client, RuleStore(client, settings).effective, clock)
    reader = Reader(client, keys.stream(domain), "consumer", "test", handler, block_ms=10)
    while reader.run_once():
        pass


def state_of(client, rule: str, subject: str) -> str:
    return client.hget(keys.alert_state(rule, subject), "state") or "ok"


def traffic(client, clock, host: str, count: int, errors: int = 0, duration_ms: float = 5.0):
    events = [Event(type="proxy_request_completed", source="proxy", subject=host,
                    ts_ms=int(clock() * 1000),
                    data={"host": host, "route_id": "rt_1", "method": "GET",
                          "status": 500 if i < errors else 200, "duration_ms": duration_ms,
                          "upstream": "http://127.0.0.1:9"}) for i in range(count)]
    pipe = client.pipeline(transaction=True)
    apply(aggregate(events, now_s=clock()), pipe)
    pipe.execute()


def lifecycle(kind: str, subject: str, **data) -> Event:
    return Event.create(kind, "worker", subject, data, trace_id=TRACE)


# -- periodic rules -----------------------------------------------------------------------------


def test_error_rate_per_host(redis_client, settings, clock, configure):
    configure("error_rate", window="1m", threshold=0.2, min_requests=10)
    fired, resolved = ("alert_fired", "shop.test"), ("alert_resolved", "shop.test")

    traffic(redis_client, clock, "shop.test", 20, errors=10)
    traffic(redis_client, clock, "fine.test", 20, errors=1)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "error_rate") == {fired: 1}
    active = AlertStore(redis_client).active()
    assert [(a["rule"], a["subject"], a["severity"]) for a in active] == [
        ("error_rate", "shop.test", "critical")]
    assert active[0]["details"]["value"] == 0.5 and "50.0%" in active[0]["message"]

    clock.advance(20)
    traffic(redis_client, clock, "shop.test", 10, errors=10)
    evaluate(redis_client, settings, clock)  # still failing: fires once
    assert announced(redis_client, "error_rate") == {fired: 1}

    clock.advance(120)  # two minute turns without requests: the 1m window is clear
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "error_rate") == {fired: 1, resolved: 1}
    assert AlertStore(redis_client).active() == []

    traffic(redis_client, clock, "shop.test", 20, errors=20)
    evaluate(redis_client, settings, clock)  # failing again within the cooldown: quiet
    assert announced(redis_client, "error_rate") == {fired: 1, resolved: 1}
    assert state_of(redis_client, "error_rate", "shop.test") == "pending"

    clock.advance(COOLDOWN_S)
    traffic(redis_client, clock, "shop.test", 20, errors=20)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "error_rate") == {fired: 2, resolved: 1}
    history = AlertStore(redis_client).history()
    assert [h["state"] for h in history] == ["firing", "resolved"]


def test_latency_p99_per_host(redis_client, settings, clock, configure):
    configure("latency_p99", window="5m", threshold_ms=500, min_requests=10)
    fired, resolved = ("alert_fired", "slow.test"), ("alert_resolved", "slow.test")

    traffic(redis_client, clock, "slow.test", 95, duration_ms=20)
    traffic(redis_client, clock, "slow.test", 5, duration_ms=900)  # p99 is 900 ms
    traffic(redis_client, clock, "quick.test", 100, duration_ms=20)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "latency_p99") == {fired: 1}
    assert AlertStore(redis_client).active()[0]["details"]["value_ms"] == pytest.approx(
        900, rel=0.01)

    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "latency_p99") == {fired: 1}

    clock.advance(360)  # the slow minute has left the 5m window
    traffic(redis_client, clock, "slow.test", 100, duration_ms=20)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "latency_p99") == {fired: 1, resolved: 1}

    traffic(redis_client, clock, "slow.test", 100, duration_ms=900)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "latency_p99") == {fired: 1, resolved: 1}

    clock.advance(COOLDOWN_S)
    traffic(redis_client, clock, "slow.test", 100, duration_ms=900)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "latency_p99") == {fired: 2, resolved: 1}


def test_consumer_lag(redis_client, settings, clock, configure):
    configure("consumer_lag", threshold_s=60)
    stream = keys.stream("route")
    subject = f"slow@{stream}"
    fired, resolved = ("alert_fired", subject), ("alert_resolved", subject)
    old_ms = int(time.time() * 1000) - 600_000
    redis_client.xgroup_create(stream, "slow", id="0", mkstream=True)
    redis_client.xadd(stream, {"type": "x"}, id=f"{old_ms}-0")  # 10 minutes unread

    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "consumer_lag") == {fired: 1}
    assert AlertStore(redis_client).active()[0]["details"]["value_s"] >= 600
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "consumer_lag") == {fired: 1}

    redis_client.xreadgroup("slow", "c", {stream: ">"})  # caught up
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "consumer_lag") == {fired: 1, resolved: 1}

    redis_client.xadd(stream, {"type": "x"}, id=f"{old_ms + 1000}-0")
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "consumer_lag") == {fired: 1, resolved: 1}
    assert state_of(redis_client, "consumer_lag", subject) == "pending"

    clock.advance(COOLDOWN_S)
    evaluate(redis_client, settings, clock)  # still behind once the cooldown is over
    assert announced(redis_client, "consumer_lag") == {fired: 2, resolved: 1}


def test_events_dropped_by_a_publisher(redis_client, settings, clock, configure):
    configure("events_dropped", window="1m")
    fired, resolved = ("alert_fired", "publishers"), ("alert_resolved", "publishers")

    redis_client.incrby(keys.EVENTS_DROPPED, 40)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "events_dropped") == {fired: 1}
    assert AlertStore(redis_client).active()[0]["details"] == {"dropped": 40, "total": 40}

    clock.advance(30)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "events_dropped") == {fired: 1}

    clock.advance(60)  # a whole window without new drops
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "events_dropped") == {fired: 1, resolved: 1}

    redis_client.incrby(keys.EVENTS_DROPPED, 2)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "events_dropped") == {fired: 1, resolved: 1}

    clock.advance(COOLDOWN_S)
    redis_client.incrby(keys.EVENTS_DROPPED, 2)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "events_dropped") == {fired: 2, resolved: 1}


# -- lifecycle rules ----------------------------------------------------------------------------


def test_certificate_expiring_by_threshold(redis_client, settings, clock, configure):
    configure("certificate_expiring", critical_days=3)
    rule = "certificate_expiring"

    deliver(redis_client, settings, clock, "certificate",
            lifecycle("expiring_soon", "site", threshold_days=14, days_left=13.5))
    assert announced(redis_client, rule) == {("alert_fired", "site@14d"): 1}
    alert = AlertStore(redis_client).active()[0]
    assert alert["severity"] == "warning" and alert["trace_id"] == TRACE
    deliver(redis_client, settings, clock, "certificate",
            lifecycle("expiring_soon", "site", threshold_days=14, days_left=13.4))
    assert announced(redis_client, rule) == {("alert_fired", "site@14d"): 1}

    # The next threshold fires (critical) and supersedes the first: one active per certificate.
    deliver(redis_client, settings, clock, "certificate",
            lifecycle("expiring_soon", "site", threshold_days=3, days_left=2.9))
    assert announced(redis_client, rule) == {("alert_fired", "site@14d"): 1,
                                             ("alert_resolved", "site@14d"): 1,
                                             ("alert_fired", "site@3d"): 1}
    assert [a["severity"] for a in AlertStore(redis_client).active()] == ["critical"]

    deliver(redis_client, settings, clock, "certificate", lifecycle("renewed", "site"))
    assert announced(redis_client, rule)[("alert_resolved", "site@3d")] == 1
    assert AlertStore(redis_client).active() == []

    deliver(redis_client, settings, clock, "certificate",
            lifecycle("expiring_soon", "site", threshold_days=3, days_left=2.0))
    assert announced(redis_client, rule)[("alert_fired", "site@3d")] == 1  # cooldown
    clock.advance(COOLDOWN_S)
    evaluate(redis_client, settings, clock)  # the pending alert fires once the cooldown ends
    assert announced(redis_client, rule)[("alert_fired", "site@3d")] == 2


def test_certificate_renewal_failed(redis_client, settings, clock, configure):
    configure("certificate_renewal_failed")
    rule = "certificate_renewal_failed"
    fired, resolved = ("alert_fired", "site"), ("alert_resolved", "site")

    deliver(redis_client, settings, clock, "certificate",
            lifecycle("renewal_failed", "site", error="urn:acme:error:dns"))
    assert announced(redis_client, rule) == {fired: 1}
    assert "urn:acme:error:dns" in AlertStore(redis_client).active()[0]["message"]
    deliver(redis_client, settings, clock, "certificate", lifecycle("renewal_failed", "site"))
    assert announced(redis_client, rule) == {fired: 1}

    deliver(redis_client, settings, clock, "certificate", lifecycle("renewed", "site"))
    assert announced(redis_client, rule) == {fired: 1, resolved: 1}

    deliver(redis_client, settings, clock, "certificate", lifecycle("generation_failed", "site"))
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, rule) == {fired: 1, resolved: 1}
    clock.advance(COOLDOWN_S)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, rule) == {fired: 2, resolved: 1}


def test_service_failed_or_unhealthy(redis_client, settings, clock, configure):
    configure("service_failed", severity="warning")
    rule = "service_failed"
    fired, resolved = ("alert_fired", "web"), ("alert_resolved", "web")

    deliver(redis_client, settings, clock, "service",
            lifecycle("service_unhealthy", "web", reason="exited with 137"),
            lifecycle("service_failed", "web", error="image not found"))
    assert announced(redis_client, rule) == {fired: 1}
    alert = AlertStore(redis_client).active()[0]
    assert alert["severity"] == "warning" and "exited with 137" in alert["message"]

    deliver(redis_client, settings, clock, "service", lifecycle("service_started", "web"))
    assert announced(redis_client, rule) == {fired: 1, resolved: 1}

    deliver(redis_client, settings, clock, "service", lifecycle("service_failed", "web"))
    assert announced(redis_client, rule) == {fired: 1, resolved: 1}
    deliver(redis_client, settings, clock, "service", lifecycle("service_stopped", "web"))
    clock.advance(COOLDOWN_S)
    evaluate(redis_client, settings, clock)  # it cleared during the cooldown: stays quiet
    assert announced(redis_client, rule) == {fired: 1, resolved: 1}

    deliver(redis_client, settings, clock, "service", lifecycle("service_failed", "web"))
    assert announced(redis_client, rule) == {fired: 2, resolved: 1}


# -- state, configuration ---------------------------------------------------------------------


def test_concurrent_evaluators_fire_once(redis_client, settings, clock, configure):
    configure("events_dropped", window="1m")
    redis_client.incrby(keys.EVENTS_DROPPED, 1)
    evaluators = [Evaluator(redis_client, RuleStore(redis_client, settings),
                            MetricsQuery(redis_client, clock), clock) for _ in range(3)]
    for evaluator in evaluators:
        evaluator.evaluate()
    assert announced(redis_client, "events_dropped") == {("alert_fired", "publishers"): 1}


def test_disabling_a_rule_resolves_its_alerts(redis_client, settings, clock, configure):
    configure("service_failed")
    deliver(redis_client, settings, clock, "service", lifecycle("service_failed", "web"))
    configure("service_failed", enabled=False)
    evaluate(redis_client, settings, clock)
    assert announced(redis_client, "service_failed")[("alert_resolved", "web")] == 1
    assert open_states(redis_client) == []


def test_acknowledge(redis_client, settings, clock, configure):
    configure("service_failed")
    deliver(redis_client, settings, clock, "service", lifecycle("service_failed", "web"))
    alert = AlertStore(redis_client).active()[0]
    acked = AlertStore(redis_client).acknowledge(alert["id"], "tok_1")
    again = AlertStore(redis_client).acknowledge(alert["id"], "tok_2")
    assert acked["acknowledged_by"] == again["acknowledged_by"] == "tok_1"
    assert again["state"] == "firing"
    types = [Event.from_entry(*e).type for e in redis_client.xrange(keys.stream("alert"))]
    assert types.count("alert_acknowledged") == 1


def test_rule_layers_and_validation(redis_client, settings):
    base = settings.__class__.from_env(
        {"BERTH_ALERT_RULES": '{"rules": {"error_rate": {"threshold": 0.3, "window": "1h"}}}',
         "BERTH_ALERT_WEBHOOKS": "https://hooks.example.com/a"}, redis_url=settings.redis_url)
    store = RuleStore(redis_client, base)
    effective = store.effective()
    assert effective.rules["error_rate"]["threshold"] == 0.3
    assert effective.rules["error_rate"]["window"] == "1h"
    assert effective.webhooks == ("https://hooks.example.com/a",)
    store.save({"rules": {"error_rate": {"threshold": 0.1}}, "webhooks": []})
    effective = store.effective()
    assert effective.rules["error_rate"]["threshold"] == 0.1  # the API layer wins
    assert effective.rules["error_rate"]["window"] == "1h"  # the settings layer stays
    assert effective.webhooks == ()
    for bad in ({"rules": {"error_rate": {"threshold": 2}}}, {"rules": {"nope": {}}},
                {"rules": {"consumer_lag": {"window": "5m"}}}, {"webhooks": ["ftp://x"]},
                {"other": 1}, []):
        with pytest.raises(ValidationError):
            store.save(bad)
    assert merge().rules["consumer_lag"]["threshold_s"] == 30
