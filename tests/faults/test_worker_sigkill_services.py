"""A worker SIGKILLed in the middle of scale, redeploy, start, restart, stop and delete: the
redelivered command finishes the job once (one event, exactly the wanted containers and ports),
and a steady load through the proxy loses nothing.

The kill lands where a command spends its time: waiting for new containers to pass their health
check (the service's command sleeps 2 s before serving), or draining a route before stopping
containers; for delete also at its last Redis write, held by a relay (tests/faults/relay.py),
just before or just after the record is removed. Dramatiq requeues a dead worker's messages
after a 60 s heartbeat timeout; the test runs that requeue step at once. Create is covered by
tests/docker/test_services_e2e.py, on the Docker suite's engine; these run on this suite's.
"""

from __future__ import annotations

import contextlib

import pytest

from app import redis as keys
from harness.procs import wait_until
from tests.faults.load import SteadyLoad
from tests.faults.platform import explain
from tests.faults.relay import HoldingRelay
from tests.faults.services import SLOW_START, Services

pytestmark = [pytest.mark.faults, pytest.mark.docker]

HOST = "web.localhost"


@contextlib.contextmanager
def running_service(redis_server, redis_client, docker_url, image, proxy, backend, routes,
                    log_dir, *, drain_ms: int, **fields):
    """A running service "web" and a steady load through the proxy to another host, checked
    to lose nothing."""
    svc = Services(redis_client, redis_server.url, docker_url, image, proxy, log_dir, drain_ms)
    try:
        routes.add("steady.test", [backend.url])
        svc.create(**fields)
        with SteadyLoad(proxy.port, "steady.test") as svc.load:
            yield svc
            svc.load.wait_for(20)
        assert svc.load.failed == 0, explain(svc.redis, svc.load.failures)
    except BaseException:
        print(svc.logs())
        raise
    finally:
        svc.close()


@pytest.fixture
def slow_web(redis_server, redis_client, fault_dockerd, fault_image, docker_proxy, backend,
             docker_routes, tmp_path):
    """Its containers pass their health check 2 s after starting: where deploys are killed."""
    with running_service(redis_server, redis_client, fault_dockerd.url, fault_image,
                         docker_proxy, backend, docker_routes, tmp_path, drain_ms=500,
                         command=SLOW_START) as svc:
        yield svc


@pytest.fixture
def draining_web(redis_server, redis_client, fault_dockerd, fault_image, docker_proxy, backend,
                 docker_routes, tmp_path):
    """Unrouted containers are stopped 3 s later: where stop and delete are killed."""
    with running_service(redis_server, redis_client, fault_dockerd.url, fault_image,
                         docker_proxy, backend, docker_routes, tmp_path, drain_ms=3000) as svc:
        yield svc


def loads(svc: Services, **more) -> dict:
    return {"steady_sent": svc.load.sent, "steady_failed": svc.load.failed, **more}


def test_scale_killed_in_the_health_wait_ends_with_exactly_the_replicas(slow_web, figures):
    svc = slow_web
    with SteadyLoad(svc.proxy.port, HOST, "/id.txt") as web:
        trace = svc.send("scale", 2)
        wait_until(lambda: len(svc.containers()) == 2, what="the new replica created")
        svc.kill_and_redeliver()
        svc.finished(trace, "service_scaled")
        web.wait_for(20)
    figures(**loads(svc, web_sent=web.sent, web_failed=web.failed,
                    scaled_events=svc.count(trace, "service_scaled")))
    assert svc.count(trace, "service_scaled") == 1
    assert svc.containers(running_only=True) == ["berth-web.1.0", "berth-web.1.1"]
    assert svc.ports() == ["berth-web.1.0", "berth-web.1.1"]
    assert web.failed == 0, explain(svc.redis, web.failures)


def test_redeploy_killed_in_the_health_wait_switches_once(slow_web, figures):
    svc = slow_web
    with SteadyLoad(svc.proxy.port, HOST, "/version.txt") as web:
        trace = svc.send("redeploy", {"env": {"VERSION": "2"}})
        wait_until(lambda: "berth-web.2.0" in svc.containers(), what="the new revision created")
        svc.kill_and_redeliver()
        redeployed = svc.finished(trace, "service_redeployed")
        web.wait_for(20)
    figures(**loads(svc, web_sent=web.sent, web_failed=web.failed,
                    redeployed_events=svc.count(trace, "service_redeployed")))
    assert svc.count(trace, "service_redeployed") == 1
    assert redeployed.data["removed"] == ["berth-web.1.0"]
    assert svc.containers() == ["berth-web.2.0"] and svc.ports() == ["berth-web.2.0"]
    assert web.failed == 0, explain(svc.redis, web.failures)


def redelivered_starts_once(svc: Services, trace: str, figures) -> None:
    """Kill the worker running `trace` (a start or restart), redeliver it: one service_started,
    the one container running and served, its one port."""
    svc.kill_and_redeliver()
    svc.finished(trace, "service_started")
    wait_until(svc.serving, what=f"{HOST} served again")
    figures(**loads(svc, started_events=svc.count(trace, "service_started")))
    assert svc.count(trace, "service_started") == 1
    assert svc.containers(running_only=True) == ["berth-web.1.0"]
    assert svc.ports() == ["berth-web.1.0"]


def test_start_killed_in_the_health_wait_starts_once(slow_web, figures):
    svc = slow_web
    svc.finished(svc.send("stop"), "service_stopped")
    trace = svc.send("start")
    wait_until(lambda: svc.containers(running_only=True), what="the container started")
    redelivered_starts_once(svc, trace, figures)


def test_restart_killed_in_the_health_wait_restarts_once(slow_web, figures):
    svc = slow_web
    before = svc.engine.list({"berth.service": "web"})[0]
    trace = svc.send("restart")
    wait_until(lambda: svc.engine.inspect(before.id).started_at != before.started_at,
               what="the container restarted")
    redelivered_starts_once(svc, trace, figures)


def test_stop_killed_while_draining_stops_once(draining_web, figures):
    svc = draining_web
    trace = svc.send("stop")
    wait_until(lambda: not svc.routed(), what="the route removed (draining)")
    svc.kill_and_redeliver()
    svc.finished(trace, "service_stopped")
    figures(**loads(svc, stopped_events=svc.count(trace, "service_stopped")))
    assert svc.count(trace, "service_stopped") == 1
    assert svc.containers() == ["berth-web.1.0"] and svc.containers(running_only=True) == []
    assert svc.store.get("web").status == "stopped"
    assert svc.ports() == ["berth-web.1.0"]  # kept for the next start


def test_delete_killed_while_draining_leaves_nothing(draining_web, figures):
    svc = draining_web
    trace = svc.send("delete")
    wait_until(lambda: not svc.routed(), what="the route removed (draining)")
    svc.kill_and_redeliver()
    svc.finished(trace, "service_deleted")
    figures(**loads(svc, deleted_events=svc.count(trace, "service_deleted")))
    assert svc.count(trace, "service_deleted") == 1
    assert svc.containers() == [] and svc.ports() == []
    assert svc.store.find("web") is None


@pytest.mark.parametrize("when", ["before_the_write", "after_the_write"])
def test_delete_killed_at_its_redis_write_is_reported_once(draining_web, redis_server, when,
                                                          figures):
    """After the write the redelivered delete finds no record and stops: service_deleted must
    have been written with the removal (one transaction), or it is lost."""
    svc = draining_web
    relay = HoldingRelay(redis_server.port).start()
    try:
        svc.worker.stop()
        svc.worker = svc.start_worker(REDIS_URL=relay.url)
        # The transaction that removes the record and its index entries.
        deleting = relay.hold(b"MULTI", b"ZREM", keys.record("service", "web").encode())
        trace = svc.send("delete")
        wait_until(deleting.is_set, timeout=60, what="the delete transaction sent")
        svc.kill_and_redeliver(then=relay.release if when == "after_the_write"
                               else relay.discard)
        wait_until(lambda: svc.store.find("web") is None, what="the record deleted")
        svc.redelivery_done()
        with contextlib.suppress(TimeoutError):  # a missing event is asserted below
            wait_until(lambda: svc.count(trace, "service_deleted"), timeout=5,
                       what="service_deleted event")
        figures(**loads(svc, when=when, deleted_events=svc.count(trace, "service_deleted")))
        assert svc.count(trace, "service_deleted") == 1
        assert [e.type for e in svc.events(trace)] == ["service_deleted"]
        assert svc.containers() == [] and svc.ports() == []
    finally:
        relay.stop()
