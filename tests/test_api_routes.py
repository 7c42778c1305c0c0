"""/api/v1/routes in process (create_api, falcon TestClient) over a real Redis: versions,
owner scoping, validation, events, and automatic certificates for a route's host (the
certificate record and the issuance enqueued on the real Redis broker)."""

from __future__ import annotations

import bcrypt
import dramatiq
import pytest

from app.events import Event
from app.redis import stream
from app.stores import CertificateStore, TokenStore
from harness.procs import wait_until
from tests.support.api import Api

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def client(settings, redis_client):
    api = Api(settings, redis_client)
    yield api.client
    api.close()


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


# -- automatic certificates -------------------------------------------------------------------


def issued(redis_client) -> list[tuple[str, str]]:
    """(certificate, trace id) of each issue_certificate message waiting on the broker."""
    messages = [dramatiq.Message.decode(raw.encode())
                for raw in redis_client.hvals("dramatiq:certificates.msgs")]
    return sorted((m.kwargs["certificate"], m.options["trace_id"]) for m in messages
                  if m.actor_name == "issue_certificate")


def route_events(redis_client, count: int) -> list[Event]:
    def read():
        events = [Event.from_entry(i, f) for i, f in redis_client.xrange(stream("route"))]
        return events if len(events) >= count else None

    return wait_until(read, timeout=5, what=f"{count} route events")


def test_auto_certificate_requests_one_for_the_host(client, tokens, redis_client):
    created = client.simulate_post("/api/v1/routes", json={**ROUTE, "auto_certificate": True},
                                   headers={**tokens["alice"], "X-Trace-Id": TRACE})
    assert created.status_code == 201, created.text
    assert created.json["auto_certificate"] is True
    cert = CertificateStore(redis_client).get("auto-app-example-test")
    assert (cert.domains, cert.owner, cert.status) == (("app.example.test",), "alice", "pending")
    assert issued(redis_client) == [("auto-app-example-test", TRACE)]
    [event] = route_events(redis_client, 1)
    assert event.type == "route_created" and event.data["certificate"] == cert.id
    assert event.trace_id == TRACE


def test_auto_certificate_reuses_a_covering_certificate(client, tokens, redis_client):
    made = client.simulate_post("/api/v1/certificates", headers=tokens["alice"], json={
        "name": "site", "domains": ["www.example.test", "app.example.test"]})
    assert made.status_code == 202
    created = client.simulate_post("/api/v1/routes", json={**ROUTE, "auto_certificate": True},
                                   headers=tokens["alice"])
    assert created.status_code == 201
    assert [c.id for c in CertificateStore(redis_client).list()] == ["site"]
    assert [name for name, _trace in issued(redis_client)] == ["site"]  # only its own
    assert route_events(redis_client, 1)[0].data["certificate"] == "site"


def test_auto_certificate_on_update_follows_the_host(client, tokens, redis_client):
    route = client.simulate_post("/api/v1/routes", json=ROUTE, headers=tokens["alice"]).json
    url = f"/api/v1/routes/{route['id']}"
    assert issued(redis_client) == []
    on = client.simulate_patch(url, json={"version": 1, "auto_certificate": True},
                               headers={**tokens["alice"], "X-Trace-Id": TRACE})
    assert on.status_code == 200 and on.json["auto_certificate"] is True
    moved = client.simulate_patch(url, json={"version": 2, "host": "new.example.test"},
                                  headers=tokens["alice"])
    assert moved.status_code == 200
    again = client.simulate_patch(url, json={"version": 3, "hsts": True},
                                  headers=tokens["alice"])
    assert again.status_code == 200  # the covering certificate is reused, not requested again
    names = [name for name, _trace in issued(redis_client)]
    assert names == ["auto-app-example-test", "auto-new-example-test"]
    events = route_events(redis_client, 4)
    assert [e.data.get("certificate") for e in events] == [
        None, "auto-app-example-test", "auto-new-example-test", "auto-new-example-test"]


def test_wildcard_hosts_cannot_have_an_automatic_certificate(client, tokens, redis_client):
    wildcard = {**ROUTE, "host": "*.example.test"}
    refused = client.simulate_post("/api/v1/routes", json={**wildcard, "auto_certificate": True},
                                   headers=tokens["alice"])
    assert refused.status_code == 400 and refused.json["field"] == "auto_certificate"
    assert "wildcard" in refused.json["description"]
    assert client.simulate_get("/api/v1/routes", headers=tokens["alice"]).json["items"] == []

    route = client.simulate_post("/api/v1/routes", json=wildcard, headers=tokens["alice"]).json
    turned_on = client.simulate_patch(f"/api/v1/routes/{route['id']}", headers=tokens["alice"],
                                      json={"version": 1, "auto_certificate": True})
    # Asked of the stored wildcard (or a wildcard asked of a route with one): a conflict with
    # the route as stored, 409; both in one request is a bad request, 400, as above.
    assert turned_on.status_code == 409 and turned_on.json["field"] == "auto_certificate"
    exact = client.simulate_post("/api/v1/routes", json={**ROUTE, "auto_certificate": True},
                                 headers=tokens["alice"]).json
    widened = client.simulate_patch(f"/api/v1/routes/{exact['id']}", headers=tokens["alice"],
                                    json={"version": 1, "host": "*.app.example.test"})
    assert widened.status_code == 409 and widened.json["field"] == "auto_certificate"
    versions = {r["host"]: r["version"] for r in client.simulate_get(
        "/api/v1/routes", headers=tokens["alice"]).json["items"]}
    assert versions == {"*.example.test": 1, "app.example.test": 1}  # both unchanged
    assert [name for name, _trace in issued(redis_client)] == ["auto-app-example-test"]


def test_refused_routes_request_no_certificate(client, tokens, redis_client):
    assert client.simulate_post("/api/v1/routes", json=ROUTE,
                                headers=tokens["bob"]).status_code == 201
    taken = client.simulate_post("/api/v1/routes", json={**ROUTE, "auto_certificate": True},
                                 headers=tokens["alice"])
    assert taken.status_code == 409 and taken.json["field"] == "host"
    # bob holds the name the automatic certificate would take, for another host
    client.simulate_post("/api/v1/certificates", headers=tokens["bob"], json={
        "name": "auto-shop-example-test", "domains": ["elsewhere.example.test"]})
    clash = client.simulate_post("/api/v1/routes", headers=tokens["alice"], json={
        **ROUTE, "host": "shop.example.test", "auto_certificate": True})
    assert clash.status_code == 409 and "auto-shop-example-test" in clash.json["description"]
    assert client.simulate_get("/api/v1/routes", headers=tokens["alice"]).json["items"] == []
    assert [c.owner for c in CertificateStore(redis_client).list()] == ["bob"]
    assert [name for name, _trace in issued(redis_client)] == ["auto-shop-example-test"]
