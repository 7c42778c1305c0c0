"""The consumer SIGKILLed mid-stream, twice, under a steady load through the real proxy:
every request is counted exactly once (the router's total equals the requests answered),
nothing is left pending and nothing is dead-lettered.

Each kill is aimed at a moment when the consumer holds entries it read and has not yet
acknowledged (XPENDING > 0); the figures say how many it held."""

from __future__ import annotations

import json

import pytest
import redis

from app import redis as keys
from app.metrics.aggregate import ROUTER
from harness.procs import wait_until
from tests.faults.load import SteadyLoad
from tests.faults.platform import Processes, explain
from tests.support.observability import serve_route, start_consumer
from tests.test_consumer import counted

pytestmark = pytest.mark.faults

HOST = "counted.test"
KILLS = 2


def pending(redis_client) -> int:
    try:
        return redis_client.xpending(keys.stream("request"), "consumer")["pending"]
    except redis.ResponseError:  # no group yet
        return 0


def test_consumer_sigkilled_mid_stream_counts_every_request_once(
        proxy, backend, redis_client, redis_server, tmp_path, figures):
    probes = serve_route(redis_client, proxy.port, HOST, backend.url)
    held = []
    # Small batches: the consumer is more often between a read and its acknowledgement.
    env = {"BERTH_CONSUMER_BATCH": "20"}
    with Processes() as procs:
        with SteadyLoad(proxy.port, HOST, pause_s=0.002) as load:
            for run in range(KILLS + 1):
                name = f"consumer-{run}"
                procs[name] = start_consumer(redis_server.url, tmp_path / f"{name}.log", env)
                wait_until(lambda: counted(redis_client, ROUTER, [HOST]) > 0 and load.sent,
                           timeout=30, what="the consumer counting")
                if run == KILLS:
                    break
                load.wait_for(300)
                # Aim the SIGKILL at a batch read and not yet acknowledged.
                with_entries = wait_until(lambda: pending(redis_client), timeout=5,
                                          interval=0.001, what="entries in flight")
                procs[name].kill()
                held.append(with_entries)
            load.wait_for(300)
        total = probes + load.sent
        wait_until(lambda: counted(redis_client, ROUTER, [HOST]) >= total, timeout=60,
                   what="every request counted")
        wait_until(lambda: pending(redis_client) == 0, timeout=30, what="nothing pending")
        got = counted(redis_client, ROUTER, [HOST])
        answered = [json.loads(f["data"]) for _id, f in redis_client.xrange(keys.stream("request"))]
        events = sum(1 for data in answered if data["host"] == HOST and data["status"] == 200)
        dead = redis_client.xlen(keys.DEAD_LETTER_STREAM)
        figures(requests=total, failed=load.failed, events=events, counted=got,
                lost=max(0, total - got), doubled=max(0, got - total), kills=KILLS,
                pending_at_each_kill=held, dead_lettered=dead)
        assert load.failed == 0, explain(redis_client, load.failures)
        assert events == total and got == total and dead == 0
