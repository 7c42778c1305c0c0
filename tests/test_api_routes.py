"""/api/v1/routes (app/api/routes.py) behind the API's real auth middleware and error mapping,
mounted on a small app of its own until the lead wires it into create_api."""

from __future__ import annotations

import bcrypt
import falcon
import falcon.testing
import pytest

from app.api import errors
from app.api.auth import AuthMiddleware
from app.api.routes import RouteResource, RoutesResource
from app.api.trace import TraceMiddleware
from app.events import Event, Publisher
from app.redis import stream
from app.stores import RouteStore, TokenStore
from harness.procs import wait_until


@pytest.fixture
def client(redis_client):
    publisher = Publisher(redis_client, flush_ms=10)
    app = falcon.App(middleware=[TraceMiddleware(), AuthMiddleware(TokenStore(redis_client))])
    errors.install(app)
    store = RouteStore(redis_client)
    app.add_route("/api/v1/routes", RoutesResource(store, publisher))
    app.add_route("/api/v1/routes/{route_id}", RouteResource(store, publisher))
    yield falcon.testing.TestClient(app)
    publisher.close()


@pytest.fixture
def tokens(redis_client):
    store = TokenStore(redis_client)
    return {name: {"Authorization": f"Bearer {store.issue(name=name, scope=scope, owner=owner)[1]}"}
            for name, scope, owner in (("admin", "admin", "root"), ("alice", "user", "alice"),
                                       ("bob", "user", "bob"))}


ROUTE = {"host": "app.example.test", "targets": ["http://127.0.0.1:9000"]}


def test_crud_with_versions(client, tokens, redis_client):
    created = client.simulate_post("/api/v1/routes", json=ROUTE, headers=tokens["alice"])
    assert created.status_code == 201
    route = created.json
    assert route["owner"] == "alice" and route["version"] == 1
    assert created.headers["Location"] == f"/api/v1/routes/{route['id']}"
    url = f"/api/v1/routes/{route['id']}"

    assert client.simulate_get(url, headers=tokens["alice"]).json["host"] == ROUTE["host"]
    patched = client.simulate_patch(url, json={"version": 1, "strip_prefix": True,
                                               "path_prefix": "/api"}, headers=tokens["alice"])
    assert patched.status_code == 200
    assert (patched.json["version"], patched.json["path_prefix"]) == (2, "/api")
    stale = client.simulate_patch(url, json={"version": 1, "hsts": True},
                                  headers=tokens["alice"])
    assert stale.status_code == 409
    assert client.simulate_patch(url, json={"hsts": True},
                                 headers=tokens["alice"]).status_code == 400
    assert client.simulate_delete(url, params={"version": "1"},
                                  headers=tokens["alice"]).status_code == 409
    assert client.simulate_delete(url, params={"version": "2"},
                                  headers=tokens["alice"]).status_code == 204
    assert client.simulate_get(url, headers=tokens["alice"]).status_code == 404

    def route_events():
        events = [Event.from_entry(i, f) for i, f in redis_client.xrange(stream("route"))]
        return events if len(events) >= 3 else None

    events = wait_until(route_events, timeout=5, what="route events")
    assert [e.type for e in events] == ["route_created", "route_updated", "route_deleted"]
    assert all(e.subject == route["id"] for e in events)
    assert events[0].data["by"] and events[0].data["auth"] == "none"

def test_owners_see_their_own_routes_and_admins_all(client, tokens):
    mine = client.simulate_post("/api/v1/routes", json=ROUTE, headers=tokens["alice"]).json
    client.simulate_post("/api/v1/routes", json={**ROUTE, "host": "bob.example.test"},
                         headers=tokens["bob"])
    url = f"/api/v1/routes/{mine['id']}"
    assert client.simulate_get(url, headers=tokens["bob"]).status_code == 404
    assert client.simulate_patch(url, json={"version": 1, "hsts": True},
                                 headers=tokens["bob"]).status_code == 404
    assert client.simulate_delete(url, headers=tokens["bob"]).status_code == 404
    hosts = [r["host"] for r in client.simulate_get("/api/v1/routes",
                                                    headers=tokens["alice"]).json["items"]]
    assert hosts == ["app.example.test"]
    assert len(client.simulate_get("/api/v1/routes", headers=tokens["admin"]).json["items"]) == 2
    assert client.simulate_get(url, headers=tokens["admin"]).status_code == 200
    assert client.simulate_get("/api/v1/routes").status_code == 401


def test_validation_conflicts_and_hidden_hashes(client, tokens):
    bad = client.simulate_post("/api/v1/routes", json={**ROUTE, "targets": ["ftp://x"]},
                               headers=tokens["alice"])
    assert bad.status_code == 400 and bad.json["field"] == "targets"
    assert client.simulate_post("/api/v1/routes", json={**ROUTE, "version": 3},
                                headers=tokens["alice"]).status_code == 400
    assert client.simulate_post("/api/v1/routes", json={**ROUTE, "owner": "bob"},
                                headers=tokens["alice"]).status_code == 400
    assert client.simulate_post("/api/v1/routes", json=ROUTE,
                                headers=tokens["alice"]).status_code == 201
    taken = client.simulate_post("/api/v1/routes", json=ROUTE, headers=tokens["bob"])
    assert taken.status_code == 409
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    basic = client.simulate_post("/api/v1/routes", json={
        **ROUTE, "host": "basic.example.test",
        "auth": {"type": "basic", "users": {"ann": hashed}}}, headers=tokens["alice"])
    assert basic.status_code == 201
    assert basic.json["auth"] == {"type": "basic", "users": ["ann"]}
    assert hashed not in basic.text
    assert client.simulate_get("/api/v1/routes/not%20an%20id",
                               headers=tokens["alice"]).status_code == 400
