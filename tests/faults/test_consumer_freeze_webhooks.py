"""Alert consumers frozen (SIGSTOP) mid-batch and taken over: every alert transition reaches
the webhook receiver once. Two real consumers share the groups, a real worker delivers, and a
real HTTP receiver on loopback counts the POSTs of each delivery id (X-Berth-Delivery).

500 services fail and recover: up to 1,000 transitions (alert_fired, alert_resolved). Three
times a consumer is frozen while it holds webhook entries it read and has not acknowledged;
the other claims them (after BERTH_CONSUMER_CLAIM_IDLE_MS) and applies them; the frozen one is then
resumed and finishes its batch, whose commit finds the entries gone and stages nothing.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
import redis

from app import redis as keys
from app.alerts.rules import RuleStore
from app.events import Event
from harness.procs import wait_until
from harness.worker import start_worker
from tests.faults.platform import Processes
from tests.support.observability import start_consumer
from tests.test_alert_webhooks import Receiver

pytestmark = pytest.mark.faults

SERVICES = 500
FREEZES = 3
WEBHOOK_GROUP = "webhooks"


def holding(redis_client) -> dict[str, int]:
    """Webhook entries read and not acknowledged, per consumer name ("<host>:<pid>")."""
    try:
        summary = redis_client.xpending(keys.stream("alert"), WEBHOOK_GROUP)
    except redis.ResponseError:  # no group yet
        return {}
    return {c["name"]: int(c["pending"]) for c in summary.get("consumers") or []}


def transitions(redis_client) -> list[str]:
    return [eid for eid, fields in redis_client.xrange(keys.stream("alert"))
            if fields.get("type") in ("alert_fired", "alert_resolved")]


def drained(redis_client, domain: str, group: str) -> bool:
    """Every entry of the stream read by `group` and acknowledged."""
    try:
        info = next(g for g in redis_client.xinfo_groups(keys.stream(domain))
                    if g["name"] == group)
    except (redis.ResponseError, StopIteration):
        return False
    return info["lag"] == 0 and info["pending"] == 0


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def test_each_alert_transition_is_posted_once_through_consumer_freezes(
        redis_client, redis_server, settings, receiver, tmp_path, figures):
    RuleStore(redis_client, settings).save({"webhooks": [receiver.url("/hook")]})
    env = {"REDIS_URL": redis_server.url, "BERTH_LOG_FORMAT": "text",
           "BERTH_CONSUMER_BATCH": "20", "BERTH_ALERT_WEBHOOK_BACKOFF_MS": "50"}
    frozen_holding = []
    with Processes() as procs:
        procs["worker"] = start_worker(env, tmp_path / "worker.log", threads=8)
        by_name = {}
        for name in ("consumer-a", "consumer-b"):
            procs[name] = start_consumer(redis_server.url, tmp_path / f"{name}.log", env)
            by_name[name] = procs[name]
        pipe = redis_client.pipeline(transaction=False)
        for kind in ("service_failed", "service_started"):
            for i in range(SERVICES):
                pipe.xadd(keys.stream("service"),
                          Event.create(kind, "worker", f"svc-{i}", {"error": "exited"})
                          .to_fields())
        pipe.execute()
        for _ in range(FREEZES):
            # Aim each SIGSTOP at a consumer holding webhook entries it has not acknowledged.
            while True:
                held = wait_until(lambda: {n: c for n, c in holding(redis_client).items() if c},
                                  timeout=60, interval=0.001, what="webhook entries in flight")
                name, proc = next(((n, p) for n, p in by_name.items()
                                   if any(h.endswith(f":{p.pid}") for h in held)), (None, None))
                if proc is None:
                    continue
                proc.signal(signal.SIGSTOP)
                count = next((c for h, c in holding(redis_client).items()
                              if h.endswith(f":{proc.pid}")), 0)
                if count:
                    break
                proc.signal(signal.SIGCONT)  # it acknowledged before the stop: aim again
            frozen_holding.append(count)
            # The other consumer claims what the frozen one holds, then it wakes.
            wait_until(lambda p=proc: not any(h.endswith(f":{p.pid}") and c
                                              for h, c in holding(redis_client).items()),
                       timeout=30, what="the frozen consumer's entries claimed")
            time.sleep(0.5)
            proc.signal(signal.SIGCONT)
        # Every service event applied, then every alert entry: the transitions are all made
        # (fewer than 1,000 when a consumer applied a service's recovery before the other,
        # thawed, applied its failure: consumers of one group do not keep a subject's order).
        wait_until(lambda: drained(redis_client, "service", "consumer"), timeout=120,
                   what="every service event applied")
        wait_until(lambda: drained(redis_client, "alert", WEBHOOK_GROUP), timeout=60,
                   what="every alert entry applied")
        wait_until(lambda: not any(holding(redis_client).values()), timeout=60,
                   what="every webhook entry acknowledged")
        wait_until(lambda: redis_client.hlen(keys.dramatiq_messages("alerts")) == 0,
                   timeout=120, what="every delivery done")
        time.sleep(1)  # a late duplicate would arrive now
        made = transitions(redis_client)
        posts = Counter(h.get("X-Berth-Delivery") for p, h, _b in receiver.requests
                        if p == "/hook")
        per_transition = Counter(posts[eid] for eid in made)
        figures(transitions=len(made), posts=sum(posts.values()),
                posts_per_transition=dict(sorted(per_transition.items())),
                unknown_deliveries=len(set(posts) - set(made)), freezes=FREEZES,
                holding_at_each_freeze=frozen_holding)
        assert len(made) >= SERVICES  # every failure fired at least
        assert per_transition == {1: len(made)}, per_transition
        assert set(posts) == set(made)
        assert procs.tracebacks() == {}
