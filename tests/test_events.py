"""The event backbone against a real redis-server: Publisher, Reader, envelope."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

from app import redis as keys
from app.background import ProcessThread, degraded
from app.events import Event, Publisher, Reader, consumer_lag, stream_lengths
from app.redis import create_client
from app.tracing import trace_context
from tests.support.procs import ROOT, Proc, RedisServer, wait_until
from tests.support.refusing_redis import RefusingRedis

REQUESTS = keys.stream("request")


def test_envelope_round_trip_and_scrubbing():
    with trace_context("ab" * 16):
        event = Event.create("proxy_request_completed", "proxy", "app.example.com",
                             {"status": 200, "headers": {"Authorization": "Bearer xyz"},
                              "note": "used brt_abcdefghijklmnop"})
    assert event.trace_id == "ab" * 16
    parsed = Event.from_entry("1-0", event.to_fields())
    assert parsed.type == event.type and parsed.data["status"] == 200
    assert parsed.data["headers"]["Authorization"] == "[redacted]"
    assert "brt_abcdefghijklmnop" not in parsed.data["note"]
    assert set(event.to_fields()) == {"type", "source", "subject", "trace_id", "ts_ms", "data"}


def test_publisher_batches_into_the_stream(redis_client):
    publisher = Publisher(redis_client, batch=100, flush_ms=20)
    for i in range(1000):
        publisher.emit("request", "proxy_request_completed", "proxy", f"s{i}", {"i": i})
    assert publisher.flush(timeout=10)
    assert redis_client.xlen(REQUESTS) == 1000
    first = redis_client.xrange(REQUESTS, count=1)[0]
    assert Event.from_entry(*first).subject == "s0"


def test_a_staged_event_is_stored_with_its_transaction_only(redis_client):
    publisher = Publisher(redis_client, maxlen=10, flush_ms=20)
    stream = keys.stream("certificate")
    with trace_context("cd" * 16):
        event = Event.create("deleted", "worker", "c", {"serial": "01"})
    with redis_client.pipeline(transaction=True) as pipe:  # discarded: nothing is stored
        pipe.multi()
        publisher.stage(pipe, "certificate", event)
        pipe.reset()
    assert redis_client.xlen(stream) == 0
    with redis_client.pipeline(transaction=True) as pipe:
        pipe.multi()
        pipe.set("test:state", "deleted")
        publisher.stage(pipe, "certificate", event)
        pipe.execute()
    (entry_id, fields), = redis_client.xrange(stream)
    assert Event.from_entry(entry_id, fields) == Event(**{**event.__dict__, "id": entry_id})
    assert fields["trace_id"] == "cd" * 16 and publisher.pending == 0
    with redis_client.pipeline(transaction=True) as pipe:  # trimmed as `publish` trims
        pipe.multi()
        for _ in range(300):
            publisher.stage(pipe, "certificate", event)
        pipe.execute()
    assert redis_client.xlen(stream) < 300


def test_publisher_from_many_threads(redis_client):
    publisher = Publisher(redis_client, batch=50, flush_ms=20)

    def produce(n):
        for i in range(500):
            publisher.emit("service", "service_started", "worker", f"t{n}-{i}")

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert publisher.flush(timeout=10)
    assert redis_client.xlen(keys.stream("service")) == 4000
    assert publisher.dropped == 0


def test_publisher_inside_a_gevent_process(redis_server, redis_client):
    out = subprocess.run([sys.executable, "-m", "tests.support.gevent_publisher",
                          redis_server.url, "5000"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "published=5000 dropped=0" in out.stdout
    assert redis_client.xlen(REQUESTS) == 5000


def test_publisher_survives_a_redis_restart_without_blocking(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    try:
        client = create_client(server.url, socket_timeout=20, socket_connect_timeout=0.5)
        publisher = Publisher(client, batch=50, flush_ms=20, buffer=2000)
        worst = 0.0

        def publish_some(count):
            nonlocal worst
            for i in range(count):
                started = time.perf_counter()
                publisher.emit("request", "proxy_request_completed", "proxy", f"x{i}")
                worst = max(worst, time.perf_counter() - started)

        publish_some(500)
        assert publisher.flush(timeout=10)

        # A hung Redis: the flusher is stuck in a write for up to 20 s, yet every publish()
        # returns at once (the flusher has not even timed out when they are all done).
        server.proc.signal(signal.SIGSTOP)
        publish_some(1000)
        assert publisher.redis_ok and publisher.pending > 0
        server.proc.signal(signal.SIGCONT)
        assert publisher.flush(timeout=10)

        port = server.port
        server.kill()
        publish_some(5000)  # Redis is gone: 2000 buffered, the rest dropped and counted
        assert publisher.dropped == 3000
        assert not publisher.flush(timeout=1)
        server = RedisServer(tmp_path / "r", port=port).start()
        assert wait_until(lambda: publisher.pending == 0, timeout=30, what="buffer drained")
        publish_some(100)
        assert publisher.flush(timeout=10)
        fresh = create_client(server.url)
        assert fresh.xlen(REQUESTS) == 2000 + 100  # the data dir was not saved: only new ones
        assert int(fresh.get(keys.EVENTS_DROPPED)) == 3000
        print(f"publish() worst case across the outage: {worst * 1e6:.0f} us; "
              f"dropped {publisher.dropped}, counted in Redis after restart")
    finally:
        server.stop()


def test_process_thread_starts_once_per_process_and_again_after_a_fork():
    started = []

    def target(stop):
        started.append(os.getpid())
        stop.wait()

    worker = ProcessThread("berth-test", target)
    worker.ensure_started()
    worker.ensure_started()
    first = worker.thread
    wait_until(lambda: started, timeout=5, what="the thread running")
    assert started == [os.getpid()] and worker.started_here
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # a forked child inherits no thread: ensure_started starts its own
        worker.ensure_started()
        ok = worker.thread is not first and worker.thread.is_alive()
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read_end, 1) == b"1"
    os.close(read_end)
    os.close(write_end)
    assert worker.stop() is first
    first.join(5)
    assert not first.is_alive() and worker.stop() is None  # stopped: nothing runs here
    worker.ensure_started()  # a stopped one starts again, as a new thread
    assert worker.thread is not first
    worker.stop().join(5)


def _fill(client, n, stream=REQUESTS):
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, Event.create("proxy_request_completed", "test", f"s{i % 7}").to_fields())
    pipe.execute()


def test_reader_applies_each_batch_with_its_ack(redis_client):
    _fill(redis_client, 230)

    def handler(events, pipe):
        for e in events:
            pipe.hincrby("test:counts", e.subject, 1)

    reader = Reader(redis_client, REQUESTS, "metrics", "c1", handler, batch=100, block_ms=10)
    while reader.run_once():
        pass
    counts = redis_client.hgetall("test:counts")
    assert sum(map(int, counts.values())) == 230
    assert redis_client.xpending(REQUESTS, "metrics")["pending"] == 0
    lag = consumer_lag(redis_client, [REQUESTS])
    assert lag[0]["group"] == "metrics" and lag[0]["lag"] == 0
    assert stream_lengths(redis_client, [REQUESTS]) == {REQUESTS: 230}


def test_failing_entry_is_isolated_then_dead_lettered(redis_client):
    _fill(redis_client, 10)
    poison = redis_client.xrange(REQUESTS)[3][0]
    seen = []

    def handler(events, pipe):
        if any(e.id == poison for e in events):
            raise RuntimeError("cannot apply")
        seen.extend(e.id for e in events)
        pipe.incrby("test:applied", len(events))

    reader = Reader(redis_client, REQUESTS, "g", "c1", handler, batch=100, block_ms=10,
                    claim_idle_ms=1, max_deliveries=3)
    for _ in range(20):
        reader.run_once()
        time.sleep(0.005)
    assert int(redis_client.get("test:applied")) == 9
    assert poison not in seen
    dead = redis_client.xrange(keys.DEAD_LETTER_STREAM)
    assert len(dead) == 1 and dead[0][1]["dead_id"] == poison
    assert redis_client.xpending(REQUESTS, "g")["pending"] == 0


def test_malformed_entry_goes_to_dead_letter(redis_client):
    redis_client.xadd(REQUESTS, {"garbage": "1"})
    reader = Reader(redis_client, REQUESTS, "g", "c1", lambda ev, p: None, block_ms=10)
    reader.run_once()
    assert redis_client.xlen(keys.DEAD_LETTER_STREAM) == 1


def test_a_failing_effect_is_raised_after_the_others_applied_like_exec(redis_client):
    _fill(redis_client, 3)
    redis_client.set("test:string", "x")

    def handler(events, effects):
        effects.incrby("test:before", len(events))
        effects.lpush("test:string", "wrong type")
        effects.eval("redis.call('INCRBY', KEYS[1], ARGV[1])", 1, "test:scripted", len(events))

    reader = Reader(redis_client, REQUESTS, "g", "c1", handler, block_ms=10)
    with pytest.raises(redis.ResponseError, match="LPUSH: WRONGTYPE"):
        reader.run_once()
    assert redis_client.get("test:before") == "3" and redis_client.get("test:scripted") == "3"
    assert redis_client.xpending(REQUESTS, "g")["pending"] == 0


def count_subjects(events, effects):
    for event in events:
        effects.hincrby("test:counts", event.subject, 1)
    effects.incrby("test:applied", len(events))


class StallingHandler:
    """count_subjects, whose first call waits until `resume` is set: a consumer stalled past
    the claim time (a long pause, a stopped VM) that is not killed and then carries on."""

    def __init__(self):
        self.entered = threading.Event()
        self.resume = threading.Event()
        self.calls = 0

    def __call__(self, events, effects):
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.resume.wait(30)
        count_subjects(events, effects)


@pytest.mark.parametrize("taken", [100, 40], ids=["whole-batch", "part-of-the-batch"])
def test_a_consumer_stalled_past_the_claim_time_never_applies_a_batch_twice(redis_client,
                                                                            taken):
    _fill(redis_client, 100)
    handler = StallingHandler()
    stalled = Reader(redis_client, REQUESTS, "g", "stalled", handler, batch=100, block_ms=10,
                     claim_idle_ms=100)
    other = Reader(redis_client, REQUESTS, "g", "other", count_subjects, batch=taken,
                   block_ms=10, claim_idle_ms=100)
    stalled.ensure_group()
    errors = []

    def run_stalled():
        try:
            stalled.run_once()
        except Exception as ex:  # noqa: BLE001 - reported by the assertion below
            errors.append(ex)

    thread = threading.Thread(target=run_stalled)
    thread.start()
    try:
        assert handler.entered.wait(10), "the stalled consumer never read its batch"

        # Its entries idle past claim_idle_ms: the other consumer claims `taken` and applies them.
        def other_applied():
            other.run_once()
            return other.stats.applied >= taken

        wait_until(other_applied, timeout=10, what="the other consumer applying the claimed")
    finally:
        handler.resume.set()  # the stalled consumer carries on with the batch it read
        thread.join(10)
    assert not errors
    for _ in range(5):  # anything left over would be claimed and applied now
        other.run_once()
    counts = redis_client.hgetall("test:counts")
    assert int(redis_client.get("test:applied")) == 100
    assert sum(map(int, counts.values())) == 100
    assert redis_client.xpending(REQUESTS, "g")["pending"] == 0
    # The stalled consumer applied only what nobody had acknowledged meanwhile.
    assert (stalled.stats.applied, stalled.stats.skipped) == (100 - taken, taken)


@pytest.mark.e2e
def test_consumer_killed_mid_batch_applies_every_event_exactly_once(redis_server, redis_client,
                                                                     tmp_path):
    total = 3000
    _fill(redis_client, total)
    args = [sys.executable, "-m", "tests.support.counting_consumer", redis_server.url,
            REQUESTS, "exact"]
    victim = Proc(args + ["victim", "0.05"], tmp_path / "victim.log")
    try:
        wait_until(lambda: int(redis_client.get("test:applied") or 0) >= 500, timeout=30,
                   what="victim progress")
        victim.kill()  # SIGKILL, most likely inside a handler's sleep: that batch is not applied
        applied_by_victim = int(redis_client.get("test:applied"))
        assert applied_by_victim < total
        pending = redis_client.xpending(REQUESTS, "exact")["pending"]
        survivor = Proc(args + ["survivor", "0"], tmp_path / "survivor.log")
        try:
            wait_until(lambda: int(redis_client.get("test:applied") or 0) >= total, timeout=60,
                       what="all events applied")
            time.sleep(0.5)  # anything double-applied would show up now
        finally:
            survivor.stop()
    finally:
        victim.stop()
    counts = redis_client.hgetall("test:counts")
    assert int(redis_client.get("test:applied")) == total
    assert sum(map(int, counts.values())) == total
    assert redis_client.xpending(REQUESTS, "exact")["pending"] == 0
    print(f"victim applied {applied_by_victim}, left {pending} pending; survivor applied the rest;"
          f" total {total}, lost 0, doubled 0")


# -- Redis refusing writes (a real MISCONF) -------------------------------------------------------


def test_reader_and_publisher_wait_out_misconf_and_recover_by_themselves(tmp_path):
    server = RefusingRedis(tmp_path / "refusing").start()
    client = create_client(server.url)
    stop = threading.Event()

    def handler(events, effects):
        effects.incrby("test:applied", len(events))

    reader = Reader(client, REQUESTS, "g", "c1", handler, block_ms=50)
    thread = threading.Thread(target=reader.run, args=(stop,), daemon=True)
    publisher = Publisher(client, flush_ms=10)
    name = f"reader of {REQUESTS} (g)"
    try:
        thread.start()
        for i in range(50):
            publisher.emit("request", "x", "test", str(i))
        wait_until(lambda: client.get("test:applied") == "50", what="the first 50 applied")
        with server.refusing():
            for i in range(50, 80):  # buffered while Redis refuses them
                publisher.emit("request", "x", "test", str(i))
            wait_until(lambda: name in degraded() and "event publisher" in degraded(),
                       what="the reader and the publisher degraded")
            assert "MISCONF" in degraded()[name] and thread.is_alive()
        wait_until(lambda: client.get("test:applied") == "80", timeout=20,
                   what="the buffered events applied")
        assert name not in degraded() and "event publisher" not in degraded()
        assert thread.is_alive() and publisher.dropped == 0
        assert client.xlen(REQUESTS) == 80 and client.xpending(REQUESTS, "g")["pending"] == 0
    finally:
        stop.set()
        thread.join(timeout=5)
        publisher.close(timeout=1)
        client.close()
        server.stop()


def test_the_commit_script_is_registered_again_after_redis_lost_its_scripts(redis_client):
    # What a Redis restart does to the script cache: redis-py's Script runs EVALSHA, meets
    # NOSCRIPT and loads the script again, so the Reader notices nothing.
    def handler(events, effects):
        effects.incrby("test:applied", len(events))

    reader = Reader(redis_client, REQUESTS, "g", "c1", handler, block_ms=10)
    redis_client.xadd(REQUESTS, Event.create("x", "t", "s").to_fields())
    assert reader.run_once() == 1
    redis_client.script_flush()
    redis_client.xadd(REQUESTS, Event.create("x", "t", "s").to_fields())
    assert reader.run_once() == 1
    assert redis_client.get("test:applied") == "2"
