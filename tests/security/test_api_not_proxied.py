"""The management API is never reachable through the proxy unless a route says so: whatever
Host a client names (the API's own address, localhost, an unknown name, none), the proxy
answers 404 itself, in a body that names nothing internal; a route to the API is the only
way through."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import raw_exchange, request
from tests.hostile.wire import responses

pytestmark = pytest.mark.e2e

API_PATHS = ["/api/v1/tokens", "/api/v1/routes", "/openapi.json", "/healthz", "/metrics",
             "/dashboard", "/api/v1/orchestrator/status", "/api/v1/events/stream"]
# Words that would tell a client what runs behind the proxy.
INTERNALS = ["redis", "gunicorn", "falcon", "python", "traceback", "127.0.0.1", "localhost",
             "berth-web", "/api/", "openapi", "dramatiq", "route_id"]


def api_hosts(web_url: str, proxy_port: int) -> list[str]:
    netloc = urlsplit(web_url).netloc
    return [netloc, netloc.split(":")[0], f"localhost:{netloc.split(':')[1]}", "localhost",
            "127.0.0.1", f"127.0.0.1:{proxy_port}", f"localhost:{proxy_port}", "[::1]",
            "berth", "api", "web", "unknown.test", "0.0.0.0"]


def assert_bare_404(status: int, headers, body: bytes, web_port: str) -> None:
    assert status == 404, body[:200]
    answer = json.loads(body)
    assert set(answer) == {"title", "description", "trace_id"}
    text = body.decode().lower()
    assert not [word for word in INTERNALS + [web_port] if word in text], text
    assert headers.get("Server") == "berth"
    assert "X-Backend" not in headers


def test_no_host_reaches_the_api_without_a_route(proxy, web, routes, backend):
    routes.add("site.test", [backend.url])  # a table with a route, none for these hosts
    _proc, web_url = web
    web_port = web_url.rsplit(":", 1)[1]
    for host in api_hosts(web_url, proxy.port):
        for path in API_PATHS:
            status, headers, body = request(proxy.port, "GET", path, host,
                                            headers={"Authorization": "Bearer brt_x"})
            assert_bare_404(status, headers, body, web_port)


def test_absolute_targets_and_connect_do_not_reach_the_api(proxy, web):
    _proc, web_url = web
    netloc = urlsplit(web_url).netloc
    port = netloc.split(":")[1]
    for line in (f"GET {web_url}/api/v1/tokens HTTP/1.1", f"GET http://localhost:{port}/healthz"
                 " HTTP/1.1", "OPTIONS * HTTP/1.1", f"CONNECT {netloc} HTTP/1.1"):
        answer = raw_exchange(proxy.port, line.encode() + b"\r\nHost: " + netloc.encode()
                              + b"\r\nConnection: close\r\n\r\n")
        [(status, headers, body)] = responses(answer)
        assert_bare_404(status, headers, body, port)


def test_a_route_to_the_api_is_the_way_through(proxy, web, routes):
    """The control: once a route names the API as its target, the proxy forwards to it and
    the API does its own authentication (a request without a token is refused by it)."""
    _proc, web_url = web
    routes.add("manage.test", [web_url])
    status, _headers, body = request(proxy.port, "GET", "/healthz", "manage.test")
    assert status == 200
    status, headers, body = request(proxy.port, "GET", "/api/v1/tokens", "manage.test")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
