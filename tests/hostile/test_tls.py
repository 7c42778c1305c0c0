"""Hostile input against the real proxy-tls process: the framing cases that matter most,
sent inside TLS, and bytes that are not TLS at all. The client does not verify the proxy's
certificate (the self-signed default for names berth has none for): what is under test is
the HTTP that follows the handshake."""

from __future__ import annotations

import json
import socket
import ssl

import pytest

from tests.hostile.conftest import GUARDED
from tests.hostile.wire import responses

pytestmark = pytest.mark.e2e

BODY = b"5\r\nhello\r\n0\r\n\r\n"


def tls_exchange(port: int, data: bytes, name: str = "h.test") -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError, ssl.SSLError):
            pass
        return received


def smuggling(case: str, lines: bytes, body: bytes) -> bytes:
    return (f"POST /echo/tls/{case} HTTP/1.1\r\nHost: h.test\r\n".encode() + lines + b"\r\n"
            + body + f"GET /smuggled/tls/{case} HTTP/1.1\r\nHost: {GUARDED}\r\n"
                     "Connection: close\r\n\r\n".encode())


TLS_CASES = [
    ("cl-te", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", BODY, [400]),
    ("cl-cl", b"Content-Length: 15\r\nContent-Length: 0\r\n", BODY, [400]),
    ("te-obs-fold", b"Transfer-Encoding:\r\n chunked\r\n", BODY, [400]),
    ("te-chunked-identity", b"Transfer-Encoding: chunked, identity\r\n", BODY, [400]),
    ("te-gzip-chunked", b"Transfer-Encoding: gzip, chunked\r\n", BODY, [501]),
    ("chunk-non-hex", b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n", [400]),
    ("chunk-ext", b"Transfer-Encoding: chunked\r\n", b"5;a=b\r\nhello\r\n0\r\n\r\n", [200, 401]),
]


@pytest.mark.parametrize("case,lines,body,statuses", TLS_CASES, ids=[c[0] for c in TLS_CASES])
def test_framing_inside_tls(tls_proxy, site, backend, case, lines, body, statuses):
    got = responses(tls_exchange(tls_proxy.port, smuggling(case, lines, body)))
    assert [status for status, _h, _b in got] == statuses
    if statuses[0] == 200:
        assert json.loads(got[0][2])["body_length"] == 5
    assert not [p for _m, p in backend.requests if p == f"/smuggled/tls/{case}"]


def test_bytes_that_are_not_tls_are_refused_and_tls_goes_on(tls_proxy, site):
    for junk in (b"GET / HTTP/1.1\r\nHost: h.test\r\n\r\n", b"\x16\x03\x01\x00\x05hello",
                 b"\x00" * 64, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as sock:
            sock.sendall(junk)
            try:
                answer = sock.recv(65536)
            except ConnectionResetError:
                answer = b""
            assert not answer.startswith(b"HTTP/"), junk  # no HTTP spoken outside TLS
    got = responses(tls_exchange(tls_proxy.port, b"GET /echo/after HTTP/1.1\r\nHost: h.test\r\n"
                                                 b"Connection: close\r\n\r\n"))
    assert [status for status, _h, _b in got] == [200]


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01"],
                         ids=["silent", "partial_hello"])
def test_an_unfinished_handshake_is_cut_after_the_head_timeout(tls_proxy, site, sent):
    """A peer that opens TCP and never completes the handshake must not hold the worker's
    connection: it is closed after BERTH_PROXY_KEEPALIVE_S (2 s here), like a slow head."""
    stalled = socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=30)
    with stalled:
        stalled.sendall(sent)
        try:
            closed = stalled.recv(65536) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
    assert closed, "the proxy still held the connection after 30 s"
    got = responses(tls_exchange(tls_proxy.port, b"GET /echo/after HTTP/1.1\r\nHost: h.test\r\n"
                                                 b"Connection: close\r\n\r\n"))
    assert [status for status, _h, _b in got] == [200]
