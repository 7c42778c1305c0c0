"""A `user` token can neither see nor change another owner's resources. Convention (app/api/
auth.py): another owner's record is 404, exactly as if it did not exist, so ids cannot be
probed; actions reserved to admins are 403. Bob's resources are made through the API where
it can (tokens, routes, certificates); his service is stored directly, since creating one
asks the container engine first and ownership is checked before any engine call."""

from __future__ import annotations

import pytest

from app.models import Service, fresh_fields
from app.stores.services import ServiceStore
from tests.support.api import bearer


def call(api, method: str, path: str, secret: str, **kwargs):
    return api.client.simulate_request(method, path, headers=bearer(secret), **kwargs)


@pytest.fixture
def bobs(api, secrets, redis_client) -> dict[str, str]:
    """Resources of bob's, by kind: the path of each."""
    bob = secrets["bob"]
    token = call(api, "POST", "/api/v1/tokens", bob, json={"name": "bob-ci"}).json["token"]
    route = call(api, "POST", "/api/v1/routes", bob, json={
        "host": "bob.test", "targets": ["http://127.0.0.1:9"]}).json
    cert = call(api, "POST", "/api/v1/certificates", bob, json={
        "name": "bob-cert", "domains": ["bob.test"]})
    assert cert.status_code == 202, cert.text
    ServiceStore(redis_client).create(Service(
        id="bob-svc", image="nginx:1.27", port=80, owner="bob", hostname="bob-svc.localhost",
        status="running", revision=1, **fresh_fields()))
    return {"token": f"/api/v1/tokens/{token['id']}", "route": f"/api/v1/routes/{route['id']}",
            "route_version": str(route["version"]),
            "certificate": "/api/v1/certificates/bob-cert", "service": "/api/v1/services/bob-svc"}


def test_lists_show_only_the_callers_own_records(api, secrets, bobs):
    alice = secrets["alice"]
    for path in ("/api/v1/tokens", "/api/v1/routes", "/api/v1/certificates",
                 "/api/v1/services"):
        items = call(api, "GET", path, alice).json["items"]
        assert {item["owner"] for item in items} <= {"alice"}, path
        everyone = call(api, "GET", path, secrets["admin"]).json["items"]
        assert "bob" in {item["owner"] for item in everyone}, path  # they do exist


def test_another_owners_records_are_not_found(api, secrets, bobs):
    alice = secrets["alice"]
    reads = [("GET", bobs["route"]), ("GET", bobs["certificate"]), ("GET", bobs["service"]),
             ("GET", bobs["service"] + "/logs")]
    changes = [
        ("DELETE", bobs["token"], None),
        ("PATCH", bobs["route"], {"version": int(bobs["route_version"]),
                                  "targets": ["http://127.0.0.1:10"]}),
        ("DELETE", bobs["route"], None),
        ("DELETE", bobs["certificate"], None),
        *[("POST", f"{bobs['certificate']}/{action}", None)
          for action in ("renew", "revoke", "convert-to-production")],
        ("DELETE", bobs["service"], None),
        *[("POST", f"{bobs['service']}/{action}", None)
          for action in ("start", "stop", "restart", "redeploy")],
        ("POST", f"{bobs['service']}/scale", {"replicas": 2}),
    ]
    missing = {"GET": "/api/v1/routes/rt_000000000000"}
    unknown = call(api, "GET", missing["GET"], alice)
    for method, path in reads:
        answer = call(api, method, path, alice)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json["title"] == unknown.json["title"]  # as if it did not exist
    for method, path, body in changes:
        answer = call(api, method, path, alice, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
    # ... and nothing changed: bob still sees everything as it was.
    bob = secrets["bob"]
    assert call(api, "GET", bobs["route"], bob).json["targets"] == ["http://127.0.0.1:9"]
    assert call(api, "GET", bobs["certificate"], bob).json["status"] == "pending"
    assert call(api, "GET", bobs["service"], bob).json["status"] == "running"
    assert [t["name"] for t in call(api, "GET", "/api/v1/tokens", bob).json["items"]
            if t["name"] == "bob-ci"] == ["bob-ci"]


def test_a_user_cannot_act_as_another_owner_or_as_admin(api, secrets):
    alice = secrets["alice"]
    forbidden = [
        ("POST", "/api/v1/tokens", {"name": "x", "owner": "bob"}),
        ("POST", "/api/v1/tokens", {"name": "x", "scope": "admin"}),
        ("POST", "/api/v1/services", {"name": "x", "image": "nginx:1.27", "port": 80,
                                      "owner": "bob"}),
        ("GET", "/api/v1/orchestrator/alerts", None),
        ("GET", "/api/v1/orchestrator/alert-rules", None),
        ("POST", "/api/v1/orchestrator/jobs/trim-streams", None),
        ("GET", "/metrics", None),
    ]
    for method, path, body in forbidden:
        answer = call(api, method, path, alice, json=body)
        assert answer.status_code == 403, (method, path, answer.text)
    # Ownership is not a field a user sets: a route or certificate is always the caller's.
    for path, body in (("/api/v1/routes", {"host": "x.test", "targets": ["http://127.0.0.1:9"],
                                           "owner": "bob"}),
                       ("/api/v1/certificates", {"name": "x", "domains": ["x.test"],
                                                 "owner": "bob"})):
        answer = call(api, "POST", path, alice, json=body)
        assert answer.status_code == 400 and answer.json["field"] == "owner", answer.text


def test_events_and_the_overview_show_only_the_callers_own(api, secrets, bobs):
    """Bob's lifecycle events (route, certificate, token) are his alone."""
    api.publisher.flush()
    alice, bob = secrets["alice"], secrets["bob"]
    call(api, "POST", "/api/v1/routes", alice, json={"host": "alice.test",
                                                     "targets": ["http://127.0.0.1:9"]})
    api.publisher.flush()
    seen_by_bob = call(api, "GET", "/api/v1/events", bob, params={"limit": 500}).json["items"]
    assert seen_by_bob and all(e["data"]["owner"] == "bob" for e in seen_by_bob)
    seen_by_alice = call(api, "GET", "/api/v1/events", alice,
                         params={"limit": 500}).json["items"]
    assert seen_by_alice and all(e["data"]["owner"] == "alice" for e in seen_by_alice)
    for e in seen_by_bob:  # not even by its trace id or subject
        for params in ({"trace_id": e["trace_id"]}, {"subject": e["subject"]}):
            found = call(api, "GET", "/api/v1/events", alice, params=params).json["items"]
            assert [x for x in found if x["data"].get("owner") == "bob"] == []
    overview = call(api, "GET", "/api/v1/orchestrator/overview", alice)
    assert overview.status_code == 200
    assert "bob" not in overview.text and "bob-cert" not in overview.text
