"""Limits in the real proxy: head sizes, body sizes, ambiguous framing, slow clients."""

from __future__ import annotations

import json
import socket
import subprocess
from http import HTTPStatus

import pytest

from app.tracing import new_trace_id
from tests.e2e.conftest import raw_exchange, request, request_events

pytestmark = pytest.mark.e2e


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def limited(routes, backend):
    routes.add("limits.test", [backend.url], max_body_bytes=1000)


def test_oversized_heads_are_refused(proxy, limited, backend):
    # Header fields above BERTH_PROXY_LIMIT_REQUEST_FIELD_SIZE (2048 here): 431.
    answer = raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: limits.test\r\nX-Big: "
                          + b"a" * 4000 + b"\r\n\r\n")
    assert status_of(answer) == 431
    # Too many fields: 431.
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
    answer = raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: limits.test\r\n" + many + b"\r\n")
    assert status_of(answer) == 431
    # A request line above BERTH_PROXY_LIMIT_REQUEST_LINE (1024 here): 414 URI Too Long.
    answer = raw_exchange(proxy.port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n"
                          b"Host: limits.test\r\n\r\n")
    assert status_of(answer) == 414
    assert not any("aaaa" in path for _method, path in backend.requests)


def test_bodies_over_the_route_limit_are_413(proxy, limited, backend, redis_client):
    status, _, _ = request(proxy.port, "POST", "/echo", "limits.test", body=b"x" * 1000)
    assert status == 200
    trace = new_trace_id()
    status, _, _ = request(proxy.port, "POST", "/echo/big", "limits.test", body=b"x" * 1001,
                           headers={"X-Trace-Id": trace})
    assert status == 413
    [event] = request_events(redis_client, trace)
    assert (event.type, event.data["error"]) == ("proxy_request_completed", "body_too_large")
    # Chunked: the limit is found while streaming.
    answer = raw_exchange(proxy.port, b"POST /echo/chunked HTTP/1.1\r\nHost: limits.test\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n"
                          + b"".join(b"190\r\n" + b"y" * 400 + b"\r\n" for _ in range(3))
                          + b"0\r\n\r\n")
    assert status_of(answer) == 413
    assert ("POST", "/echo/big") not in backend.requests


@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5\r\nContent-Length: 5\r\n",
    b"Transfer-Encoding: chunked, chunked\r\n",
], ids=["cl-te", "te-cl", "cl-cl-differing", "cl-cl-repeated", "te-twice"])
def test_ambiguous_framing_is_400(proxy, limited, backend, framing):
    answer = raw_exchange(proxy.port, b"POST /echo/ambiguous HTTP/1.1\r\nHost: limits.test\r\n"
                          + framing + b"\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\n"
                          b"Host: limits.test\r\n\r\n")
    assert status_of(answer) == 400
    assert answer.count(b"HTTP/1.1 ") == 1  # and the connection is closed, nothing smuggled
    assert not [p for _m, p in backend.requests if p in ("/echo/ambiguous", "/echo/smuggled")]


def test_a_client_stalling_its_body_is_cut_off(proxy, limited, redis_client):
    trace = new_trace_id()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"POST /echo/stall HTTP/1.1\r\nHost: limits.test\r\nContent-Length: 900\r\n"
                     b"X-Trace-Id: " + trace.encode() + b"\r\n\r\n" + b"z" * 100)
        # ... and nothing more: the proxy gives up after BERTH_PROXY_CLIENT_TIMEOUT_S (2 s).
        assert sock.recv(65536) == b""
    [event] = request_events(redis_client, trace)
    assert event.type == "proxy_request_failed"
    assert event.data["error"] == "client_body_incomplete"


def test_a_client_stalling_its_head_is_cut_off(proxy, limited):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: limits.test\r\n")
        # The head never ends: closed after BERTH_PROXY_KEEPALIVE_S (2 s), nothing answered.
        assert sock.recv(65536) == b""


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            break
        head += chunk
    return head


def test_expect_continue_over_the_limit_is_413_before_the_body(proxy, limited, backend):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"POST /echo/expect-big HTTP/1.1\r\nHost: limits.test\r\n"
                     b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        answer = _read_head(sock)  # the body is never sent
        assert status_of(answer) == 413, answer
        assert b"Connection: close" in answer
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert b"HTTP/1.1 " not in rest  # one answer, then closed: no 100 came before it
    assert ("POST", "/echo/expect-big") not in backend.requests


def test_expect_continue_within_the_limit_gets_100_then_the_answer(proxy, limited, backend):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"POST /echo/expect-ok HTTP/1.1\r\nHost: limits.test\r\n"
                     b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = _read_head(sock)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        answer = _read_head(sock)
        assert status_of(answer) == 200, answer
        assert b"Connection: keep-alive" in answer
    assert ("POST", "/echo/expect-ok") in backend.requests


def test_curl_sends_no_body_that_the_route_refuses(proxy, limited, backend, tmp_path):
    upload = tmp_path / "upload"
    upload.write_bytes(b"u" * 5000)
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
         "-H", "Host: limits.test", "-H", "Expect: 100-continue", "--expect100-timeout", "30",
         "--data-binary", f"@{upload}", f"http://127.0.0.1:{proxy.port}/echo/curl-big"],
        capture_output=True, text=True, timeout=60, check=True)
    status, uploaded = done.stdout.split()
    assert (status, float(uploaded)) == ("413", 0.0)


@pytest.mark.parametrize(("head", "status"), [
    (b"POST /echo HTTP/1.1\r\nHost: limits.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
     501),
    (b"POST /echo HTTP/1.1\r\nHost: limits.test\r\nTransfer-Encoding: br, chunked\r\n\r\n",
     501),
    (b"GET /\x01 HTTP/1.1\r\nHost: limits.test\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: limits.test\r\nBad Name: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: limits.test\r\nExpect: teapot\r\n\r\n", 417),
    (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: limits.test\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: limits.test\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n", 431),
], ids=["te-gzip", "te-unknown", "control-in-target", "space-in-name", "expect-other", "long-line",
        "long-field"])
def test_unreadable_heads_get_their_statuss_reason_phrase_and_json(proxy, limited, head,
                                                                    status):
    answer = raw_exchange(proxy.port, head)
    line, _, rest = answer.partition(b"\r\n")
    assert line == f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode(), answer[:300]
    fields, _, body = rest.partition(b"\r\n\r\n")
    fields = fields.lower()
    assert b"connection: close" in fields and b"content-type: application/json" in fields
    doc = json.loads(body)
    assert doc["title"] == HTTPStatus(status).phrase and doc["description"]
