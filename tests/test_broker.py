"""Dramatiq wiring against a real Redis: trace propagation, retries and trim_streams."""

import threading
import time

import dramatiq
import pytest
from dramatiq import Worker

from app import redis as keys
from app.events import Event
from app.jobs import TRIM_STREAMS, enqueue
from app.tracing import get_trace_id, trace_context
from workers.app import create_worker

TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def worker_deps(settings, redis_client):
    deps = create_worker(settings.__class__.from_env({}, redis_url=settings.redis_url,
                                                     events_maxlen=1000,
                                                     events_retention_hours=1))
    broker = dramatiq.get_broker()
    broker.flush_all()
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    yield deps
    worker.stop()
    broker.close()


def test_trim_streams_trims_and_reports_on_the_callers_trace(worker_deps, redis_client):
    stream = keys.stream("request")
    old_ms = int(time.time() * 1000) - 2 * 3600 * 1000
    for i in range(50):  # older than the one-hour retention
        redis_client.xadd(stream, {"type": "x", "n": i}, id=f"{old_ms + i}-0")
    for i in range(3000):
        redis_client.xadd(stream, {"type": "y", "n": i})
    with trace_context(TRACE):
        enqueue(dramatiq.get_broker(), TRIM_STREAMS)
    dramatiq.get_broker().join(TRIM_STREAMS.queue_name, timeout=20_000)
    worker_deps.publisher.flush()
    remaining = redis_client.xlen(stream)
    assert remaining < 3000  # MAXLEN 1000, approximate: whole macro nodes are removed
    assert not any(f["type"] == "x" for _, f in redis_client.xrange(stream, count=100))
    events = [Event.from_entry(*e) for e in redis_client.xrange(keys.stream("system"))]
    trimmed = [e for e in events if e.type == "streams_trimmed"]
    assert len(trimmed) == 1
    assert trimmed[0].trace_id == TRACE
    assert trimmed[0].data["removed"][stream] == 3050 - remaining


def test_enqueue_without_a_trace_gets_a_new_one(worker_deps):
    message = enqueue(dramatiq.get_broker(), TRIM_STREAMS)
    assert len(message.options["trace_id"]) == 32


def test_an_idle_consumer_wakes_when_a_message_is_sent(settings, redis_client):
    """A consumer idle long enough that Dramatiq's own would sleep its whole 30 s timeout
    between polls picks up a message as soon as it is sent: it waits on the wake list."""
    from workers.broker import create_broker

    broker = create_broker(settings)
    broker.declare_queue("wake-test")
    consumer = broker.consume("wake-test", prefetch=1, timeout=30_000)
    consumer.misses = 32  # Dramatiq's backoff after a long idle spell: the full timeout
    got: list = []

    def consume():
        got.append(next(m for m in consumer if m is not None))

    try:
        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        time.sleep(0.3)  # let it block on the empty queue first
        sent = broker.enqueue(dramatiq.Message(queue_name="wake-test", actor_name="noop",
                                               args=(), kwargs={}, options={}))
        thread.join(10)  # far below the 30 s a sleeping consumer would take
        assert got and got[0].message_id == sent.message_id
        consumer.ack(got[0])
        assert redis_client.llen(keys.dramatiq_wake("wake-test")) == 0  # the token was used
    finally:
        consumer.close()
        broker.close()


def test_a_dead_workers_messages_are_requeued_after_the_heartbeat_timeout(settings,
                                                                          redis_client):
    """What redelivery after a worker's SIGKILL relies on in Dramatiq 2.2's Redis broker: a
    broker whose calls stopped for heartbeat_timeout is dead, and another broker's fetch (with
    maintenance_chance) moves what the dead one fetched and never acknowledged back to the
    queue. Fails if Dramatiq stops honouring either option."""
    from workers.broker import create_broker

    fast = settings.__class__.from_env({}, redis_url=settings.redis_url,
                                       worker_heartbeat_timeout_ms=1000,
                                       worker_maintenance_chance=1_000_000)
    dead, alive = create_broker(fast), create_broker(fast)
    assert alive.heartbeat_timeout == 1000 and alive.maintenance_chance == 1_000_000
    for broker in (dead, alive):
        broker.declare_queue("requeue-test")
    sent = dead.enqueue(dramatiq.Message(queue_name="requeue-test", actor_name="noop",
                                         args=(), kwargs={}, options={}))
    try:
        fetched = dead.do_fetch("requeue-test", 1)  # held, and never acknowledged: it "dies"
        assert len(fetched) == 1
        started = time.monotonic()
        got = []
        while not got and time.monotonic() - started < 10:
            got = alive.do_fetch("requeue-test", 1)
            time.sleep(0.05)
        waited = time.monotonic() - started
        assert got, "the dead broker's message was never requeued"
        assert dramatiq.Message.decode(got[0]).message_id == sent.message_id
        assert waited >= 0.9  # not before the dead broker's heartbeat timed out
    finally:
        dead.close()
        alive.close()


def test_the_broker_has_berths_redelivery_options(settings):
    from workers.broker import create_broker

    broker = create_broker(settings)
    try:
        assert broker.heartbeat_timeout == settings.worker_heartbeat_timeout_ms == 10_000
        assert broker.maintenance_chance == settings.worker_maintenance_chance
    finally:
        broker.close()


def test_a_staged_message_is_stored_as_dramatiq_stores_one_and_a_worker_runs_it(
        settings, redis_client):
    """stage_message writes Dramatiq 2.2's private layout (the webhook handler relies on it
    to enqueue in the consumer's commit script): the same keys and shapes as
    RedisBroker.enqueue, and a real worker runs the staged message, once, with its trace."""
    from workers.broker import create_broker, stage_message

    broker = create_broker(settings)
    broker.flush_all()
    ran: list = []

    def staged_noop(n):
        ran.append((n, get_trace_id()))

    dramatiq.actor(staged_noop, broker=broker, queue_name="stage-test")
    try:
        sent = broker.enqueue(dramatiq.Message(queue_name="stage-test", actor_name="staged_noop",
                                               args=(0,), kwargs={}, options={}))
        layout_enqueued = {k: redis_client.type(k) for k in redis_client.scan_iter("*stage-test*")}
        rid = sent.options["redis_message_id"]
        assert redis_client.lrange(keys.dramatiq_queue("stage-test"), 0, -1) == [rid]
        assert redis_client.hkeys(keys.dramatiq_messages("stage-test")) == [rid]
        broker.flush("stage-test")
        redis_client.delete(keys.dramatiq_wake("stage-test"))

        pipe = redis_client.pipeline(transaction=True)
        with trace_context(TRACE):
            staged = stage_message(pipe, broker, dramatiq.Message(
                queue_name="stage-test", actor_name="staged_noop", args=(1,), kwargs={},
                options={}, message_id="fixed-id"))
        assert not redis_client.exists(keys.dramatiq_queue("stage-test"))  # not before EXEC
        pipe.execute()
        layout_staged = {k: redis_client.type(k) for k in redis_client.scan_iter("*stage-test*")}
        assert layout_staged == layout_enqueued
        rid = staged.options["redis_message_id"]
        assert redis_client.lrange(keys.dramatiq_queue("stage-test"), 0, -1) == [rid]
        stored = redis_client.hget(keys.dramatiq_messages("stage-test"), rid)
        assert dramatiq.Message.decode(stored.encode()) == staged

        worker = Worker(broker, worker_threads=1, worker_timeout=100)
        worker.start()
        try:
            wait = time.monotonic() + 10
            while not ran and time.monotonic() < wait:
                time.sleep(0.02)
            broker.join("stage-test", timeout=5000)
        finally:
            worker.stop()
        assert ran == [(1, TRACE)]  # TraceMiddleware read the staged trace id
        assert staged.message_id == "fixed-id"
        assert not redis_client.exists(keys.dramatiq_messages("stage-test"))  # acknowledged
    finally:
        broker.close()
