"""/api/v1/services in process (falcon TestClient) over a real Redis and a real dockerd:
validation, owner scoping, 202 with the trace id and the job it enqueues, show with
containers and health, logs, and a clear 503 while the engine is unreachable."""

from __future__ import annotations

import threading
import urllib.request

import dramatiq
import pytest

from app import redis as keys
from app.models import fresh_fields
from app.stores.routes import RouteStore
from app.stores.services import ServiceStore
from harness.docker import TEST_LABEL
from tests.support.api import Api
from workers import services
from workers.containers import Engine

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BASE = "/api/v1/services"
pytestmark = pytest.mark.docker


def queued(redis_client) -> list[dramatiq.Message]:
    raw = redis_client.hvals("dramatiq:services.msgs")
    return [dramatiq.Message.decode(r.encode()) for r in raw]


@pytest.fixture
def svc_api(service_settings, redis_client, engine):
    """create_api over the test Redis with the real engine, as the web process builds it."""
    api = Api(service_settings, redis_client, engine=engine)
    api.store = ServiceStore(redis_client)
    api.alice = api.token("user", "alice")
    api.bob = api.token("user", "bob")
    yield api
    api.close()


def create(api, secret, name="web", **extra):
    body = {"name": name, "image": "berth-test/busybox-httpd:x", "port": 8080, **extra}
    return api.post(BASE, secret, json=body, headers={"X-Trace-Id": TRACE})


def test_create_answers_202_with_the_trace_id_and_enqueues_create(svc_api, redis_client):
    created = create(svc_api, svc_api.alice, env={"A": "1"}, replicas=2)
    assert created.status_code == 202, created.text
    assert created.json["trace_id"] == TRACE == created.headers["X-Trace-Id"]
    shown = created.json["service"]
    assert (shown["id"], shown["owner"], shown["status"]) == ("web", "alice", "pending")
    assert shown["hostname"] == "web.localhost" and shown["replicas"] == 2
    assert shown["revision"] == 1 and shown["bind"] == "127.0.0.1"
    assert created.headers["Location"] == f"{BASE}/web"
    [message] = queued(redis_client)
    assert (message.actor_name, message.queue_name) == ("create_service", "services")
    assert message.kwargs == {"service": "web"} and message.options["trace_id"] == TRACE


@pytest.mark.parametrize("extra, field", [
    ({"image": "Not An Image"}, "image"),
    ({"port": 0}, "port"),
    ({"replicas": 33}, "replicas"),
    ({"restart": "sometimes"}, "restart"),
    ({"labels": {"berth.service": "x"}}, "labels"),
    ({"env": {"1BAD": "x"}}, "env"),
    ({"health": {"path": "no-slash"}}, "health.path"),
    ({"bind": "localhost"}, "bind"),
    ({"volumes": ["/:/host"]}, "volumes"),
])
def test_create_refuses_invalid_fields(svc_api, extra, field):
    answer = create(svc_api, svc_api.alice, **extra)
    assert answer.status_code == 400, answer.text
    assert answer.json["field"] == field


def test_names_and_hostnames_are_unique(svc_api, redis_client):
    assert create(svc_api, svc_api.alice).status_code == 202
    assert create(svc_api, svc_api.alice).status_code == 409
    # Another name under BASE_DOMAIN is the admin's to give (tenancy), and this one is taken.
    taken = create(svc_api, svc_api.alice, name="other", hostname="web.localhost")
    assert taken.status_code == 403, taken.text
    taken = create(svc_api, svc_api.admin, name="other", hostname="web.localhost")
    assert taken.status_code == 409, taken.text
    RouteStore(redis_client).create(RouteStore.new("alice", {
        "host": "site.localhost", "targets": ("http://127.0.0.1:9",)}))
    routed = create(svc_api, svc_api.alice, name="site")
    assert routed.status_code == 409 and routed.json["field"] == "hostname"


def test_users_see_and_command_only_their_services(svc_api):
    assert create(svc_api, svc_api.alice).status_code == 202
    assert svc_api.get(f"{BASE}/web", svc_api.bob).status_code == 404
    assert svc_api.post(f"{BASE}/web/stop", svc_api.bob).status_code == 404
    assert svc_api.delete(f"{BASE}/web", svc_api.bob).status_code == 404
    assert svc_api.get(BASE, svc_api.bob).json["items"] == []
    assert [s["id"] for s in svc_api.get(BASE, svc_api.admin).json["items"]] == ["web"]
    foreign = create(svc_api, svc_api.bob, name="mine", owner="alice")
    assert foreign.status_code == 403
    assert create(svc_api, svc_api.admin, name="given", owner="bob").json["service"][
        "owner"] == "bob"


def test_commands_update_the_record_and_enqueue(svc_api, redis_client):
    create(svc_api, svc_api.alice)
    store = svc_api.store
    store.update(store.get("web").replace(status="running"))
    scaled = svc_api.post(f"{BASE}/web/scale", svc_api.alice, json={"replicas": 3})
    assert scaled.status_code == 202 and scaled.json["service"]["replicas"] == 3
    assert svc_api.post(f"{BASE}/web/scale", svc_api.alice, json={"replicas": 0}).json[
        "field"] == "replicas"
    redeployed = svc_api.post(f"{BASE}/web/redeploy", svc_api.alice,
                              json={"image": "berth-test/busybox-httpd:y"})
    assert redeployed.json["service"]["revision"] == 2
    assert redeployed.json["service"]["image"] == "berth-test/busybox-httpd:y"
    bad = svc_api.post(f"{BASE}/web/redeploy", svc_api.alice, json={"hostname": "x.localhost"})
    assert bad.status_code == 400
    for action in ("restart", "stop", "start"):
        assert svc_api.post(f"{BASE}/web/{action}", svc_api.alice).status_code == 202
    deleted = svc_api.delete(f"{BASE}/web", svc_api.alice)
    assert deleted.status_code == 202 and deleted.json["service"]["status"] == "deleting"
    assert svc_api.post(f"{BASE}/web/start", svc_api.alice).status_code == 409
    assert svc_api.delete(f"{BASE}/web", svc_api.alice).status_code == 202
    sent = sorted(m.actor_name for m in queued(redis_client))
    assert sent == sorted(["create_service", "scale_service", "redeploy_service",
                           "restart_service", "stop_service", "start_service",
                           "delete_service", "delete_service"])


def test_stopped_services_are_not_scaled_or_redeployed(svc_api):
    create(svc_api, svc_api.alice)
    store = svc_api.store
    store.update(store.get("web").replace(status="stopped"))
    answer = svc_api.post(f"{BASE}/web/scale", svc_api.alice, json={"replicas": 2})
    assert answer.status_code == 409 and "start it first" in answer.json["description"]
    assert svc_api.post(f"{BASE}/web/redeploy", svc_api.alice).status_code == 409


def test_an_unreachable_engine_is_a_clear_503_and_nothing_else_breaks(settings, redis_client,
                                                                      tmp_path, request):
    down = Engine(f"unix://{tmp_path}/docker.sock", timeout=1)
    api = Api(settings, redis_client, engine=down)
    request.addfinalizer(api.close)
    answer = create(api, api.admin)
    assert answer.status_code == 503
    assert "unreachable" in answer.json["description"]
    assert "service commands are unavailable" in answer.json["description"]
    assert api.get(f"{BASE}/web", api.admin).status_code == 404  # nothing was stored
    assert api.get(BASE, api.admin).status_code == 200
    assert api.get("/api/v1/tokens", api.admin).status_code == 200
    redis_client.set(keys.INSTANCE_ID, "a-worker-ran-before")
    ServiceStore(redis_client).create(ServiceStore.model(
        id="web", image="x", port=80, owner="root", hostname="web.localhost", **fresh_fields()))
    shown = api.get(f"{BASE}/web", api.admin)
    assert shown.status_code == 200 and shown.json["containers"] is None
    assert "unreachable" in shown.json["engine_error"]


def test_show_and_logs_of_a_running_service(svc_api, ctx, new_service, docker_client):
    new_service("web", replicas=2, labels={TEST_LABEL: "1"})
    services.create(ctx, "web")
    shown = svc_api.get(f"{BASE}/web", svc_api.alice)
    assert shown.status_code == 200 and shown.json["status"] == "running"
    containers = shown.json["containers"]
    assert [c["name"] for c in containers] == ["berth-web.1.0", "berth-web.1.1"]
    assert all(c["state"] == "running" and c["current"] and c["health"]["healthy"]
               for c in containers)
    assert shown.json["url"] == "http://web.localhost/"

    logs = svc_api.get(f"{BASE}/web/logs", svc_api.alice, params={"tail": "all"})
    assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
    lines = logs.text.splitlines()
    assert {line.split(" | ")[0] for line in lines} == {"berth-web.1.0", "berth-web.1.1"}
    assert any("serving on 8080" in line for line in lines)
    one = svc_api.get(f"{BASE}/web/logs", svc_api.alice,
                      params={"container": "berth-web.1.1", "tail": "1"})
    assert one.text.count("\n") == 1 and " | " not in one.text  # one container: no prefix
    assert svc_api.get(f"{BASE}/web/logs", svc_api.alice,
                       params={"container": "nope"}).status_code == 400

    # follow streams until the containers stop: once the request is under way, make each
    # container log a request line, then stop them
    def act() -> None:
        for c in containers:
            urllib.request.urlopen(f"http://127.0.0.1:{c['port']}/id.txt", timeout=2).read()
        for c in containers:
            docker_client.containers.get(c["id"]).stop(timeout=5)

    actor = threading.Timer(1.0, act)
    actor.start()
    followed = svc_api.get(f"{BASE}/web/logs", svc_api.alice,
                           params={"follow": "true", "tail": "0"})
    actor.join()
    assert followed.status_code == 200
    served = [line for line in followed.text.splitlines() if "response:200" in line]
    assert sorted(line.split(" | ")[0] for line in served) == ["berth-web.1.0",
                                                                "berth-web.1.1"]
