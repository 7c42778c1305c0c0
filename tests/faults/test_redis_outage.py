"""Redis stopped for 30 s under a steady load, then restarted: nothing is lost.

Every process runs as in production (proxy, web, worker, scheduler, consumer) over a Redis of
this test alone, stopped with SHUTDOWN SAVE (what a restarted Redis with persistence reloads)
and started again on the same port. The proxy's event buffer is bounded at 300 so the outage
overflows it: what it cannot keep it counts, and the count reaches Redis after the restart.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest
import requests

from app import redis as keys
from app.events import Event
from app.redis import create_client
from app.stores.tokens import TokenStore
from harness.procs import RedisServer, wait_until
from harness.proxy import ProxyProcess
from tests.acme.conftest import start_scheduler, start_worker
from tests.faults.load import SteadyLoad
from tests.faults.platform import Processes, beating_since, explain
from tests.support.api import bearer, start_web
from tests.support.observability import serve_route, start_consumer

pytestmark = pytest.mark.faults

OUTAGE_S = 30
HOST = "steady.test"
LOAD_PATH = "/load"  # the load's requests, told apart from the route's probes by their path
COMPONENTS = {"proxy", "web", "worker", "scheduler", "consumer"}


def load_events(client) -> int:
    return sum(1 for _id, fields in client.xrange(keys.stream("request"))
               if json.loads(fields["data"]).get("path") == LOAD_PATH)


def system_events(client, event_type: str, since_ms: int) -> list[Event]:
    return [e for e in (Event.from_entry(*x) for x in client.xrange(keys.stream("system")))
            if e.type == event_type and e.ts_ms >= since_ms]


def test_redis_stopped_30_s_loses_no_request_and_accounts_for_every_event(
        tmp_path, backend, figures):
    redis_server = RedisServer(tmp_path / "redis").start()  # ours alone: we stop it
    client = create_client(redis_server.url)
    env = {"REDIS_URL": redis_server.url, "BERTH_LOG_FORMAT": "text",
           "BERTH_PUBLISHER_FLUSH_MS": "20", "BERTH_TRIM_INTERVAL_S": "2"}
    procs = Processes()
    proxy = ProxyProcess(tmp_path / "proxy", redis_server.url, {"BERTH_PUBLISHER_BUFFER": "300"})
    try:
        procs["proxy"] = proxy.start().proc
        procs["web"], web_url = start_web(redis_server.url, tmp_path)
        procs["consumer"] = start_consumer(redis_server.url, tmp_path / "consumer.log")
        procs["scheduler"] = start_scheduler(env, tmp_path / "scheduler.log")
        procs["worker"] = start_worker(env, tmp_path / "worker.log", threads=2)
        admin = bearer(TokenStore(client).issue(name="admin", scope="admin", owner="root")[1])
        probes = serve_route(client, proxy.port, HOST, backend.url)  # counted for HOST too
        assert requests.get(f"{web_url}/healthz", timeout=10).ok  # the web process beats
        wait_until(lambda: beating_since(client, set().union(*procs.pids().values()), 0)
                   == COMPONENTS, timeout=30, what="every component beating")

        with SteadyLoad(proxy.port, HOST, LOAD_PATH) as load:
            load.wait_for(100)
            before = procs.pids()
            stopped = time.monotonic()
            client.shutdown(save=True)  # the dump it reloads holds everything written so far
            redis_server.proc.popen.wait(10)
            # Known hosts are served the whole time; the API says Redis is unreachable.
            wait_until(lambda: load.served_since(stopped) >= 200, timeout=OUTAGE_S,
                       what="requests served during the outage")
            down = requests.get(f"{web_url}/api/v1/routes", headers=admin, timeout=10)
            assert down.status_code == 503, down.text
            assert {"title", "description"} <= set(down.json())
            assert "Traceback" not in down.text
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
            served_during = load.served_since(stopped)
            redis_server.stop()
            redis_server.start()  # the same port: nobody is told, everyone reconnects
            restarted_ms = int(time.time() * 1000)
            restarted = time.monotonic()

            # Every process beats again, by itself.
            wait_until(lambda: beating_since(client, set().union(*before.values()),
                                             restarted_ms) == COMPONENTS,
                       timeout=30, what="every component beating after the restart")
            recovered_s = time.monotonic() - restarted
            load.wait_for(100)
        sent, failed = load.sent, load.failed

        # Every request's event either landed or was counted as dropped; none vanished.
        def accounted() -> bool:
            return load_events(client) + int(client.get(keys.EVENTS_DROPPED) or 0) >= sent

        with contextlib.suppress(TimeoutError):  # what is missing is reported below
            wait_until(accounted, timeout=30, what="the buffered events written")
        landed = load_events(client)
        dropped = int(client.get(keys.EVENTS_DROPPED) or 0)
        figures(outage_s=OUTAGE_S, sent=sent, failed=failed, served_during_outage=served_during,
                reconnects=load.reconnects, events_landed=landed, events_dropped=dropped,
                lost=sent - landed - dropped, recovered_s=round(recovered_s, 1))
        assert failed == 0, explain(client, load.failures)
        assert dropped > 0 and landed + dropped == sent
        # The consumer counted each landed event once (the web process reports it).
        metrics = {}

        def counted() -> int:
            metrics.update(requests.get(f"{web_url}/api/v1/orchestrator/metrics", headers=admin,
                                        params={"window": "total", "host": HOST},
                                        timeout=10).json())
            return metrics["requests"]

        total_events = probes + landed
        with contextlib.suppress(TimeoutError):  # a shortfall is asserted below
            wait_until(lambda: counted() >= total_events, timeout=30, what="the consumer")
        assert metrics["requests"] == total_events, (metrics, total_events)
        # The drops raise an alert, and the worker and the scheduler work again: a job the
        # API enqueues runs, and the scheduler's own trims resume.
        wait_until(lambda: [e for e in client.xrange(keys.stream("alert"))
                            if e[1]["type"] == "alert_fired" and "events_dropped" in e[1]["data"]],
                   timeout=30, what="the events_dropped alert")
        job = requests.post(f"{web_url}/api/v1/orchestrator/jobs/trim-streams", headers=admin,
                            timeout=10)
        assert job.status_code == 202, job.text
        wait_until(lambda: [e for e in system_events(client, "streams_trimmed", restarted_ms)
                            if e.trace_id == job.json()["trace_id"]],
                   timeout=30, what="the API's trim job run by the worker")
        wait_until(lambda: len(system_events(client, "streams_trimmed", restarted_ms)) >= 3,
                   timeout=30, what="the scheduler's trims after the restart")
        gone = procs.gone(before)
        tracebacks = procs.tracebacks()
        figures(consumer_counted=metrics["requests"], events_of_host=total_events,
                processes_exited=len(gone), logs_with_tracebacks=len(tracebacks))
        assert metrics["requests"] == total_events and metrics["errors"] == 0
        assert gone == {}, gone
        assert tracebacks == {}, tracebacks
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop()
        proxy.stop()
        redis_server.stop()
