"""Oversized and slow request heads, slow bodies and invalid Host values against the real
proxy (limits from tests/e2e/conftest.py PROXY_ENV: request line 1024 bytes, header field
2048 bytes, head within 2 s, body progress within 2 s)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from app.tracing import new_trace_id
from tests.e2e.conftest import raw_exchange, request, request_events
from tests.hostile.wire import responses, send_until_answered

pytestmark = pytest.mark.e2e

LINE_LIMIT, FIELD_LIMIT = 1024, 2048


def only_status(answer: bytes) -> int:
    got = responses(answer)
    assert len(got) == 1, answer[:300]
    return got[0][0]


@pytest.mark.parametrize("head,status", [
    (b"GET /" + b"a" * LINE_LIMIT + b" HTTP/1.1\r\nHost: h.test\r\n\r\n", 414),
    (b"GET /?" + b"q" * 50_000 + b" HTTP/1.1\r\nHost: h.test\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: h.test\r\nX-Big: " + b"v" * FIELD_LIMIT + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h.test\r\nX-" + b"n" * FIELD_LIMIT + b": v\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h.test\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(101))
     + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h.test\r\n" + b"Cookie: a=1\r\n" * 150 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: " + b"h" * FIELD_LIMIT + b".test\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h.test\r\nX-Big: " + b"v" * 1_000_000 + b"\r\n\r\n", 431),
], ids=["line", "query", "field-value", "field-name", "too-many-fields", "repeated-cookie",
        "long-host", "megabyte-field"])
def test_oversized_heads_are_refused_before_the_backend(proxy, site, backend, head, status):
    before = len(backend.requests)
    assert only_status(send_until_answered(proxy.port, head)) == status
    assert backend.requests[before:] == []


def test_heads_just_under_the_limits_are_served(proxy, site, backend):
    """The other side of the limits above: they refuse only what exceeds them."""
    path = "/echo/" + "a" * (LINE_LIMIT - 100)
    headers = {f"X-H{i}": "1" for i in range(80)}
    headers["X-Big"] = "v" * (FIELD_LIMIT - 100)
    status, _h, body = request(proxy.port, "GET", path, "h.test", headers=headers)
    assert status == 200
    sent = dict(json.loads(body)["headers"])
    assert sent["X-Big"] == headers["X-Big"] and sent["X-H79"] == "1"


def _served_meanwhile(proxy, count: int = 5) -> list[int]:
    """Statuses of `count` ordinary requests made while the slow clients hold on."""
    return [request(proxy.port, "GET", "/echo/meanwhile", "h.test", timeout=5)[0]
            for _ in range(count)]


def _closed_by_peer(sock: socket.socket, send_every: float, payload: bytes,
                    deadline_s: float) -> bool:
    """Drip `payload` one byte at a time; True once the proxy closes the connection (EOF or
    reset), False if it was still open after `deadline_s`."""
    sock.setblocking(False)
    deadline = time.monotonic() + deadline_s
    for byte in payload:
        if time.monotonic() > deadline:
            return False
        try:
            if sock.recv(65536) == b"":
                return True
        except BlockingIOError:
            pass
        except OSError:
            return True
        try:
            sock.send(bytes([byte]))
        except OSError:
            return True
        time.sleep(send_every)
    return False


def _drain(sock: socket.socket) -> bytes:
    """Everything the proxy sends until it closes the connection (bounded by 10 s)."""
    sock.settimeout(10)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_slowloris_heads_are_cut_off_and_others_are_served(proxy, site):
    """Many clients dripping their heads a byte at a time: each is closed once the head has
    taken longer than the keep-alive time (2 s), however steadily it drips, and ordinary
    clients are served meanwhile."""
    slow = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(40)]
    try:
        for sock in slow:  # every one has started a head
            sock.sendall(b"GET /echo/slow HTTP/1.1\r\nHost: h.test\r\n")
        assert _served_meanwhile(proxy) == [200] * 5
        drip = b"X-Drip: " + b"d" * 200
        assert _closed_by_peer(slow[0], 0.1, drip, deadline_s=15)
        for sock in slow[1:]:  # the others, idle all along, were closed as well
            assert _drain(sock) == b""
    finally:
        for sock in slow:
            sock.close()


def test_slow_bodies_are_cut_off_and_others_are_served(proxy, site, backend, redis_client):
    """Clients that stop sending their body are closed after the client timeout (2 s) with
    nothing relayed from the backend, and ordinary clients are served meanwhile. A small
    body is read whole before connecting upstream, so the backend never even sees those."""
    traces = {}
    slow = []
    try:
        for i in range(20):
            length = 1000 if i % 2 else 100_000  # small: preloaded; large: streamed
            trace = new_trace_id()
            traces[trace] = (f"/echo/slow-body/{i}", length)
            sock = socket.create_connection(("127.0.0.1", proxy.port))
            slow.append(sock)
            sock.sendall(f"POST /echo/slow-body/{i} HTTP/1.1\r\nHost: h.test\r\n"
                         f"X-Trace-Id: {trace}\r\nContent-Length: {length}\r\n\r\n"
                         .encode() + b"b" * 100)
        trace = new_trace_id()
        traces[trace] = ("/echo/slow-body/chunked", None)
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        slow.append(sock)
        sock.sendall(b"POST /echo/slow-body/chunked HTTP/1.1\r\nHost: h.test\r\n"
                     b"X-Trace-Id: " + trace.encode() + b"\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n")
        assert _served_meanwhile(proxy) == [200] * 5
        for sock in slow:
            assert _drain(sock) == b""  # cut off, nothing relayed
    finally:
        for sock in slow:
            sock.close()
    for trace, (path, length) in traces.items():
        [event] = request_events(redis_client, trace)
        assert (event.type, event.data["path"], event.data["error"]) == (
            "proxy_request_failed", path, "client_body_incomplete")
        if length == 1000:
            assert ("POST", path) not in backend.requests


def test_many_idle_connections_do_not_starve_the_proxy(proxy, site):
    """Connections that never send anything are closed after the keep-alive time and hold
    nothing meanwhile (gevent: one greenlet each)."""
    idle = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(200)]
    try:
        assert _served_meanwhile(proxy, 3) == [200] * 3
        assert [_drain(sock) for sock in idle] == [b""] * len(idle)
    finally:
        for sock in idle:
            sock.close()


# Host values that name no site: answered by the proxy itself (gunicorn refuses a repeated
# Host and control characters; berth refuses what is not a host name, RFC 9112 3.2).
INVALID_HOSTS = [
    ("missing", b""),
    ("empty", b"Host: \r\n"),
    ("blank", b"Host:    \r\n"),
    ("repeated", b"Host: h.test\r\nHost: h.test\r\n"),
    ("repeated-differing", b"Host: h.test\r\nHost: other.test\r\n"),
    ("comma-list", b"Host: h.test, other.test\r\n"),
    ("userinfo", b"Host: user@h.test\r\n"),
    ("userinfo-port", b"Host: h.test:80@other.test\r\n"),
    ("slash", b"Host: h.test/admin\r\n"),
    ("backslash", b"Host: h.test\\admin\r\n"),
    ("space-inside", b"Host: h .test\r\n"),
    ("port-letters", b"Host: h.test:http\r\n"),
    ("two-ports", b"Host: h.test:80:80\r\n"),
    ("nul", b"Host: h.test\x00.evil\r\n"),
    ("del", b"Host: h.test\x7f\r\n"),
    ("open-bracket", b"Host: [::1\r\n"),
    ("percent", b"Host: h%2etest\r\n"),
    ("only-dots", b"Host: ...\r\n"),
]


@pytest.mark.parametrize("case,host_lines", INVALID_HOSTS, ids=[c[0] for c in INVALID_HOSTS])
def test_invalid_host_values_reach_no_backend(proxy, site, backend, case, host_lines):
    before = len(backend.requests)
    answer = send_until_answered(proxy.port, b"GET /echo/host-" + case.encode()
                                 + b" HTTP/1.1\r\n" + host_lines + b"Connection: close\r\n\r\n")
    [(status, headers, body)] = responses(answer)
    assert status == 400, answer[:300]
    if headers.get("Server") == "berth" and headers.get("X-Trace-Id"):  # berth's own answer
        assert set(json.loads(body)) == {"title", "description", "trace_id"}
    assert backend.requests[before:] == []


def test_host_spellings_of_a_known_site_reach_it(proxy, site):
    """The other side: case, a port, a trailing dot and the absolute form name h.test."""
    for line, host in ((b"GET /echo/spelling HTTP/1.1", b"H.TEST"),
                       (b"GET /echo/spelling HTTP/1.1", b"h.test:8080"),
                       (b"GET /echo/spelling HTTP/1.1", b"h.test."),
                       (b"GET http://h.test/echo/spelling HTTP/1.1", b"other.test")):
        answer = raw_exchange(proxy.port, line + b"\r\nHost: " + host
                              + b"\r\nConnection: close\r\n\r\n")
        [(status, _headers, body)] = responses(answer)
        assert status == 200, (line, host)
        assert json.loads(body)["path"] == "/echo/spelling"


@pytest.mark.parametrize("host", [
    ".".join(["a" * 63] * 3).encode() + b".h.test",  # 199 characters
    b"a" * 64 + b".h.test",  # a label DNS would not take, but a valid URI host
    b"h\xe9\xff.test",  # latin-1 letters: an IDN
    b"xn--.h.test", b"*.h.test", b"[::1]:80", b"127.0.0.1",
], ids=["long", "long-label", "latin1", "bad-punycode", "star", "ipv6", "ipv4"])
def test_unusual_hosts_are_not_found_without_error(proxy, site, backend, host):
    before = len(backend.requests)
    answer = raw_exchange(proxy.port, b"GET /echo/unusual HTTP/1.1\r\nHost: " + host
                          + b"\r\nConnection: close\r\n\r\n")
    [(status, _headers, body)] = responses(answer)
    assert status in (400, 404), answer[:300]
    assert set(json.loads(body)) == {"title", "description", "trace_id"}
    assert backend.requests[before:] == []
