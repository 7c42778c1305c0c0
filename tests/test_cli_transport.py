"""The command line's HTTP/1.1 transport against a loopback server that answers scripted bytes:
every body framing the API may use, and answers it must refuse rather than misread."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from app.cli import transport
from app.cli.client import ApiClient
from app.cli.errors import ConnectionFailed, UsageError
from app.cli.transport import ProtocolError, Response

_client_sockets: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_client_sockets():
    yield
    while _client_sockets:
        _client_sockets.pop().close()


class ScriptedServer:
    """Accepts one connection, records the request's head, sends `pieces` (with a pause
    between them, so a reader sees them arrive separately), then closes."""

    def __init__(self, *pieces: bytes, tls: ssl.SSLContext | None = None):
        self.pieces = pieces
        self.request = b""
        self.tls = tls
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self._sock:
            conn, _ = self._sock.accept()
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):  # a client that refused the certificate
                    conn.close()
                    return
            with conn:
                conn.settimeout(5)
                while b"\r\n\r\n" not in self.request:
                    data = conn.recv(65536)
                    if not data:
                        return
                    self.request += data
                for piece in self.pieces:
                    conn.sendall(piece)
                    time.sleep(0.02)

    def exchange(self, method: str = "GET", headers: dict | None = None) -> Response:
        sock = transport.connect("127.0.0.1", self.port, tls=False, timeout=5)
        _client_sockets.append(sock)
        transport.send(sock, method, "/x?y=1", f"127.0.0.1:{self.port}", headers or {}, None)
        return Response(sock, method)


def test_content_length_body_and_headers():
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 7\r\n\r\n",
                            b'{"a":1}', b"trailing garbage is not read")
    response = server.exchange(headers={"Accept": "application/json"})
    assert (response.status, response.reason) == (200, "OK")
    assert response.getheader("content-type") == "application/json"
    assert response.getheader("Set-Cookie") == "a=1, b=2"
    assert response.read() == b'{"a":1}'
    assert server.request.startswith(b"GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nConnection: close\r\n" in server.request
    assert b"\r\nAccept: application/json\r\n" in server.request


def test_chunked_body_arrives_chunk_by_chunk_with_extensions_and_trailers():
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                            b"5;name=value\r\nhello\r\n", b"1A\r\n" + b"x" * 26 + b"\r\n",
                            b"0\r\nX-Trailer: 1\r\n\r\n")
    response = server.exchange()
    assert response.read1(1024) == b"hello"  # the first chunk, before the rest is sent
    assert response.read() == b"x" * 26
    assert response.read1(1024) == b""


def test_body_up_to_the_close_without_length_or_chunking():
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\n\r\n", b"first ", b"second")
    assert server.exchange().read() == b"first second"


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_no_body_statuses_read_nothing(status):
    server = ScriptedServer(b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\n\r\n")
    assert server.exchange().read() == b""


def test_interim_answers_are_skipped():
    server = ScriptedServer(b"HTTP/1.1 100 Continue\r\n\r\n",
                            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
    response = server.exchange()
    assert (response.status, response.getheader("Link"), response.read()) == (201, None, b"{}")


def test_head_reads_no_body():
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert server.exchange("HEAD").read() == b""


@pytest.mark.parametrize("answer, message", [
    (b"", "closed without an answer"),
    (b"HTTP/1.1 200 OK\r\nContent-", "closed in the middle"),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 20 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 20\xb2 OK\r\n\r\n", "not an HTTP/1.x status line"),  # a digit, not ASCII
    (b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 * 1024) + b"\r\n\r\n", "too long"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 101 + b"\r\n", "more than 100 headers"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "invalid Content-Length"),
])
def test_malformed_heads_are_refused(answer, message):
    server = ScriptedServer(answer)
    with pytest.raises(ProtocolError, match=message):
        server.exchange()


@pytest.mark.parametrize("body, message", [
    (b"0x5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
    (b"+5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
    (b"\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
    (b"5\r\nhelloXX0\r\n\r\n", "not followed by CRLF"),
    (b"5\r\nhel", "closed before the end of the body"),
])
def test_malformed_chunked_bodies_are_refused(body, message):
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", body)
    response = server.exchange()
    with pytest.raises(ProtocolError, match=message):
        response.read()


def test_a_body_shorter_than_its_content_length_is_refused():
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(ProtocolError, match="before the end of the body"):
        server.exchange().read()


@pytest.mark.parametrize("value", ["tok\r\nX-Admin: 1", "tok\nX", "tok\0", "t\u00f6k\u2603"])
def test_a_header_value_that_could_inject_is_never_sent(value):
    sock = socket.socket()  # never connected: send must refuse before writing anything
    with pytest.raises(ValueError), sock:
        transport.send(sock, "GET", "/", "h", {"Authorization": f"Bearer {value}"}, None)


def test_api_client_turns_a_bad_token_into_a_usage_error_without_echoing_it():
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    client = ApiClient(f"http://127.0.0.1:{server.port}", "brt_secret\r\nX-Scope: admin")
    with pytest.raises(UsageError) as caught:
        client.get("/api/v1/status")
    assert "brt_secret" not in str(caught.value.description)


def test_api_client_reports_a_malformed_answer_in_one_line():
    server = ScriptedServer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    client = ApiClient(f"http://127.0.0.1:{server.port}")
    with pytest.raises(ConnectionFailed) as caught:
        client.get("/api/v1/status")
    assert caught.value.title == "Request failed"
    assert "invalid chunk size" in caught.value.description


def test_https_verifies_the_server_against_the_trusted_authorities(tmp_path, monkeypatch):
    from tests.e2e.pki import LocalCA

    ca = LocalCA()
    chain, key = ca.issue(("localhost",))
    (tmp_path / "chain.pem").write_text(chain)
    (tmp_path / "key.pem").write_text(key)
    (tmp_path / "ca.pem").write_text(ca.pem)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"tls\":true}"

    untrusted = ScriptedServer(answer, tls=server_tls)
    with pytest.raises(ConnectionFailed) as caught:
        ApiClient(f"https://localhost:{untrusted.port}").get("/api/v1/status")
    assert caught.value.title == "Cannot connect"
    assert "certificate verify failed" in caught.value.description

    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    trusted = ScriptedServer(answer, tls=server_tls)
    reply = ApiClient(f"https://localhost:{trusted.port}").get("/api/v1/status")
    assert (reply.status, reply.data) == (200, {"tls": True})
    assert trusted.request.startswith(b"GET /api/v1/status HTTP/1.1\r\nHost: localhost:")
