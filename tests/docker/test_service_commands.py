"""The service commands and reconciliation run in-process against a real dockerd and Redis.

The worker-process versions of these (with Dramatiq, the proxy and SIGKILL) are in
tests/e2e/test_services_e2e.py; here each command is a plain function call."""

from __future__ import annotations

import dataclasses
import json
import urllib.request

import pytest

from app import redis as keys
from app.models import LABEL_SERVICE
from harness.docker import TEST_LABEL
from workers import reconcile, services
from workers.rollout import container_name, create_slot, route_id, service_lock
from workers.watcher import HealthMonitor

pytestmark = pytest.mark.docker


def events(ctx, name: str) -> list[tuple[str, dict]]:
    ctx.publisher.flush()
    return [(f["type"], json.loads(f["data"]))
            for _id, f in ctx.redis.xrange(keys.stream("service"))
            if f["subject"] == name]


def types(ctx, name: str) -> list[str]:
    return [t for t, _ in events(ctx, name)]


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.read().decode().strip()


def targets(ctx, name: str) -> tuple[str, ...]:
    route = ctx.routes.find(route_id(name))
    return route.targets if route else ()


def allocated(ctx) -> dict[str, str]:
    return ctx.redis.hgetall(keys.ports_allocated())


def test_create_routes_only_healthy_containers(ctx, new_service):
    new_service("web")
    services.create(ctx, "web")
    svc = ctx.services.get("web")
    assert svc.status == "running" and svc.error == ""
    [container] = ctx.engine.list(ctx.labels("web"))
    assert container.name == "berth-web.1.0"
    assert container.labels[LABEL_SERVICE] == "web" and container.labels[TEST_LABEL] == "1"
    assert {"berth.owner": "alice", "berth.revision": "1", "berth.replica": "0"}.items() <= (
        container.labels.items())
    [target] = targets(ctx, "web")
    assert fetch(target + "/id.txt") == container.id[:12]
    route = ctx.routes.get(route_id("web"))
    assert (route.host, route.service, route.owner) == ("web.localhost", "web", "alice")
    assert allocated(ctx) == {target.rsplit(":", 1)[1]: "berth-web.1.0"}
    assert types(ctx, "web") == ["service_created", "service_started"]
    assert ctx.health.read("web")["berth-web.1.0"].healthy


def test_failing_health_check_fails_the_create_and_routes_nothing(ctx, new_service):
    new_service("sick", health={"path": "/missing", "interval_s": 1, "timeout_s": 1})
    ctx = dataclasses.replace(
        ctx, settings=dataclasses.replace(ctx.settings, service_start_timeout_s=2))
    services.create(ctx, "sick")
    svc = ctx.services.get("sick")
    assert svc.status == "failed" and "answered 404" in svc.error
    assert ctx.routes.find(route_id("sick")) is None
    [container] = ctx.engine.list(ctx.labels("sick"))
    assert not container.running  # kept, stopped, for its logs
    assert types(ctx, "sick")[-1] == "service_failed"


def test_redelivered_create_adopts_what_the_first_attempt_left(ctx, new_service):
    svc = new_service("web")
    # The first attempt died after allocating replica 1's port and creating replica 0's
    # container (not started), and a stale slot of a revision that never ran holds a port.
    ctx.services.update(svc.replace(replicas=2))
    svc = ctx.services.get("web")
    left = create_slot(ctx, svc, 0)
    port_1 = ctx.ports.allocate(container_name("web", 1, 1))
    stale = ctx.ports.allocate(container_name("web", 9, 0))
    services.create(ctx, "web")
    assert ctx.services.get("web").status == "running"
    containers = ctx.engine.list(ctx.labels("web"))
    assert [c.name for c in containers] == ["berth-web.1.0", "berth-web.1.1"]
    assert containers[0].id == left.id  # adopted, not duplicated
    assert int(containers[1].labels["berth.port"]) == port_1  # its port reused
    assert str(stale) not in allocated(ctx)
    assert sorted(allocated(ctx).values()) == ["berth-web.1.0", "berth-web.1.1"]
    services.create(ctx, "web")  # a second redelivery changes nothing
    assert [c.id for c in ctx.engine.list(ctx.labels("web"))] == [c.id for c in containers]


def test_scale_redeploy_stop_start_restart_delete(ctx, new_service):
    new_service("web")
    services.create(ctx, "web")
    ctx.services.update(ctx.services.get("web").replace(replicas=3))
    services.scale(ctx, "web")
    assert len(targets(ctx, "web")) == 3
    assert len({fetch(t + "/id.txt") for t in targets(ctx, "web")}) == 3
    assert events(ctx, "web")[-1][0] == "service_scaled"
    assert events(ctx, "web")[-1][1]["previous"] == 1

    svc = ctx.services.get("web")
    ctx.services.update(svc.replace(revision=2, env={"VERSION": "2"}))
    services.redeploy(ctx, "web")
    assert [c.name for c in ctx.engine.list(ctx.labels("web"))] == [
        "berth-web.2.0", "berth-web.2.1", "berth-web.2.2"]
    assert {fetch(t + "/version.txt") for t in targets(ctx, "web")} == {"2"}
    assert sorted(allocated(ctx).values()) == ["berth-web.2.0", "berth-web.2.1",
                                               "berth-web.2.2"]
    kind, data = events(ctx, "web")[-1]
    assert kind == "service_redeployed" and len(data["removed"]) == 3

    ctx.services.update(ctx.services.get("web").replace(replicas=1))
    services.scale(ctx, "web")
    assert [c.name for c in ctx.engine.list(ctx.labels("web"))] == ["berth-web.2.0"]
    assert len(allocated(ctx)) == 1

    services.stop(ctx, "web")
    assert ctx.services.get("web").status == "stopped"
    assert ctx.routes.find(route_id("web")) is None
    assert not any(c.running for c in ctx.engine.list(ctx.labels("web")))
    services.start(ctx, "web")
    assert ctx.services.get("web").status == "running" and len(targets(ctx, "web")) == 1
    services.restart(ctx, "web")
    assert ctx.services.get("web").status == "running"

    ctx.services.update(ctx.services.get("web").replace(status="deleting"))
    services.delete(ctx, "web")
    assert ctx.services.find("web") is None
    assert ctx.routes.find(route_id("web")) is None
    assert ctx.engine.list(ctx.labels("web")) == []
    assert allocated(ctx) == {} and ctx.health.read("web") == {}
    assert types(ctx, "web")[-4:] == ["service_stopped", "service_started", "service_started",
                                      "service_deleted"]


def test_failed_redeploy_keeps_the_previous_revision_serving(ctx, new_service):
    new_service("web")
    services.create(ctx, "web")
    [before] = targets(ctx, "web")
    svc = ctx.services.get("web")
    ctx.services.update(svc.replace(revision=2, command=("sh", "-c", "exit 1")))
    services.redeploy(ctx, "web")
    svc = ctx.services.get("web")
    assert svc.status == "failed" and "exited with code 1" in svc.error
    assert targets(ctx, "web") == (before,)
    assert fetch(before + "/id.txt")
    assert types(ctx, "web")[-1] == "service_failed"


def test_reconcile_restarts_a_killed_container_by_policy(ctx, new_service, docker_client):
    new_service("web")
    services.create(ctx, "web")
    [container] = ctx.engine.list(ctx.labels("web"))
    docker_client.containers.get(container.id).kill()
    assert "revived ['berth-web.1.0']" in reconcile.reconcile_service(ctx, "web")
    assert ctx.engine.inspect(container.id).running
    kinds = events(ctx, "web")
    assert kinds[-2][0] == "service_unhealthy" and kinds[-2][1]["exit_code"] == 137
    assert kinds[-2][1]["restart"] is True
    assert kinds[-1][0] == "service_started" and kinds[-1][1]["reason"] == "restarted"
    assert "healthy 1/1, revived []" in reconcile.reconcile_service(ctx, "web")
    assert types(ctx, "web")[-1] == "service_started"  # nothing new to report


def test_reconcile_recreates_a_removed_container_on_its_port(ctx, new_service,
                                                             docker_client):
    new_service("web")
    services.create(ctx, "web")
    [before] = targets(ctx, "web")
    [container] = ctx.engine.list(ctx.labels("web"))
    docker_client.containers.get(container.id).remove(force=True)
    reconcile.reconcile_service(ctx, "web")
    [again] = ctx.engine.list(ctx.labels("web"))
    assert again.id != container.id and targets(ctx, "web") == (before,)
    assert fetch(before + "/id.txt") == again.id[:12]


def test_reconcile_with_restart_no_unroutes_the_dead(ctx, new_service, docker_client):
    new_service("web", restart="no", replicas=2)
    services.create(ctx, "web")
    first, second = ctx.engine.list(ctx.labels("web"))
    docker_client.containers.get(first.id).kill()
    reconcile.reconcile_service(ctx, "web")
    assert not ctx.engine.inspect(first.id).running
    assert targets(ctx, "web") == (f"http://127.0.0.1:{second.labels['berth.port']}",)
    unhealthy = [d for t, d in events(ctx, "web") if t == "service_unhealthy"]
    assert unhealthy[-1]["restart"] is False
    reconcile.reconcile_service(ctx, "web")
    assert len([t for t in types(ctx, "web") if t == "service_unhealthy"]) == 1  # once


def test_reconcile_removes_orphans_and_their_ports(ctx, new_service):
    new_service("web")
    services.create(ctx, "web")
    ctx.services.delete("web")  # the record vanished behind berth's back
    assert "orphans removed" in reconcile.reconcile_service(ctx, "web")
    assert ctx.engine.list(ctx.labels("web")) == [] and allocated(ctx) == {}
    assert types(ctx, "web")[-1] == "service_orphan_removed"
    assert reconcile.service_names(ctx) == set()


def test_reconcile_leaves_services_a_command_holds(ctx, new_service):
    new_service("web")
    services.create(ctx, "web")
    with service_lock(ctx, "web"):
        assert reconcile.reconcile_service(ctx, "web").startswith("skipped")


def test_health_monitor_asks_for_reconciliation_when_health_changes(ctx, new_service,
                                                                   docker_client):
    new_service("web", replicas=2, restart="always")
    services.create(ctx, "web")
    sent, now = [], [0.0]
    monitor = HealthMonitor(ctx, lambda job, **kw: sent.append((job.actor_name, kw)),
                            clock=lambda: now[0])
    assert monitor.tick() == [] and sent == []  # healthy, as stored
    first, second = ctx.engine.list(ctx.labels("web"))
    docker_client.containers.get(first.id).pause()  # runs, but answers nothing
    try:
        assert monitor.tick() == []  # not due yet: interval_s is 1
        now[0] += 1
        assert monitor.tick() == ["web"]
        assert sent == [("reconcile_service", {"service": "web"})]
        reconcile.reconcile_service(ctx, "web")
        assert targets(ctx, "web") == (f"http://127.0.0.1:{second.labels['berth.port']}",)
        kind, data = events(ctx, "web")[-1]
        assert kind == "service_unhealthy" and "timed out" in data["reason"]
        assert ctx.engine.inspect(first.id).state == "paused"  # reported, not replaced
        now[0] += 1
        assert monitor.tick() == []  # the stored state agrees now
    finally:
        docker_client.containers.get(first.id).unpause()
    now[0] += 1
    assert monitor.tick() == ["web"]
    reconcile.reconcile_service(ctx, "web")
    assert len(targets(ctx, "web")) == 2
