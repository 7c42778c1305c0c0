"""The proxy's own gunicorn worker (proxy/worker.py) as a client sees it, on raw sockets:
the HTTP/1 server behaviour it took over from gunicorn's gevent worker must be unchanged."""

from __future__ import annotations

import email.utils
import json
import os
import socket
import time
from pathlib import Path

import pytest

from harness.procs import Proc
from harness.proxy import ProxyProcess
from tests.e2e.conftest import raw_exchange, request

pytestmark = pytest.mark.e2e

HOST = "worker.test"


@pytest.fixture
def served(routes, backend):
    routes.add(HOST, [backend.url])


def read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(head, body, what followed) of one Content-Length framed response."""
    def more() -> bytes:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the proxy closed the connection")
        return data

    data = buffered
    while b"\r\n\r\n" not in data:
        data += more()
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(rest) < length:
        rest += more()
    return head, rest[:length], rest[length:]


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def test_keep_alive_pipelining_and_the_response_head(proxy, served):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        # Two requests in one write: answered in order on the same connection.
        sock.sendall(f"GET /echo/1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
                     f"GET /echo/2 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        first, body1, rest = read_response(sock)
        second, body2, rest = read_response(sock, rest)
        assert rest == b""
    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body1)["path"] == "/echo/1" and json.loads(body2)["path"] == "/echo/2"
    for head in (first, second):
        assert header(head, b"server") == b"berth"
        assert header(head, b"connection") == b"keep-alive"
        assert email.utils.parsedate_to_datetime(header(head, b"date").decode()).tzname() \
            == "UTC"


def test_http_1_0_is_answered_in_kind_and_closed(proxy, served):
    answer = raw_exchange(proxy.port, f"GET /echo HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert header(head, b"connection") == b"close"
    assert json.loads(body)["method"] == "GET"  # and then the proxy closed the connection


def test_expect_100_continue_then_the_body_is_relayed(proxy, served):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        head, body, _ = read_response(sock, interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):])
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["body_length"] == 5


def test_keep_alive_idles_are_timed_one_by_one(proxy, served):
    # Pauses shorter than BERTH_PROXY_KEEPALIVE_S (2 s) that add up to more: the connection
    # stays open, since each wait for a request head has its own timer ...
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        for _ in range(4):
            sock.sendall(f"GET /echo HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            head, _, rest = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 ") and rest == b""
            time.sleep(0.9)
        # ... and a silence longer than that closes it, with nothing more sent.
        assert sock.recv(65536) == b""


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def test_every_worker_listens_on_the_port_itself(proxy):
    # SO_REUSEPORT: the kernel spreads new connections over the workers' own sockets, rather
    # than the first worker to wake taking a burst of long-lived keep-alive connections.
    listening = _listening_inodes(proxy.port)
    workers = proxy.worker_pids()
    assert len(workers) == 2 and len(listening) == 2
    for pid in workers:
        fds = Path(f"/proc/{pid}/fd")
        held = {os.readlink(fd).removeprefix("socket:[").rstrip("]")
                for fd in fds.iterdir() if os.readlink(fd).startswith("socket:[")}
        assert held & listening, f"worker {pid} has no listening socket of its own"


def test_a_second_proxy_on_the_same_port_refuses_to_start(proxy, redis_server, tmp_path):
    # Each worker binds with SO_REUSEPORT, which would let a second proxy join the port and
    # take part of its traffic; the arbiter checks the address is free before it starts.
    second = ProxyProcess(tmp_path, redis_server.url)
    second.env["BERTH_HTTP_PORT"] = str(proxy.port)
    process = Proc(second.args, tmp_path / "second.log", env=second.env)
    try:
        assert process.popen.wait(30) != 0
        assert f"cannot listen on 127.0.0.1:{proxy.port}" in process.output()
    finally:
        process.stop()
    status, _, _ = request(proxy.port, "GET", "/echo", HOST)
    assert status in (200, 404)  # the first one still answers
