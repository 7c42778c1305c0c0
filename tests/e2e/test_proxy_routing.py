"""Routing through the real proxy: hosts, wildcards, prefixes, header rules, ACME, events."""

from __future__ import annotations

import json

import pytest
import redis

from app.stores import ChallengeStore
from app.tracing import new_trace_id
from tests.e2e.conftest import request, request_events
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e


def echo(proxy, path, host, **kwargs):
    status, headers, body = request(proxy.port, "GET", path, host, **kwargs)
    assert status == 200, body
    return json.loads(body), headers


def test_exact_host_beats_wildcard_and_longest_prefix_wins(proxy, routes, backend, backend_b):
    routes.add("*.example.test", [backend.url])
    routes.add("app.example.test", [backend_b.url])
    routes.add("app.example.test", [backend.url], path_prefix="/api")

    assert echo(proxy, "/x", "other.example.test")[0]["backend"] == "a"
    assert echo(proxy, "/x", "app.example.test")[0]["backend"] == "b"
    assert echo(proxy, "/api/users", "app.example.test")[0]["backend"] == "a"
    assert echo(proxy, "/apix", "app.example.test")[0]["backend"] == "b"  # segment boundary
    # Host matching ignores case, port and a trailing dot.
    assert echo(proxy, "/", "APP.Example.test.:8080")[0]["backend"] == "b"
    # A wildcard covers one label only.
    status, _, _ = request(proxy.port, "GET", "/", "a.b.example.test")
    assert status == 404


def test_exact_host_without_matching_prefix_falls_back_to_wildcard(proxy, routes, backend,
                                                                   backend_b):
    routes.add("*.fall.test", [backend.url])
    routes.add("app.fall.test", [backend_b.url], path_prefix="/only")
    assert echo(proxy, "/elsewhere", "app.fall.test")[0]["backend"] == "a"
    assert echo(proxy, "/only/here", "app.fall.test")[0]["backend"] == "b"


def test_strip_prefix_and_query_string(proxy, routes, backend):
    routes.add("strip.test", [backend.url], path_prefix="/svc", strip_prefix=True)
    routes.add("keep.test", [backend.url], path_prefix="/svc")
    assert echo(proxy, "/svc/a/b?x=1&y=%20", "strip.test")[0]["path"] == "/a/b?x=1&y=%20"
    assert echo(proxy, "/svc", "strip.test")[0]["path"] == "/"
    assert echo(proxy, "/svc/a%2Fb", "strip.test")[0]["path"] == "/a%2Fb"  # bytes kept
    assert echo(proxy, "/svc/a?q", "keep.test")[0]["path"] == "/svc/a?q"


def test_target_base_path(proxy, routes, backend):
    routes.add("base.test", [backend.url + "/v2"])
    assert echo(proxy, "/items", "base.test")[0]["path"] == "/v2/items"


def test_preserve_host(proxy, routes, backend):
    routes.add("preserve.test", [backend.url], preserve_host=True)
    routes.add("rewrite.test", [backend.url])
    sent = dict(echo(proxy, "/", "preserve.test:8080")[0]["headers"])
    assert sent["Host"] == "preserve.test:8080"
    sent = dict(echo(proxy, "/", "rewrite.test")[0]["headers"])
    assert sent["Host"] == f"127.0.0.1:{backend.port}"
    assert sent["X-Forwarded-Host"] == "rewrite.test"


def test_header_rules(proxy, routes, backend):
    routes.add("rules.test", [backend.url],
               request_headers={"X-Added": "1", "User-Agent": None},
               response_headers={"X-Frame-Options": "DENY", "X-Backend": None})
    body, headers = echo(proxy, "/", "rules.test", headers={"User-Agent": "probe/1"})
    sent = dict(body["headers"])
    assert sent["X-Added"] == "1"
    assert "User-Agent" not in sent
    assert headers["X-Frame-Options"] == "DENY"
    assert "X-Backend" not in headers


def test_unknown_host_is_a_short_404_naming_no_internals(proxy, routes, backend):
    routes.add("known.test", [backend.url])
    status, headers, body = request(proxy.port, "GET", "/", "unknown.test")
    assert status == 404
    answer = json.loads(body)
    assert set(answer) == {"title", "description", "trace_id"}
    assert "127.0.0.1" not in body.decode() and "rt_" not in body.decode()
    assert headers["Server"] == "berth"
    assert headers["X-Trace-Id"] == answer["trace_id"]


def test_dot_segments_are_refused(proxy, routes, backend):
    routes.add("dots.test", [backend.url], path_prefix="/public")
    status, _, _ = request(proxy.port, "GET", "/public/../admin", "dots.test")
    assert status == 400


def test_acme_challenge_is_answered_on_every_host_before_routes(proxy, routes, backend,
                                                                redis_client):
    routes.add("acme.test", [backend.url])
    token = "tok_" + "A" * 30
    ChallengeStore(redis_client).put(token, f"{token}.thumbprint")
    for host in ("acme.test", "no-route.test"):
        status, headers, body = request(proxy.port, "GET",
                                        f"/.well-known/acme-challenge/{token}", host)
        assert (status, body) == (200, f"{token}.thumbprint".encode())
        assert headers["Content-Type"].startswith("text/plain")
    status, _, _ = request(proxy.port, "GET", "/.well-known/acme-challenge/unknown-token-xyz",
                           "acme.test")
    assert status == 404
    status, _, _ = request(proxy.port, "GET", "/.well-known/acme-challenge/bad$token%21",
                           "acme.test")
    assert status == 404
    assert backend.requests.count(("GET", f"/.well-known/acme-challenge/{token}")) == 0


def test_each_request_is_one_event(proxy, routes, backend, redis_client):
    route = routes.add("events.test", [backend.url])
    trace = new_trace_id()
    status, _, _ = request(proxy.port, "POST", "/echo/x?secret=1", "events.test",
                           headers={"X-Trace-Id": trace, "Authorization": "Bearer hunter2",
                                    "Content-Type": "text/plain"}, body=b"12345")
    assert status == 200
    [event] = request_events(redis_client, trace)
    assert event.type == "proxy_request_completed"
    assert event.source == "proxy"
    data = event.data
    assert data["host"] == "events.test" and data["route_id"] == route.id
    assert data["method"] == "POST" and data["path"] == "/echo/x"  # no query string
    assert data["status"] == 200 and data["bytes_in"] == 5 and data["bytes_out"] > 0
    assert data["upstream"] == backend.url and data["client_ip"] == "127.0.0.1"
    assert data["error"] == "" and data["duration_ms"] >= 0
    assert "hunter2" not in json.dumps(event.as_dict())

    trace = new_trace_id()
    request(proxy.port, "GET", "/", "nobody.test", headers={"X-Trace-Id": trace})
    [event] = request_events(redis_client, trace)
    assert event.type == "proxy_request_completed"
    assert (event.data["status"], event.data["error"]) == (404, "no_route")


def test_targets_changed_without_an_announcement_are_found_when_every_old_one_refuses(
        proxy, routes, backend, monkeypatch):
    """A redeploy stops the old containers once its drain is over, trusting every proxy worker
    to have heard of the new targets by then. A worker that did not (the pub/sub message lost,
    or late on a loaded machine) reloads the table when all of its targets refuse, and sends
    the request to the new ones instead of answering 502."""
    route = routes.add("stale.test", [f"http://127.0.0.1:{free_port()}"])  # nothing listens
    with monkeypatch.context() as quiet:  # the change is stored, its announcement lost
        quiet.setattr(redis.client.Pipeline, "publish", lambda self, *args, **kwargs: self)
        routes.store.update(route.replace(targets=(backend.url,)))
    # New connections, so both workers answer; each still holds the old table (its periodic
    # check runs every 2 s).
    assert [request(proxy.port, "GET", "/", "stale.test")[0] for _ in range(8)] == [200] * 8
