"""The scheduler against a real Redis: what it enqueues and publishes, and who leads."""

from __future__ import annotations

import time

import dramatiq
import pytest

from app import redis as keys
from app.events import Event, Publisher
from app.jobs import RECONCILE_SERVICES
from app.locks import LeaseLost
from app.models import Certificate, fresh_fields
from app.stores.certificates import CertificateStore
from scheduler.app import Leadership, create_scheduler
from scheduler.jobs import SchedulerJobs
from tests.support.procs import wait_until
from workers import reconcile
from workers.broker import create_broker
from workers.deps import create_deps

DAY = 86400.0


def queued(redis_client, queue: str) -> list[dict]:
    """The messages waiting in a Dramatiq queue (Redis broker layout)."""
    raw = redis_client.hvals(f"dramatiq:{queue}.msgs")
    messages = [dramatiq.Message.decode(r.encode() if isinstance(r, str) else r) for r in raw]
    return [{"actor": m.actor_name, "kwargs": m.kwargs, "trace_id": m.options.get("trace_id")}
            for m in messages]


def active(store: CertificateStore, name: str, *, not_after: float, renew_after: float,
           serial: str = "01", **fields) -> Certificate:
    values = {"status": "active", "cert_pem": "(pem)", "serial": serial,
              "not_before": not_after - 90 * DAY, "not_after": not_after,
              "renew_after": renew_after, **fresh_fields(), **fields}
    cert = Certificate(id=name, domains=(f"{name}.example.com",), owner="alice", **values)
    return store.create(cert)


class Clock:
    def __init__(self, now: float | None = None):
        self.now = now or time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(settings, redis_client):
    broker = create_broker(settings)
    broker.flush_all()
    publisher = Publisher(redis_client, flush_ms=10)
    clock = Clock()
    jobs = SchedulerJobs(settings, redis_client, broker, publisher, clock)
    yield jobs, CertificateStore(redis_client), clock
    publisher.close(timeout=2)
    broker.close()


def events(redis_client, publisher, type_: str) -> list[Event]:
    publisher.flush()
    found = [Event.from_entry(*e) for e in redis_client.xrange(keys.stream("certificate"))]
    return [e for e in found if e.type == type_]


def test_renewal_scan_enqueues_due_certificates_once(env, redis_client):
    jobs, store, clock = env
    now = clock.now
    active(store, "due", not_after=now + 20 * DAY, renew_after=now - 1)
    active(store, "fresh", not_after=now + 80 * DAY, renew_after=now + 50 * DAY)
    active(store, "backoff", not_after=now + 20 * DAY, renew_after=now - 1,
           backoff_until=now + 600, backoff_reason="unavailable")
    active(store, "revoked", not_after=now + 20 * DAY, renew_after=now - 1, status="revoked")
    store.create(Certificate(id="failed", domains=("f.example.com",), owner="a", status="failed",
                             backoff_until=now - 1, **fresh_fields()))
    store.create(Certificate(id="new", domains=("n.example.com",), owner="a", status="pending",
                             **fresh_fields()))  # its API message is still in flight
    assert sorted(jobs.renewal_scan()) == ["due", "failed"]
    assert jobs.renewal_scan() == []  # queued already: no pile-up
    messages = queued(redis_client, "certificates")
    assert sorted((m["actor"], m["kwargs"]["certificate"]) for m in messages) == [
        ("issue_certificate", "failed"), ("renew_certificate", "due")]
    # The actor clears the mark when done; a certificate still due is enqueued again.
    redis_client.delete(keys.certificate_job_guard("due"))
    assert jobs.renewal_scan() == ["due"]
    # Once its backoff is over, the one in backoff is enqueued too.
    clock.now = now + 601
    assert "backoff" in jobs.renewal_scan()


def test_expiry_warnings_once_per_threshold(env, redis_client):
    jobs, store, clock = env
    start = clock.now
    active(store, "exp", not_after=start + 20 * DAY, renew_after=start + 5 * DAY)
    assert jobs.expiry_warnings() == []
    clock.now = start + 6.5 * DAY  # 13.5 days left: the 14-day threshold
    assert jobs.expiry_warnings() == [("exp", 14)]
    assert jobs.expiry_warnings() == []
    clock.now = start + 17.5 * DAY  # 2.5 days left: 7 and 3 crossed at once, one event
    assert jobs.expiry_warnings() == [("exp", 3)]
    clock.now = start + 17.8 * DAY
    assert jobs.expiry_warnings() == []
    clock.now = start + 19.5 * DAY
    assert jobs.expiry_warnings() == [("exp", 1)]
    assert jobs.expiry_warnings() == []
    sent = events(redis_client, jobs.publisher, "expiring_soon")
    assert [e.data["threshold_days"] for e in sent] == [14, 3, 1]
    assert all(e.subject == "exp" and e.source == "scheduler" for e in sent)
    # A renewed certificate (new serial) is warned about again from the start.
    cert = store.get("exp")
    store.update(cert.replace(serial="02"))
    assert jobs.expiry_warnings() == [("exp", 1)]


def test_expiry_thresholds_are_configurable(settings, redis_client, env):
    _jobs, store, clock = env
    custom = settings.__class__.from_env({}, redis_url=settings.redis_url,
                                         expiry_warn_days=(30, 2))
    jobs = SchedulerJobs(custom, redis_client, _jobs.broker, _jobs.publisher, clock)
    active(store, "c", not_after=clock.now + 25 * DAY, renew_after=clock.now)
    assert jobs.expiry_warnings() == [("c", 30)]


def test_one_leader_among_replicas_and_takeover(redis_client):
    first = Leadership(redis_client, ttl_s=1, instance="first")
    second = Leadership(redis_client, ttl_s=1, instance="second")
    assert first.try_lead() and not second.try_lead()
    assert first.try_lead()  # the leader extends its lease, in the same term
    assert redis_client.get(keys.scheduler_leader()) == "1:first"
    assert first.fence.token == 1
    # The leader dies (stops extending): after the expiry another replica takes over, in a
    # new term with a higher fencing token.
    wait_until(second.try_lead, timeout=5, what="takeover")
    assert second.fence.token == 2
    assert not first.try_lead() and first.fence is None
    second.resign()
    assert first.try_lead() and first.fence.token == 3


def test_a_job_of_a_deposed_leader_does_nothing(env, redis_client):
    """A leader paused past its lease (a GC pause, a frozen VM, cut off from Redis) wakes up
    and runs a job under its old term, believing it still leads: its fence, checked in Redis,
    stops the job before it enqueues, marks or publishes anything."""
    jobs, store, clock = env
    active(store, "due", not_after=clock.now + 10 * DAY, renew_after=clock.now - 1)
    old = Leadership(redis_client, ttl_s=0.2, instance="old")
    new = Leadership(redis_client, ttl_s=5, instance="new")
    assert old.try_lead()
    stale = old.fence
    wait_until(new.try_lead, timeout=5, what="takeover")
    assert new.fence.token > stale.token
    for job in (jobs.renewal_scan, jobs.expiry_warnings, jobs.trim_streams,
                jobs.reconcile_services):
        with pytest.raises(LeaseLost):
            job(stale)
    assert queued(redis_client, "certificates") == []
    assert queued(redis_client, "maintenance") == [] and queued(redis_client, "services") == []
    assert not redis_client.exists(keys.certificate_job_guard("due"))
    assert not redis_client.exists(keys.expiry_warnings("due"))
    assert events(redis_client, jobs.publisher, "expiring_soon") == []
    # The same jobs under the current term do their work.
    assert jobs.renewal_scan(new.fence) == ["due"]
    assert [t for _c, t in jobs.expiry_warnings(new.fence)] == [14]
    jobs.trim_streams(new.fence)
    assert {m["actor"] for m in queued(redis_client, "maintenance")} == {"trim_streams"}


def test_a_scheduler_whose_term_ended_skips_its_jobs(settings, redis_client):
    """The check is the lease in Redis, not the replica's own idea of leading."""
    broker = create_broker(settings)
    broker.flush_all()
    publisher = Publisher(redis_client, flush_ms=10)
    scheduler = create_scheduler(settings, redis_client, broker, publisher, heartbeat=False)
    try:
        assert scheduler.leadership.try_lead()
        scheduler.is_leader = True
        redis_client.set(keys.scheduler_leader(), "99:someone-else")  # taken over meanwhile
        run = scheduler._as_leader("trim_streams", scheduler.jobs.trim_streams)
        run()
        assert queued(redis_client, "maintenance") == []
        assert "trim_streams" not in scheduler.runs
    finally:
        publisher.close(timeout=2)
        broker.close()


def test_scheduler_runs_every_job_at_start_up_on_the_leader_only(settings, redis_client):
    fast = settings.__class__.from_env({}, redis_url=settings.redis_url,
                                       scheduler_lock_ttl_s=3, renewal_scan_s=3600,
                                       trim_interval_s=3600)
    broker = create_broker(fast)
    broker.flush_all()
    publisher = Publisher(redis_client, flush_ms=10)
    store = CertificateStore(redis_client)
    active(store, "due", not_after=time.time() + 10 * DAY, renew_after=time.time() - 1)
    leader = create_scheduler(fast, redis_client, broker, publisher)
    follower = create_scheduler(fast, redis_client, broker, publisher)
    leader.start()
    try:
        assert leader.became_leader.wait(5)
        follower.start()
        wait_until(lambda: leader.runs.get("trim_streams") and leader.runs.get("renewal_scan")
                   and leader.runs.get("expiry_warnings") and leader.runs.get("reconcile_services"),
                   timeout=10, what="start-up runs")
        actors = sorted(m["actor"] for m in queued(redis_client, "certificates")
                        + queued(redis_client, "maintenance") + queued(redis_client, "services"))
        assert actors == ["reconcile_services", "renew_certificate", "trim_streams"]
        warned = events(redis_client, publisher, "expiring_soon")
        assert [e.data["threshold_days"] for e in warned] == [14]
        # Every run has a trace id, shared by what it enqueues.
        assert all(m["trace_id"] for m in queued(redis_client, "certificates"))
        assert not follower.is_leader and not follower.runs
        heartbeats = redis_client.hkeys(keys.HEARTBEATS)
        assert any(h.startswith("scheduler/") for h in heartbeats)
        # The leader stops: the follower takes over and runs the jobs at once itself.
        leader.shutdown()
        assert follower.became_leader.wait(5)
        wait_until(lambda: follower.runs.get("renewal_scan"), timeout=10, what="takeover run")
    finally:
        leader.shutdown()
        follower.shutdown()
        publisher.close(timeout=2)
        broker.close()


def test_reconciliation_is_enqueued_at_start_up_and_then_every_interval(settings, redis_client):
    fast = settings.__class__.from_env({}, redis_url=settings.redis_url,
                                       reconcile_interval_s=1, renewal_scan_s=3600,
                                       trim_interval_s=3600)
    broker = create_broker(fast)
    broker.flush_all()
    publisher = Publisher(redis_client, flush_ms=10)
    scheduler = create_scheduler(fast, redis_client, broker, publisher, heartbeat=False)
    scheduler.start()
    try:
        assert scheduler.became_leader.wait(5)
        # The start-up run, then at least one run on the interval: one message each.
        wait_until(lambda: len(queued(redis_client, "services")) >= 2, timeout=15,
                   what="two reconcile_services messages")
    finally:
        scheduler.shutdown()
        publisher.close(timeout=2)
        broker.close()
    messages = queued(redis_client, "services")
    assert {m["actor"] for m in messages} == {"reconcile_services"}
    assert all(m["kwargs"] == {} and m["trace_id"] for m in messages)
    # Each run has its own trace id.
    assert len({m["trace_id"] for m in messages}) == len(messages)
    assert scheduler.runs["reconcile_services"] == len(messages)


def test_scheduled_reconciliation_is_skipped_while_the_engine_is_unreachable(settings,
                                                                              redis_client,
                                                                              tmp_path):
    """Not retried (a traceback and a retry every few seconds on a machine without Docker):
    the scheduler sends the next one anyway."""
    down = settings.__class__.from_env({}, redis_url=settings.redis_url,
                                       docker_host=f"unix://{tmp_path}/no-docker.sock")
    broker = create_broker(down)
    broker.flush_all()
    deps = create_deps(down, redis_client)
    try:
        reconcile.register(broker, deps)
        broker.get_actor(RECONCILE_SERVICES.actor_name).fn()  # returns: nothing to retry
        assert queued(redis_client, "services") == []
    finally:
        deps.publisher.close(timeout=2)
        broker.close()
