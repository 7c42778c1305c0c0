"""The consumer process (`python -m workers.consumers`) against a real Redis: exact totals
while it is SIGKILLed and restarted, several consumers sharing the group, its heartbeat."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from app import redis as keys
from app.events import Event
from app.metrics.aggregate import ROUTER, SERVICE
from tests.support.procs import Proc, wait_until

pytestmark = pytest.mark.e2e

HOSTS = ("shop.test", "blog.test", "api.test")
UPSTREAMS = ("http://127.0.0.1:9001", "http://127.0.0.1:9002")


def consumer_env(redis_url: str) -> dict:
    return {"REDIS_URL": redis_url, "BERTH_CONSUMER_CLAIM_IDLE_MS": "500",
            "BERTH_CONSUMER_BATCH": "200", "BERTH_LOG_FORMAT": "text",
            "BERTH_ALERT_EVAL_S": "0.5"}


def start_consumer(redis_url: str, log_path) -> Proc:
    return Proc([sys.executable, "-m", "workers.consumers"], log_path, env=consumer_env(redis_url))


def counted(client, dimension: str, names) -> int:
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(keys.metrics_total(dimension, name), "n")
    return sum(int(n or 0) for n in pipe.execute())


def publish(client, total: int, per_second: int) -> threading.Thread:
    """Add `total` request events at about `per_second` (pipelined XADD, as the Publisher
    writes them), from a thread."""
    def run():
        started = time.monotonic()
        for start in range(0, total, 500):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + 500, total)):
                host, upstream = HOSTS[i % 3], UPSTREAMS[i % 2]
                event = Event.create(
                    "proxy_request_completed", "proxy", host,
                    {"host": host, "route_id": f"rt_{i % 3}", "method": "GET", "path": "/",
                     "status": 500 if i % 10 == 0 else 200, "duration_ms": 1 + i % 50,
                     "bytes_in": 0, "bytes_out": 10, "upstream": upstream,
                     "client_ip": "10.0.0.1", "error": ""})
                pipe.xadd(keys.stream("request"), event.to_fields())
            pipe.execute()
            time.sleep(max(0.0, started + (start + 500) / per_second - time.monotonic()))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_consumer_sigkilled_twice_counts_every_event_exactly_once(redis_server, redis_client,
                                                                   tmp_path):
    total = 60_000
    # Faster than one consumer applies them: it is busy, so a SIGKILL lands mid-batch.
    producer = publish(redis_client, total, per_second=60_000)
    applied, unacked = [], []
    for run in range(3):
        consumer = start_consumer(redis_server.url, tmp_path / f"consumer-{run}.log")
        try:
            if run < 2:  # SIGKILL once another third of the events is applied
                wait_until(lambda run=run: counted(redis_client, ROUTER, HOSTS)
                           >= total * (run + 1) // 3, timeout=60, interval=0.01,
                           what="consumer progress")
                consumer.kill()
                applied.append(counted(redis_client, ROUTER, HOSTS))
                unacked.append(redis_client.xpending(keys.stream("request"),
                                                     "consumer")["pending"])
            else:
                producer.join(timeout=60)
                wait_until(lambda: counted(redis_client, ROUTER, HOSTS) >= total, timeout=60,
                           what="every event applied")
                time.sleep(1.0)  # a doubled batch would show up by now
        finally:
            consumer.stop()
    assert counted(redis_client, ROUTER, HOSTS) == total
    assert counted(redis_client, SERVICE, UPSTREAMS) == total
    errors = sum(int(redis_client.hget(keys.metrics_total(ROUTER, h), "e")) for h in HOSTS)
    assert errors == total // 10
    assert redis_client.hget(keys.METRICS_EVENTS, "request:proxy_request_completed") == str(total)
    assert redis_client.xpending(keys.stream("request"), "consumer")["pending"] == 0
    print(f"applied at each SIGKILL: {applied}, read but not acknowledged then: {unacked}; "
          f"in the end {total}: lost 0, doubled 0")


def test_two_consumers_share_the_group_and_beat(redis_server, redis_client, tmp_path):
    total = 20_000
    consumers = [start_consumer(redis_server.url, tmp_path / f"c{i}.log") for i in range(2)]
    try:
        wait_until(lambda: len([m for m in redis_client.hkeys(keys.HEARTBEATS)
                                if m.startswith("consumer/")]) == 2, what="two heartbeats")
        publish(redis_client, total, per_second=20_000).join(timeout=60)
        wait_until(lambda: counted(redis_client, ROUTER, HOSTS) >= total, timeout=60,
                   what="every event applied")
    finally:
        for consumer in consumers:
            assert consumer.stop() == 0
    assert counted(redis_client, ROUTER, HOSTS) == total
    shares = [int(c.log_path.read_text().split("events:request:stream: ")[1].split(",")[0])
              for c in consumers]
    assert sum(shares) == total and all(shares), shares
    # A clean stop removes the heartbeat.
    assert not [m for m in redis_client.hkeys(keys.HEARTBEATS) if m.startswith("consumer/")]
    print(f"two consumers applied {shares}")


def test_malformed_and_foreign_events_do_not_stop_the_consumer(redis_server, redis_client,
                                                               tmp_path):
    stream = keys.stream("request")
    redis_client.xadd(stream, {"garbage": "1"})
    redis_client.xadd(stream, Event.create("something_else", "test", "x").to_fields())
    redis_client.xadd(stream, Event.create("proxy_request_completed", "proxy", "shop.test",
                                           {"host": "shop.test", "status": "oops",
                                            "duration_ms": None}).to_fields())
    consumer = start_consumer(redis_server.url, tmp_path / "c.log")
    try:
        wait_until(lambda: counted(redis_client, ROUTER, ["shop.test"]) == 1, what="applied")
    finally:
        assert consumer.stop() == 0
    assert redis_client.xlen(keys.DEAD_LETTER_STREAM) == 1
    assert redis_client.hget(keys.METRICS_EVENTS, "request:something_else") == "1"


def test_a_dead_consumer_is_deleted_once_its_entries_are_claimed(redis_server, redis_client,
                                                                 tmp_path):
    stream = keys.stream("request")
    publish(redis_client, 30, per_second=10_000).join(timeout=10)
    redis_client.xgroup_create(stream, "consumer", id="0")
    # A process that read 30 entries and died before acknowledging them.
    redis_client.xreadgroup("consumer", "deadhost:1", {stream: ">"}, count=30)
    env = {"BERTH_HEARTBEAT_STALE_S": "1"}
    consumer = Proc([sys.executable, "-m", "workers.consumers"], tmp_path / "c.log",
                    env={**consumer_env(redis_server.url), **env})
    try:
        wait_until(lambda: "deadhost:1" not in {
            c["name"] for c in redis_client.xinfo_consumers(stream, "consumer")},
            timeout=20, what="the dead consumer deleted")
        # Deleted only after its entries were claimed and applied: none lost, none doubled.
        assert counted(redis_client, ROUTER, HOSTS) == 30
        assert redis_client.xpending(stream, "consumer")["pending"] == 0
    finally:
        assert consumer.stop() == 0
    assert "removed 1 dead consumers" in consumer.log_path.read_text()
