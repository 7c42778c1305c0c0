"""Hostname ownership (ARCHITECTURE: Tenancy): a host belongs to the first owner to route it
until its last route goes; no other owner routes it, a path under it or a wildcard covering
it, nor a wildcard over it; names under BASE_DOMAIN belong to services; admins override only
explicitly. Every refusal leaves the store as it was and names nothing of the holder's."""

from __future__ import annotations

import pytest
from falcon.testing import TestClient

from app import redis as keys
from app.api import create_api
from app.errors import Conflict
from app.models import Route, Service, fresh_fields
from app.stores import hosts
from app.stores.routes import RouteStore
from app.stores.services import ServiceStore
from proxy.routing import wildcard_of
from tests.support.api import bearer
from tests.support.store import snapshot

TARGET = "http://127.0.0.1:9"


def call(api, method: str, path: str, secret: str, **kwargs):
    return api.client.simulate_request(method, path, headers=bearer(secret), **kwargs)


def route(api, secret: str, host: str, path: str = "/", **params):
    return call(api, "POST", "/api/v1/routes", secret, params=params or None,
                json={"host": host, "targets": [TARGET], "path_prefix": path})


@pytest.fixture
def world(api):
    """bob holds app.test (two paths) and a.example.test; alice and the admin own nothing."""
    api.alice = api.token("user", "alice", "alice")
    api.bob = api.token("user", "bob", "bob")
    api.bob_routes = [route(api, api.bob, "app.test").json,
                      route(api, api.bob, "app.test", "/api").json,
                      route(api, api.bob, "a.example.test").json]
    assert all("id" in r for r in api.bob_routes), api.bob_routes
    return api


def refused(api, method: str, path: str, secret: str, status: int, *, secrets_of=(),
            **kwargs):
    """The answer: `status`, berth's error body naming none of bob's ids or other hosts,
    and not one key of the store changed."""
    api.publisher.flush()
    before = snapshot(api.redis)
    answer = call(api, method, path, secret, **kwargs)
    api.publisher.flush()
    assert answer.status_code == status, (method, path, answer.text)
    assert set(answer.json) >= {"title", "description"}, answer.text
    for route_ in getattr(api, "bob_routes", []):  # but the one the caller itself names
        assert route_["id"] in path or route_["id"] not in answer.text
    for word in ("bob", *secrets_of):
        assert word not in answer.text, answer.text
    assert snapshot(api.redis) == before, (method, path)
    return answer


def post_route(api, secret, host, path="/", status=409, secrets_of=(), **params):
    return refused(api, "POST", "/api/v1/routes", secret, status, params=params or None,
                   secrets_of=secrets_of,
                   json={"host": host, "targets": [TARGET], "path_prefix": path})


def test_another_owners_host_its_paths_and_wildcards_over_it_are_refused(world):
    api = world
    for host, path in (("app.test", "/"), ("app.test", "/bob"), ("APP.test.", "/x"),
                       ("*.test", "/"), ("*.example.test", "/")):
        answer = post_route(api, api.alice, host, path, secrets_of=("a.example.test",))
        assert answer.json["field"] == "host"
    # Neighbours that are not covered stay free: the parent, two labels down, other names.
    for host in ("example.test", "x.a.example.test", "*.a.example.test", "alice.test"):
        assert route(api, api.alice, host).status_code == 201, host


def test_a_wildcard_held_by_another_owner_covers_exact_hosts_one_label_below(world):
    api = world
    assert route(api, api.alice, "*.shop.test").status_code == 201
    post_route(api, api.bob, "x.shop.test", secrets_of=("alice",))
    post_route(api, api.bob, "*.shop.test", "/b", secrets_of=("alice",))
    assert route(api, api.bob, "x.y.shop.test").status_code == 201  # two labels: not covered
    assert route(api, api.bob, "shop.test").status_code == 201  # nor the parent itself


def test_patch_onto_another_owners_host_is_refused_and_delete_of_theirs_is_404(world):
    api = world
    mine = route(api, api.alice, "alice.test").json
    for host in ("app.test", "*.example.test"):
        refused(api, "PATCH", f"/api/v1/routes/{mine['id']}", api.alice, 409,
                json={"version": mine["version"], "host": host})
    theirs = api.bob_routes[0]
    refused(api, "PATCH", f"/api/v1/routes/{theirs['id']}", api.alice, 404,
            json={"version": theirs["version"], "targets": ["http://127.0.0.1:10"]})
    refused(api, "DELETE", f"/api/v1/routes/{theirs['id']}", api.alice, 404)
    # The holder itself moves freely within what it holds.
    moved = call(api, "PATCH", f"/api/v1/routes/{theirs['id']}", api.bob,
                 json={"version": theirs["version"], "path_prefix": "/v2"})
    assert moved.status_code == 200, moved.text


def test_the_claim_lasts_until_the_holders_last_route_goes(world):
    api = world
    first, second, _other = api.bob_routes
    assert call(api, "DELETE", f"/api/v1/routes/{first['id']}", api.bob).status_code == 204
    post_route(api, api.alice, "app.test", "/x")  # /api still holds it
    assert call(api, "DELETE", f"/api/v1/routes/{second['id']}", api.bob).status_code == 204
    assert route(api, api.alice, "app.test").status_code == 201
    post_route(api, api.bob, "app.test", "/api", secrets_of=("alice",))
    # A host given up by moving the route away is free too.
    moved = call(api, "PATCH", f"/api/v1/routes/{_other['id']}", api.bob,
                 json={"version": _other["version"], "host": "b.example.test"})
    assert moved.status_code == 200, moved.text
    assert route(api, api.alice, "a.example.test").status_code == 201
    post_route(api, api.alice, "*.example.test", secrets_of=("b.example.test",))


def test_admins_override_only_explicitly_and_users_cannot_override(world):
    api = world
    post_route(api, api.admin, "app.test", "/admin")
    post_route(api, api.alice, "app.test", "/x", status=403, override="true")
    answer = route(api, api.admin, "app.test", "/admin", override="true")
    assert answer.status_code == 201, answer.text
    # The host stays bob's while his routes last, then passes to the admin's owner.
    post_route(api, api.alice, "app.test", "/y")
    for r in api.bob_routes[:2]:
        assert call(api, "DELETE", f"/api/v1/routes/{r['id']}", api.bob).status_code == 204
    post_route(api, api.bob, "app.test")
    assert hosts.read_refusal(api.redis, "app.test", answer.json["owner"]) is None


def test_names_under_base_domain_are_reserved_for_their_services(world):
    api = world
    base = api.settings.base_domain
    for host in (f"web.{base}", f"*.{base}", base, f"x.web.{base}"):
        answer = post_route(api, api.alice, host, status=403)
        assert answer.json["field"] == "host"
    ServiceStore(api.redis).create(Service(id="web", image="nginx:1.27", port=80,
                                           owner="alice", hostname=f"web.{base}",
                                           **fresh_fields()))
    assert route(api, api.alice, f"web.{base}", "/api").status_code == 201
    post_route(api, api.bob, f"web.{base}", "/b", status=403, secrets_of=("alice",))
    post_route(api, api.admin, f"shop.{base}", status=403)
    assert route(api, api.admin, f"shop.{base}", override="true").status_code == 201


def test_certificates_for_another_owners_or_reserved_names_are_refused(world):
    api = world
    base = api.settings.base_domain
    for domains, status in ((["alice.test", "app.test"], 409), ([f"web.{base}"], 403)):
        refused(api, "POST", "/api/v1/certificates", api.alice, status,
                json={"name": "c", "domains": domains})
    answer = call(api, "POST", "/api/v1/certificates", api.alice,
                  json={"name": "c", "domains": ["x.example.test"]})
    assert answer.status_code == 202, answer.text
    # A route asking for a certificate is refused before any certificate is asked for.
    refused(api, "POST", "/api/v1/routes", api.alice, 409,
            json={"host": "app.test", "path_prefix": "/x", "targets": [TARGET],
                  "auto_certificate": True})


def test_service_hostnames_of_another_owner_or_reserved_are_refused(world):
    api = world
    base = api.settings.base_domain
    body = {"image": "nginx:1.27", "port": 80}
    refused(api, "POST", "/api/v1/services", api.alice, 409,
            json={**body, "name": "shop", "hostname": "app.test"})
    refused(api, "POST", "/api/v1/services", api.alice, 403,
            json={**body, "name": "shop", "hostname": f"web.{base}"})
    assert route(api, api.admin, f"held.{base}", override="true").status_code == 201
    refused(api, "POST", "/api/v1/services", api.alice, 409, json={**body, "name": "held"})


def test_the_store_refuses_a_claimed_host_to_any_writer(world):
    """The worker writes service routes straight to the store: the claim holds there too."""
    api = world
    store = RouteStore(api.redis)
    api.publisher.flush()
    before = snapshot(api.redis)
    for host in ("app.test", "*.example.test"):
        with pytest.raises(Conflict) as refusal:
            store.create(RouteStore.new("alice", {"host": host, "targets": (TARGET,)}))
        assert "bob" not in refusal.value.description
    assert snapshot(api.redis) == before
    store.create(Route(id="rt_svc_x", host="app.test", path_prefix="/svc", targets=(TARGET,),
                       owner="alice", **fresh_fields()), override=True)


def test_admin_only_neighbours_stay_admin_only(world):
    api = world
    refused(api, "PUT", "/api/v1/orchestrator/alert-rules", api.alice, 403,
            json={"rules": {"error_rate": {"threshold": 0.5}}})
    refused(api, "GET", "/api/v1/orchestrator/alert-rules", api.alice, 403)
    refused(api, "POST", "/api/v1/orchestrator/alerts/al_0/ack", api.alice, 403)


@pytest.mark.parametrize("host", ["a.example.test", "x.y.example.test", "example.test", "test"])
def test_claims_use_the_routers_wildcard_rule(host):
    assert hosts.covering_wildcard(host) == wildcard_of(host)


def test_routes_stored_before_claims_were_kept_claim_their_hosts_once(api):
    """An upgrade: routes whose hosts have no claim yet (as before tenancy) get them built
    from every stored route, oldest first, before the web process answers a request."""
    api.alice = api.token("user", "alice", "alice")
    store = RouteStore(api.redis)
    older = store.create(RouteStore.new("bob", {"host": "old.test", "targets": [TARGET]}))
    store.create(RouteStore.new("alice", {"host": "old.test", "path_prefix": "/alice",
                                          "targets": [TARGET]}), override=True)
    store.create(RouteStore.new("bob", {"host": "b.legacy.test", "targets": [TARGET]}))
    for host in ("old.test", "b.legacy.test"):  # as an older berth left them: no claims
        api.redis.delete(keys.host_routes(host))
    api.redis.delete(keys.HOST_OWNERS, keys.hosts_under("legacy.test"), keys.HOST_CLAIMS_BUILT)
    fresh = TestClient(create_api(api.settings, api.redis, api.broker))  # a new web process
    answer = fresh.simulate_post("/api/v1/routes", headers=bearer(api.alice), json={
        "host": "*.legacy.test", "targets": [TARGET]})
    assert answer.status_code == 409, answer.text
    answer = fresh.simulate_post("/api/v1/routes", headers=bearer(api.alice), json={
        "host": "old.test", "path_prefix": "/more", "targets": [TARGET]})
    assert answer.status_code == 409, answer.text  # bob routed old.test first
    assert api.redis.hget(keys.HOST_OWNERS, "old.test") == older.owner
    assert api.redis.hgetall(keys.host_routes("old.test")) == {"bob": "1", "alice": "1"}
    assert api.redis.exists(keys.HOST_CLAIMS_BUILT)
