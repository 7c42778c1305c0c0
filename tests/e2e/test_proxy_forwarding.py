"""Forwarding through the real proxy: headers each way, trace ids, errors, balancing, retries."""

from __future__ import annotations

import http.client
import json

import pytest

from app.tracing import new_trace_id
from harness.procs import free_port
from tests.e2e.backends import HttpBackend
from tests.e2e.conftest import request, request_events

pytestmark = pytest.mark.e2e


def sent_headers(body: bytes) -> dict[str, str]:
    return dict(json.loads(body)["headers"])


def test_hop_by_hop_headers_are_removed_both_ways(proxy, routes, backend):
    routes.add("hop.test", [backend.url])
    status, _, body = request(proxy.port, "GET", "/echo", "hop.test", headers={
        "Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "1", "Keep-Alive": "300",
        "TE": "trailers", "Proxy-Authorization": "Basic eDp5", "X-Stays": "1"})
    assert status == 200
    sent = {k.lower() for k in sent_headers(body)}
    assert not sent & {"x-drop-me", "keep-alive", "te", "proxy-authorization"}
    assert "x-stays" in sent

    status, headers, body = request(proxy.port, "GET", "/hop", "hop.test")
    assert (status, body) == (200, b"hop")
    names = {k.lower() for k in headers}
    assert not names & {"x-private", "keep-alive", "proxy-authenticate", "trailer"}
    assert headers["X-Kept"] == "yes"


def test_forwarded_headers_from_an_untrusted_client_are_replaced(proxy, routes, backend):
    routes.add("fwd.test", [backend.url])
    status, _, body = request(proxy.port, "GET", "/echo", "fwd.test", headers={
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.test", "Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6",
        "X-Berth-User": "root", "X-Berth-Anything": "1"})
    assert status == 200
    sent = sent_headers(body)
    assert sent["X-Forwarded-For"] == "127.0.0.1"
    assert sent["X-Forwarded-Proto"] == "http"
    assert sent["X-Forwarded-Host"] == "fwd.test"
    assert sent["Forwarded"] == 'for=127.0.0.1;host="fwd.test";proto=http'
    assert sent["X-Real-IP"] == "127.0.0.1"
    assert not any(k.lower().startswith("x-berth-") for k in sent)


def test_forwarded_headers_from_a_trusted_proxy_are_extended(proxy, routes, backend,
                                                             redis_client):
    routes.add("trusted.test", [backend.url])
    trace = new_trace_id()
    status, _, body = request(proxy.port, "GET", "/echo", "trusted.test", source="127.0.0.2",
                              headers={"X-Forwarded-For": "203.0.113.9",
                                       "X-Forwarded-Proto": "https",
                                       "X-Forwarded-Host": "public.test",
                                       "Forwarded": "for=203.0.113.9", "X-Trace-Id": trace})
    assert status == 200
    sent = sent_headers(body)
    assert sent["X-Forwarded-For"] == "203.0.113.9, 127.0.0.2"
    assert sent["X-Forwarded-Proto"] == "https"
    assert sent["X-Forwarded-Host"] == "public.test"
    assert sent["Forwarded"] == 'for=203.0.113.9, for=127.0.0.2;host="trusted.test";proto=http'
    assert sent["X-Real-IP"] == "203.0.113.9"
    [event] = request_events(redis_client, trace)
    assert event.data["client_ip"] == "203.0.113.9"


def test_trace_ids_are_propagated_or_created_and_returned(proxy, routes, backend):
    routes.add("trace.test", [backend.url])
    trace = new_trace_id()
    parent = f"00-{trace}-{'1' * 16}-01"
    status, headers, body = request(proxy.port, "GET", "/echo", "trace.test",
                                    headers={"traceparent": parent})
    sent = sent_headers(body)
    assert sent["X-Trace-Id"] == trace == headers["X-Trace-Id"]
    assert sent["traceparent"].split("-")[1] == trace
    assert sent["traceparent"] != parent  # the proxy is a hop: a span of its own

    status, headers, body = request(proxy.port, "GET", "/echo", "trace.test",
                                    headers={"X-Trace-Id": "not-a-trace-id"})
    created = headers["X-Trace-Id"]
    assert len(created) == 32 and created == sent_headers(body)["X-Trace-Id"]


def test_several_set_cookie_headers_stay_separate(proxy, routes, backend):
    routes.add("cookies.test", [backend.url])
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("GET", "/cookies", headers={"Host": "cookies.test"})
    resp = conn.getresponse()
    assert resp.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    conn.close()


def test_head_and_no_content(proxy, routes, backend):
    routes.add("head.test", [backend.url])
    status, headers, body = request(proxy.port, "HEAD", "/", "head.test")
    assert (status, body, headers["Content-Length"]) == (200, b"", "12345")
    status, headers, body = request(proxy.port, "GET", "/status/204", "head.test")
    assert (status, body) == (204, b"")


def test_keep_alive_on_both_sides(proxy, routes, backend):
    routes.add("ka.test", [backend.url])
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    for i in range(20):
        conn.request("POST", f"/echo/{i}", body=b"x" * i, headers={"Host": "ka.test"})
        resp = conn.getresponse()
        assert json.loads(resp.read())["body_length"] == i
    conn.close()


def test_upstream_down_is_502_with_trace_id(proxy, routes, redis_client):
    dead = f"http://127.0.0.1:{free_port()}"
    routes.add("down.test", [dead])
    trace = new_trace_id()
    status, headers, body = request(proxy.port, "GET", "/x?y=1", "down.test",
                                    headers={"X-Trace-Id": trace})
    assert status == 502
    assert json.loads(body)["trace_id"] == trace == headers["X-Trace-Id"]
    [event] = request_events(redis_client, trace)
    assert event.type == "proxy_request_failed"
    assert event.data["status"] == 502 and event.data["error"] == "upstream_connect_failed"
    assert event.data["upstream"] == dead


def test_upstream_timeout_is_504_with_trace_id(proxy, routes, backend, redis_client):
    routes.add("slow.test", [backend.url])
    trace = new_trace_id()
    status, headers, body = request(proxy.port, "GET", "/slow?delay=3", "slow.test",
                                    headers={"X-Trace-Id": trace})
    assert status == 504
    assert json.loads(body)["trace_id"] == trace
    [event] = request_events(redis_client, trace)
    assert (event.type, event.data["error"]) == ("proxy_request_failed", "upstream_timeout")


def test_a_response_cut_off_upstream_is_cut_off_for_the_client(proxy, routes, backend,
                                                               redis_client):
    routes.add("cut.test", [backend.url])
    trace = new_trace_id()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("GET", "/cut", headers={"Host": "cut.test", "X-Trace-Id": trace})
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    [event] = request_events(redis_client, trace)
    assert event.type == "proxy_request_failed"
    assert event.data["error"] == "upstream_closed" and event.data["bytes_out"] == 10


def test_round_robin_over_targets(proxy, routes, backend, backend_b):
    routes.add("rr.test", [backend.url, backend_b.url])
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    seen = []
    for _ in range(10):
        conn.request("GET", "/echo", headers={"Host": "rr.test"})
        seen.append(json.loads(conn.getresponse().read())["backend"])
    conn.close()
    # One connection stays on one worker, whose turns alternate between the targets.
    assert seen.count("a") == seen.count("b") == 5
    assert all(x != y for x, y in zip(seen, seen[1:], strict=False))


def doomed_target(routes, host, backend) -> None:
    """A route over [c, backend] that has served through both, after which c goes away:
    nothing listens on its port any more (and no pooled connection to it survives)."""
    doomed = HttpBackend("c", keep_alive=False).start()
    routes.add(host, [doomed.url, backend.url])
    doomed.stop()


def test_idempotent_requests_move_to_the_next_target(proxy, routes, backend):
    doomed_target(routes, "retry.test", backend)
    for _ in range(6):  # fresh connections: both workers meet the dead target
        status, _, body = request(proxy.port, "GET", "/echo", "retry.test")
        assert status == 200 and json.loads(body)["backend"] == "a"


def test_non_idempotent_requests_are_not_retried_and_dead_targets_are_skipped(proxy, routes,
                                                                              backend):
    doomed_target(routes, "noretry.test", backend)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    statuses = []
    for i in range(12):
        conn.request("POST", f"/echo/{i}", body=b"payload", headers={"Host": "noretry.test"})
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
    conn.close()
    # The POST that met the dead target failed instead of being sent twice; after that one
    # failure the target is skipped (passive health), so every later POST succeeds.
    assert statuses.count(502) == 1, statuses
    assert statuses.index(502) <= 1 and set(statuses[2:]) == {200}
