"""Targets of user routes (ARCHITECTURE: Tenancy): only networks the operator allows (by
default everything but loopback, link-local, unspecified, berth's own listeners and Redis),
checked when a user token writes a route and again by the proxy on the address it connects
to. Admin routes may target anything. Nothing here sends traffic off the machine: denied
addresses are never connected to, allowed ones are loopback or never dialled."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from app.events import Event
from app.models import Route
from app.redis import stream
from app.settings import Settings
from app.stores import RouteStore
from app.target_policy import TargetPolicy
from harness.procs import wait_until
from proxy.routing import RouteEntry
from proxy.upstream import TargetDenied, UpstreamPool
from tests.e2e.conftest import request
from tests.support.api import Api, bearer
from tests.support.store import snapshot

DENIED_BY_DEFAULT = ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "::127.0.0.1",
                     "169.254.169.254", "::ffff:169.254.169.254", "fe80::1", "fe80::1%2",
                     "0.0.0.0", "0.1.2.3", "::"]
ALLOWED_BY_DEFAULT = ["10.1.2.3", "192.168.1.1", "192.0.2.10", "2001:db8::1"]


@pytest.fixture
def default_settings(redis_server):
    return Settings.from_env({}, redis_url=redis_server.url)


@pytest.fixture
def strict_api(default_settings, redis_client):
    """The API with the default target policy."""
    harness = Api(default_settings, redis_client)
    harness.alice = harness.token("user", "alice", "alice")
    yield harness
    harness.close()


def test_the_default_policy_refuses_local_link_local_and_unspecified(default_settings):
    policy = TargetPolicy.from_settings(default_settings)
    for address in DENIED_BY_DEFAULT:
        assert policy.refusal(address, 80) is not None, address
    for address in ALLOWED_BY_DEFAULT:
        assert policy.refusal(address, 80) is None, address


def test_listing_loopback_opens_it_but_never_the_platforms_listeners_or_redis(settings):
    policy = TargetPolicy.from_settings(settings)  # the tests' settings list 127.0.0.0/8
    assert policy.refusal("127.0.0.1", 9) is None and policy.refusal("::1", 9) is None
    assert policy.refusal("169.254.169.254", 80) is not None  # not listed: still refused
    redis_port = urlsplit(settings.redis_url).port
    for port in (settings.web_port, settings.http_port, settings.https_port, redis_port):
        for address in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "0.0.0.0"):
            assert policy.refusal(address, port) is not None, (address, port)
    only_private = TargetPolicy(["10.0.0.0/8"])
    assert only_private.refusal("10.9.9.9", 80) is None
    assert only_private.refusal("192.0.2.10", 80) is not None


def refused(api, method, path, secret, status, **kwargs):
    api.publisher.flush()
    before = snapshot(api.redis)
    answer = api.client.simulate_request(method, path, headers=bearer(secret), **kwargs)
    api.publisher.flush()
    assert answer.status_code == status, (method, path, answer.text)
    assert set(answer.json) >= {"title", "description"}, answer.text
    assert snapshot(api.redis) == before, (method, path)
    return answer


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:9", "http://localhost:9", "http://169.254.169.254/latest/meta-data",
    "http://[::ffff:127.0.0.1]:9", "http://[::1]:9", "http://0.0.0.0:9", "https://[fe80::1]/"])
def test_a_user_route_to_a_denied_target_is_refused_on_create_and_patch(strict_api, target):
    api = strict_api
    answer = refused(api, "POST", "/api/v1/routes", api.alice, 403,
                     json={"host": "alice.test", "targets": ["http://192.0.2.10", target]})
    assert answer.json["field"] == "targets"
    made = api.client.simulate_post("/api/v1/routes", headers=bearer(api.alice),
                                    json={"host": "alice.test", "targets": ["http://192.0.2.10"]})
    assert made.status_code == 201 and made.json["restricted"] is True, made.text
    refused(api, "PATCH", f"/api/v1/routes/{made.json['id']}", api.alice, 403,
            json={"version": made.json["version"], "targets": [target]})


def test_admin_routes_may_target_anything_and_are_not_restricted(strict_api):
    api = strict_api
    made = api.client.simulate_post("/api/v1/routes", headers=bearer(api.admin),
                                    json={"host": "ops.test", "targets": ["http://127.0.0.1:9"]})
    assert made.status_code == 201 and made.json["restricted"] is False, made.text
    # A user's edit of a route an admin pointed at loopback is the user's write: refused.
    mine = api.client.simulate_post("/api/v1/routes", headers=bearer(api.alice),
                                    json={"host": "a.test", "targets": ["http://192.0.2.10"]})
    store = RouteStore(api.redis)
    store.update(store.get(mine.json["id"]).replace(targets=("http://127.0.0.1:9",),
                                                    restricted=False))
    refused(api, "PATCH", f"/api/v1/routes/{mine.json['id']}", api.alice, 403,
            json={"version": mine.json["version"] + 1, "hsts": True})


def test_the_platforms_own_ports_are_refused_even_with_loopback_allowed(api):
    alice = api.token("user", "alice", "alice")
    redis_port = urlsplit(api.settings.redis_url).port
    for port in (api.settings.web_port, api.settings.http_port, redis_port):
        refused(api, "POST", "/api/v1/routes", alice, 403,
                json={"host": "alice.test", "targets": [f"http://localhost:{port}"]})


def test_the_pool_connects_a_restricted_target_only_to_allowed_addresses():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    try:
        pool = UpstreamPool(policy=TargetPolicy(["10.0.0.0/8"]))
        target = RouteEntry.build(Route(id="rt_x", host="h.test", owner="a",
                                        targets=(f"http://localhost:{port}",))).targets[0]
        open_conn = pool.connect(target)  # unrestricted: connects
        listener.accept()[0].close()
        pool.release(open_conn)
        with pytest.raises(TargetDenied):  # the pooled, unchecked connection is not reused
            pool.acquire(target, restricted=True)
        with pytest.raises(TimeoutError):
            listener.accept()  # and nothing new was connected
        assert not pool.is_down(target)
        allowed = UpstreamPool(policy=TargetPolicy(["127.0.0.0/8", "::1/128"]))
        conn = allowed.acquire(target, restricted=True)
        assert conn.checked
        listener.accept()[0].close()
        conn.close()
    finally:
        listener.close()


def _wait_routed(redis_client, proxy, route: Route) -> Event:
    """A request through the proxy until its event names `route`; that event."""
    def routed():
        status, _headers, _body = request(proxy.port, "GET", "/", route.host)
        events = [Event.from_entry(i, f) for i, f in redis_client.xrange(stream("request"))]
        mine = [e for e in events if e.data.get("route_id") == route.id]
        return (status, mine[-1]) if mine else None
    return wait_until(routed, timeout=15, what=f"proxy serving {route.host}")


def test_the_proxy_checks_the_address_it_connects_to(redis_client, proxy, backend):
    """As if a name had resolved elsewhere when the route was written (DNS rebinding): the
    stored restricted route names targets the proxy must refuse at connect time."""
    store = RouteStore(redis_client)
    redis_port = redis_client.connection_pool.connection_kwargs["port"]
    for host, target in (("own.test", f"http://localhost:{proxy.port}"),
                         ("store.test", f"http://localhost:{redis_port}")):
        route = store.create(store.new("alice", Route.clean(
            {"host": host, "targets": [target]})).replace(restricted=True))
        status, event = _wait_routed(redis_client, proxy, route)
        assert status == 502 and event.data["error"] == "upstream_target_denied", event.data
    allowed = store.create(store.new("alice", Route.clean(
        {"host": "fine.test", "targets": [backend.url]})).replace(restricted=True))
    status, event = _wait_routed(redis_client, proxy, allowed)
    assert status == 200, event.data
