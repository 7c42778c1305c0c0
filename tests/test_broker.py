"""Dramatiq wiring against a real Redis: trace propagation, retries and trim_streams."""

import time

import dramatiq
import pytest
from dramatiq import Worker

from app import redis as keys
from app.events import Event
from app.jobs import TRIM_STREAMS, enqueue
from app.tracing import trace_context
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
