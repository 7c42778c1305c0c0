"""dockerd stopped and restarted under a steady load, on this suite's own dockerd (its own data,
exec root, socket and bridge, run with live-restore; see conftest.py), never another one.

What berth promises while the engine is down:
- service commands fail at once with a clear 503 (title and description), and records can
  still be read (with the engine's error);
- routes to anything but containers are unaffected;
- containers keep running (live-restore), but a route to one answers a prompt 502 with a
  trace id: berth reaches containers at their published port on 127.0.0.1, which Docker's
  userland proxy serves, and that proxy process exits with dockerd;
and once dockerd is back, with nobody's help: the surviving container is served again as it
was (not restarted), and reconciliation restarts a container that died meanwhile.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from app.settings import Settings
from harness.procs import wait_until
from tests.acme.conftest import start_scheduler
from tests.faults.load import SteadyLoad
from tests.faults.platform import explain
from tests.faults.services import Services
from tests.support.api import Api
from workers.containers import Engine

pytestmark = [pytest.mark.faults, pytest.mark.docker]

BASE = "/api/v1/services"
DOWN_S = 5


def restarted_by_reconciliation(svc: Services, name: str) -> list:
    return [e for e in svc.events_of("service_started")
            if e.subject == name and e.data.get("reason") == "restarted"]


def test_dockerd_stopped_then_restarted_fails_commands_clearly_and_repairs(
        redis_server, redis_client, fault_dockerd, fault_image, docker_proxy, backend,
        docker_routes, tmp_path, figures):
    svc = Services(redis_client, redis_server.url, fault_dockerd.url, fault_image, docker_proxy,
                   tmp_path, drain_ms=500)
    api = Api(Settings.from_env({}, redis_url=redis_server.url, docker_host=fault_dockerd.url),
              redis_client, engine=Engine(fault_dockerd.url, timeout=5))
    scheduler = start_scheduler({**svc.env, "BERTH_RECONCILE_INTERVAL_S": "2"},
                                tmp_path / "scheduler.log")
    try:
        docker_routes.add("steady.test", [backend.url])
        svc.create("kept")
        svc.create("crashed", restart="on-failure")
        kept = svc.engine.list({"berth.service": "kept"})[0]
        crashed = svc.engine.list({"berth.service": "crashed"})[0]
        crashed_pid = svc.engine.client.api.inspect_container(crashed.id)["State"]["Pid"]
        kept_pid = svc.engine.client.api.inspect_container(kept.id)["State"]["Pid"]

        with SteadyLoad(docker_proxy.port, "steady.test") as steady, \
                SteadyLoad(docker_proxy.port, "kept.localhost", "/id.txt",
                           expect=frozenset({200, 502})) as container_route:
            container_route.wait_for(20)
            fault_dockerd.stop_engine()  # by its PID; it started in this suite
            stopped = time.monotonic()
            try:
                scale = api.post(f"{BASE}/kept/scale", api.admin, json={"replicas": 2})
                create = api.post(BASE, api.admin, json={"name": "new", "image": fault_image,
                                                         "port": 8080})
                shown = api.get(f"{BASE}/kept", api.admin)
                # While dockerd is down a container dies: nobody can notice it yet.
                os.kill(crashed_pid, signal.SIGKILL)
                wait_until(lambda: container_route.served_since(stopped) >= 20,
                           what="the container route answered during the outage")
                time.sleep(max(0.0, DOWN_S - (time.monotonic() - stopped)))
                kept_alive = os.path.exists(f"/proc/{kept_pid}")
                during = [o for o in container_route.outcomes if o.at >= stopped]
            finally:
                fault_dockerd.start_engine()
            restarted = time.monotonic()
            wait_until(lambda: svc.serving("kept"), timeout=30, what="kept served again")
            kept_back_s = time.monotonic() - restarted
            wait_until(lambda: restarted_by_reconciliation(svc, "crashed"), timeout=60,
                       what="the dead container restarted by reconciliation")
            wait_until(lambda: svc.serving("crashed"), timeout=30, what="crashed served again")
            repaired_s = time.monotonic() - restarted
            steady.wait_for(20)

        kept_after = svc.engine.inspect(kept.id)
        unhealthy = [e for e in svc.events_of("service_unhealthy") if e.subject == "crashed"]
        bad_gateway = [o for o in during if o.status == 502]
        figures(outage_s=round(restarted - stopped, 1), steady_sent=steady.sent,
                steady_failed=steady.failed, container_route_during_outage=len(during),
                answered_502=len(bad_gateway), container_alive_while_down=kept_alive,
                commands_refused=sum(r.status_code == 503 for r in (scale, create)),
                kept_restarted=kept_after.started_at != kept.started_at,
                kept_served_after_s=round(kept_back_s, 1), crashed_repaired_after_s=round(
                    repaired_s, 1))
        for answer in (scale, create):
            assert answer.status_code == 503, answer.text
            assert answer.json["title"] and "unreachable" in answer.json["description"]
        assert shown.status_code == 200 and "unreachable" in shown.json["engine_error"]
        assert steady.failed == 0, explain(redis_client, steady.failures)
        assert kept_alive and kept_after.started_at == kept.started_at
        assert container_route.failed == 0, container_route.failures[:5]  # 200 or a prompt 502
        assert all(o.trace_id for o in bad_gateway)
        assert unhealthy and unhealthy[0].data["exit_code"] == 137
        assert svc.containers("crashed", running_only=True) == ["berth-crashed.1.0"]
        assert svc.containers("kept", running_only=True) == ["berth-kept.1.0"]
        # Commands work again.
        svc.finished(svc.send("scale", 2, name="kept"), "service_scaled")
    except BaseException:
        print(svc.logs())
        print(f"----- scheduler -----\n{scheduler.output()[-3000:]}")
        raise
    finally:
        scheduler.stop()
        api.close()
        svc.close()
