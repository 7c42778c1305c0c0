"""The hand-written HTTP/1.1 upstream client: response framing, pooling, health, retries."""

from __future__ import annotations

import io
import select
import socket
import ssl
import threading

import pytest

from app.models import Route
from harness.procs import free_port
from proxy.routing import RouteEntry
from proxy.upstream import (
    MAX_INTERIM,
    ConnectFailed,
    Connection,
    RequestBody,
    Upstream,
    UpstreamClosed,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
    read_head,
)


def head(raw: bytes, method: str = "GET"):
    """The parsed head, checking that a head arriving whole (one read) and one arriving in
    small pieces (the line-by-line path) parse alike."""
    whole = read_head(io.BufferedReader(io.BytesIO(raw), 65536), method)
    pieces = read_head(io.BufferedReader(io.BytesIO(raw), 8), method)
    assert whole == pieces
    return whole


def test_framing_of_response_heads():
    h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n")
    assert (h.status, h.reason, h.length, h.chunked, h.keep_alive) == (200, "OK", 5, False, True)
    assert h.headers == [("Content-Length", "5"), ("X-A", "b")]
    h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    assert (h.length, h.chunked, h.keep_alive) == (None, True, False)
    h = head(b"HTTP/1.0 200 OK\r\n\r\n")  # until close
    assert (h.length, h.chunked, h.keep_alive) == (None, False, False)
    h = head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
    assert h.keep_alive
    h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", method="HEAD")
    assert h.length == 0
    assert head(b"HTTP/1.1 304 Not Modified\r\n\r\n").length == 0
    assert head(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n").length == 3
    assert head(b"HTTP/1.0 200 OK\nContent-Length: 4\n\n").length == 4  # bare LF ends
    # Interim responses are skipped; 101 is final and never reused.
    h = head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\n"
             b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert h.status == 201
    h = head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    assert (h.status, h.keep_alive) == (101, False)
    # A header value with a control character is dropped, not relayed: a lone CR or LF too.
    assert head(b"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 0\r\n\r\n").headers == [
        ("Content-Length", "0")]
    for stray in (b"a\rb", b"a\x7fb", b"a\x00b", b"a\x1bb"):
        raw = b"HTTP/1.1 200 OK\r\nX-Bad: " + stray + b"\r\nX-Ok: 1\r\nContent-Length: 0\r\n\r\n"
        assert head(raw).headers == [("X-Ok", "1"), ("Content-Length", "0")]
    # Latin-1 is kept as it came; a tab is no control character in a value.
    assert head(b"HTTP/1.1 200 OK\r\nX-T: a\tb \xe9\r\n\r\n").headers == [("X-T", "a\tb \xe9")]


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Truncated: x",
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 2\xb20 OK\r\n\r\n",  # a superscript digit is no digit
    b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\n",
])
def test_responses_that_are_not_relayed(raw):
    with pytest.raises(UpstreamProtocolError):
        head(raw)


def test_nothing_at_all_is_a_closed_upstream():
    with pytest.raises(UpstreamClosed) as info:
        head(b"")
    assert not info.value.received


def entry(*urls: str) -> RouteEntry:
    return RouteEntry.build(Route(id="rt_1", host="h.test", targets=urls, owner="t"))


class Scripted:
    """A loopback server running one behaviour per accepted connection, in order."""

    def __init__(self, *behaviours):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, args=(behaviours,), daemon=True)
        self.thread.start()

    def _serve(self, behaviours):
        for behaviour in behaviours:
            conn, _ = self.sock.accept()
            with conn:
                behaviour(self, conn)
        self.sock.close()


def read_request(server, conn) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    server.received.append(data)
    return data


def answer_ok(body: bytes = b"hello", times: int = 1):
    def behaviour(server, conn):
        for _ in range(times):
            read_request(server, conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return behaviour


def close_after_reading(server, conn):
    read_request(server, conn)


def send(upstream, route_entry, method="GET", body=b"", chunked=False):
    stream = io.BytesIO(body)
    request_body = RequestBody(stream, None if chunked else len(body), chunked)
    resp = upstream.send(route_entry, method, "/p", [("X-A", "1")], request_body)
    return resp, b"".join(resp)


def test_body_streaming_and_connection_reuse():
    server = Scripted(answer_ok(times=3))
    pool = UpstreamPool()
    upstream = Upstream(pool)
    route_entry = entry(server.url)
    for _ in range(3):
        resp, body = send(upstream, route_entry)
        assert (resp.status, body) == (200, b"hello")
    assert pool.connects == 1
    assert server.received[0].startswith(b"GET /p HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                         % server.port)


def test_chunked_response_and_chunked_request_body():
    def behaviour(server, conn):
        data = read_request(server, conn)
        while not data.endswith(b"0\r\n\r\n"):
            data += conn.recv(65536)
        server.received[-1] = data
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n")

    server = Scripted(behaviour)
    resp, body = send(Upstream(UpstreamPool()), entry(server.url), "POST", b"x" * 70000,
                      chunked=True)
    assert body == b"abcde"
    assert b"Transfer-Encoding: chunked\r\n" in server.received[0]
    assert b"\r\n10000\r\n" in server.received[0]  # 64 KiB pieces, then the rest


def test_a_pooled_connection_closed_by_the_upstream_is_not_reused():
    server = Scripted(answer_ok(), answer_ok())  # closes after each answer (one per connection)
    pool = UpstreamPool()
    upstream = Upstream(pool)
    route_entry = entry(server.url)
    send(upstream, route_entry)
    server.thread.join(0.5)
    resp, body = send(upstream, route_entry)
    assert body == b"hello" and pool.connects == 2


def test_a_stale_pooled_connection_is_retried_fresh_for_idempotent_requests():
    pool = UpstreamPool()
    upstream = Upstream(pool)
    server = Scripted(close_after_reading, answer_ok())
    # Pooled and looking alive, but the server closes it on reading the request, unanswered.
    pool.release(pool.connect(entry(server.url).targets[0]))
    resp, body = send(upstream, entry(server.url))
    assert body == b"hello" and len(server.received) == 2
    # A POST in the same situation is not sent twice.
    other = Scripted(close_after_reading, answer_ok())
    pool.release(pool.connect(entry(other.url).targets[0]))
    with pytest.raises(UpstreamClosed):
        send(upstream, entry(other.url), "POST", b"data")


def test_connect_failures_mark_targets_down_and_retry_idempotent_methods():
    dead = f"http://127.0.0.1:{free_port()}"
    server = Scripted(answer_ok(times=3))
    now = [100.0]
    pool = UpstreamPool(down_s=10, clock=lambda: now[0])
    upstream = Upstream(pool)
    route_entry = entry(dead, server.url)
    with pytest.raises(ConnectFailed) as info:  # POST: dead first, not retried
        send(upstream, route_entry, "POST", b"x")
    assert info.value.target == dead
    assert pool.is_down(route_entry.targets[0])
    # While down it is tried last: both turns go to the live target.
    assert pool.plan(route_entry)[0].url == server.url
    assert pool.plan(route_entry)[0].url == server.url
    resp, body = send(upstream, route_entry, "POST", b"x")
    assert body == b"hello"
    now[0] += 11
    assert not pool.is_down(route_entry.targets[0])
    # GET: a failed connect moves on to the next target.
    resp, body = send(upstream, entry(dead, server.url))
    assert body == b"hello"


def test_request_body_limits():
    from proxy.upstream import BodyTooLarge

    with pytest.raises(BodyTooLarge):
        RequestBody(io.BytesIO(b""), 11, False, limit=10)
    body = RequestBody(io.BytesIO(b"y" * 20), None, True, limit=10)
    with pytest.raises(BodyTooLarge):
        list(body.pieces())
    assert RequestBody(io.BytesIO(b""), 0, False).empty


def test_connection_still_open():
    left, right = socket.socketpair()
    conn = Connection(left, entry("http://127.0.0.1:1").targets[0])
    assert conn.still_open()
    right.sendall(b"junk")
    assert not conn.still_open()
    right.close()
    conn.close()


def test_a_timeout_on_a_pooled_connection_is_not_retried():
    from proxy.upstream import UpstreamTimeout

    def silent(server, conn):
        read_request(server, conn)
        conn.recv(1)  # holds the connection open without answering

    server = Scripted(silent, answer_ok())
    pool = UpstreamPool(read_timeout=0.3)
    pool.release(pool.connect(entry(server.url).targets[0]))
    with pytest.raises(UpstreamTimeout):
        send(Upstream(pool), entry(server.url))
    assert len(server.received) == 1


def test_https_targets_with_pooled_connections(tmp_path):
    from tests.e2e.pki import LocalCA

    ca = LocalCA()
    chain, key = ca.issue(("localhost",))
    (tmp_path / "server.pem").write_text(key + chain)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "server.pem")

    def tls(behaviour):
        def wrapped(server, conn):
            with server_context.wrap_socket(conn, server_side=True) as tls_conn:
                behaviour(server, tls_conn)
        return wrapped

    server = Scripted(tls(answer_ok(times=2)), tls(answer_ok()))
    pool = UpstreamPool(tls_context=ssl.create_default_context(cadata=ca.pem))
    route_entry = entry(f"https://localhost:{server.port}")
    for _ in range(2):
        resp, body = send(Upstream(pool), route_entry)
        assert body == b"hello"
    assert pool.connects == 1  # the TLS connection was checked and reused
    assert server.received[0].startswith(b"GET /p HTTP/1.1\r\nHost: localhost:%d\r\n"
                                         % server.port)


def socket_pair_connection():
    """A Connection over one end of a socket pair; the other end plays the upstream."""
    ours, theirs = socket.socketpair()
    target = entry("http://127.0.0.1:9").targets[0]
    return Connection(ours, target, read_timeout=5.0), theirs


def test_a_connection_is_reusable_only_when_nothing_follows_the_exchange():
    conn, peer = socket_pair_connection()
    with peer:
        peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        h = read_head(conn.rfile, "GET")
        assert conn.rfile.read(h.length) == b"ok"
        assert conn.reusable()
        assert conn.sock.gettimeout() == 5.0  # the read timeout is back after the peek
        # One byte past the framing, already in our buffer with the response...
        peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokX")
        h = read_head(conn.rfile, "GET")
        assert conn.rfile.read(h.length) == b"ok"
        assert not conn.reusable()
    conn.close()
    # ... or arriving on the socket after it, or the peer's EOF: not reusable either.
    conn, peer = socket_pair_connection()
    with peer:
        peer.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        read_head(conn.rfile, "GET")
        assert conn.reusable()
        peer.sendall(b"H")
        wait_readable(conn.sock)
        assert not conn.reusable()
    conn.close()
    conn, peer = socket_pair_connection()
    peer.close()
    wait_readable(conn.sock)
    assert not conn.reusable()
    conn.close()


def wait_readable(sock: socket.socket) -> None:
    assert select.select([sock], [], [], 5)[0]


def test_interim_responses_are_capped():
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert head(interim * MAX_INTERIM + final).status == 200
    with pytest.raises(UpstreamProtocolError, match="interim"):
        head(interim * (MAX_INTERIM + 1) + final)


@pytest.mark.parametrize("size", [b"+5", b"0x5", b"1_0", b" 5", b"-5", b"5 5", b"\xd9\xa5",
                                  b"1" * 17, b""])
def test_chunk_sizes_are_hex_digits_only(size):
    conn, peer = socket_pair_connection()
    with peer:
        peer.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + size + b"\r\nhello\r\n0\r\n\r\n")
        resp = UpstreamResponse(UpstreamPool(), conn, read_head(conn.rfile, "GET"))
        with pytest.raises(UpstreamProtocolError, match="chunk size"):
            b"".join(resp)
    assert conn.rfile.closed  # and the connection is not pooled


def test_a_chunk_size_with_an_extension_and_trailers_is_read_and_pooled():
    conn, peer = socket_pair_connection()
    pool = UpstreamPool()
    with peer:
        peer.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5;name=value\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n")
        resp = UpstreamResponse(pool, conn, read_head(conn.rfile, "GET"))
        assert b"".join(resp) == b"hello"
        assert pool.acquire(conn.target) is conn
    conn.close()


def test_pooled_connections_serve_one_owner():
    closed_port = free_port()

    def route_entry(owner):
        return RouteEntry.build(Route(id="rt_" + owner, host=f"{owner}.test",
                                      targets=[f"http://127.0.0.1:{closed_port}"], owner=owner))
    pool = UpstreamPool()
    conn, peer = socket_pair_connection()
    alices = route_entry("alice").targets[0]
    conn.target = alices
    with peer:
        pool.release(conn)
        bobs = route_entry("bob").targets[0]
        assert bobs.key == alices.key  # the same backend, its health shared
        with pytest.raises(ConnectFailed):  # refused: no pooled one was handed out
            pool.acquire(bobs)
        assert pool.acquire(alices) is conn
    conn.close()
