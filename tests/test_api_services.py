"""/api/v1/services in an API built without a container engine (create_api's default, as in
in-process tests): engine commands answer a clear 503, the records stay readable and
nothing else is affected. With a real dockerd: tests/docker/test_api_services.py."""

from __future__ import annotations

from app import redis as keys
from app.models import Service, fresh_fields
from app.stores import ServiceStore

BASE = "/api/v1/services"
NO_ENGINE = "no container engine is configured"


def test_commands_need_an_engine_and_say_so(api, redis_client):
    body = {"name": "web", "image": "busybox:1.36", "port": 8080}
    refused = api.post(BASE, api.admin, json=body)
    assert refused.status_code == 503, refused.text
    assert NO_ENGINE in refused.json["description"]
    assert "service commands are unavailable" in refused.json["description"]
    assert api.get(f"{BASE}/web", api.admin).status_code == 404  # nothing was stored
    invalid = api.post(BASE, api.admin, json={**body, "port": 0})
    assert invalid.status_code == 400 and invalid.json["field"] == "port"  # input first

    ServiceStore(redis_client).create(Service(id="web", image="busybox:1.36", port=8080,
                                              owner="root", hostname="web.localhost",
                                              status="running", revision=1, **fresh_fields()))
    for action in ("start", "stop", "restart"):
        answer = api.post(f"{BASE}/web/{action}", api.admin)
        assert answer.status_code == 503 and NO_ENGINE in answer.json["description"], action
    scaled = api.post(f"{BASE}/web/scale", api.admin, json={"replicas": 2})
    assert scaled.status_code == 503
    assert api.delete(f"{BASE}/web", api.admin).status_code == 503
    stored = ServiceStore(redis_client).get("web")
    assert (stored.status, stored.replicas) == ("running", 1)  # unchanged
    assert redis_client.hlen("dramatiq:services.msgs") == 0  # nothing enqueued


def test_records_stay_readable_and_other_resources_work(api, redis_client):
    ServiceStore(redis_client).create(Service(id="web", image="busybox:1.36", port=8080,
                                              owner="root", hostname="web.localhost",
                                              revision=1, **fresh_fields()))
    assert [s["id"] for s in api.get(BASE, api.admin).json["items"]] == ["web"]
    shown = api.get(f"{BASE}/web", api.admin)
    assert shown.status_code == 200 and shown.json["containers"] == []  # no worker ran yet
    redis_client.set(keys.INSTANCE_ID, "a-worker-ran-before")
    shown = api.get(f"{BASE}/web", api.admin)
    assert shown.status_code == 200 and shown.json["containers"] is None
    assert NO_ENGINE in shown.json["engine_error"]
    logs = api.get(f"{BASE}/web/logs", api.admin)
    assert logs.status_code == 503 and NO_ENGINE in logs.json["description"]
    route = api.post("/api/v1/routes", api.admin,
                     json={"host": "app.example.test", "targets": ["http://127.0.0.1:9"]})
    assert route.status_code == 201
    cert = api.post("/api/v1/certificates", api.admin,
                    json={"name": "site", "domains": ["app.example.test"]})
    assert cert.status_code == 202
