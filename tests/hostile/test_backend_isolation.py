"""Response isolation: no byte of one exchange with a backend reaches another client.

A hostile backend (tests/hostile/hostile_backend.py) breaks framing in every way the status
and method rules allow: bodies on HEAD, 204 and 304, bytes past Content-Length, interim
responses after the final one, trailers followed by more, an unasked upgrade, an answer
before the request body was read. Each time it leaves a crafted complete response where a
careless pool would read it as the next answer. Between those exchanges, other clients of
the real gunicorn proxy (both workers) ask the same backend, through another owner's route,
for their own nonce, and every one of them must get exactly its own answer.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from harness.procs import free_port, wait_for_port
from tests.e2e.conftest import Routes, request
from tests.hostile.hostile_backend import CASES, EARLY, HostileBackend

pytestmark = pytest.mark.e2e

ROUNDS = 6  # hostile exchanges per case, each followed by VICTIMS honest ones
VICTIMS = 4
totals = {"victims": 0, "wrong": 0}


@pytest.fixture(scope="module")
def hostile():
    server = HostileBackend().start()
    yield server
    server.stop()


@pytest.fixture
def hostile_routes(hostile, redis_client, proxy):
    routes = Routes(redis_client, proxy)
    routes.add("evil.test", [hostile.url], owner="mallory")
    routes.add("victim.test", [hostile.url], owner="victor")
    return routes


def own_answers(proxy, host: str = "victim.test", count: int = VICTIMS) -> list[str]:
    """`count` honest requests, each on a new connection (so on either worker): the
    problems found, empty when every client got its own answer."""
    wrong = []
    for _ in range(count):
        nonce = uuid.uuid4().hex
        status, headers, body = request(proxy.port, "GET", f"/own/{nonce}", host)
        totals["victims"] += 1
        if (status, headers.get("X-Nonce"), body) != (200, nonce, nonce.encode()):
            totals["wrong"] += 1
            wrong.append(f"{status} {headers.get('X-Nonce')} {body[:40]!r}")
    return wrong


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_hostile_response_reaches_another_client(proxy, hostile, hostile_routes, case):
    method, _writes = CASES[case]
    problems = []
    for _ in range(ROUNDS):
        status, _headers, _body = request(proxy.port, method, f"/evil/{case}", "evil.test")
        assert status < 500 or status == 502, status
        time.sleep(0.02)  # the later writes of the case have landed on the proxy's side
        problems += own_answers(proxy)
    assert problems == [], f"{case}: {len(problems)} clients got another's answer: {problems}"


def test_an_answer_before_the_body_was_read_ends_the_connection(proxy, hostile,
                                                                 hostile_routes):
    """The backend answers on the head alone; the body, which the client filled with
    request lines, is what it reads next. The proxy streams bodies over 64 KiB in pieces and
    sees the answer arrive between two pieces: that connection is never reused."""
    line = b"GET /own/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    body = line * (3 * 65536 // len(line))
    problems = []
    for _ in range(ROUNDS):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"POST /evil/%s HTTP/1.1\r\nHost: evil.test\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % (EARLY.encode(), len(body)))
            for start in range(0, len(body), 65536):
                sock.sendall(body[start:start + 65536])
                time.sleep(0.01)
            answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        time.sleep(0.02)
        problems += own_answers(proxy)
    assert problems == []


def test_a_client_gone_mid_body_closes_the_upstream_connection(proxy, hostile, hostile_routes):
    before = hostile.cut_bodies
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"POST /own/cut HTTP/1.1\r\nHost: victim.test\r\n"
                         b"Content-Length: 300000\r\n\r\n" + b"x" * 150000)
            time.sleep(0.05)
    # The backend saw each body end early: the proxy closed the connection, not pooled it.
    deadline = time.monotonic() + 10
    while hostile.cut_bodies - before < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hostile.cut_bodies - before == 3
    assert own_answers(proxy, count=8) == []


def test_honest_exchanges_are_still_pooled(proxy, hostile, hostile_routes):
    """The rule closes what it must and no more: clean exchanges keep their connection."""
    for case in ("head-body", "past-length"):  # leave no pooled connection behind
        request(proxy.port, CASES[case][0], f"/evil/{case}", "evil.test")
    before = hostile.connections
    assert own_answers(proxy, count=40) == []
    assert hostile.connections - before <= 4  # one or two per worker, not one per request


def test_chunked_with_trailers_exactly_at_its_end_is_reused(proxy, hostile, hostile_routes):
    before = hostile.connections
    for _ in range(20):
        status, _headers, body = request(proxy.port, "GET", "/trailers", "evil.test")
        assert status == 200
    assert hostile.connections - before <= 4


# gevent's pywsgi (a real server) sends the body on HEAD: a server's accident, not an
# attack, and the next request through a careless pool gets it as its answer.
PYWSGI_APP = """
import sys
from gevent.pywsgi import WSGIServer

def app(env, start_response):
    path = env["PATH_INFO"]
    nonce = path[len("/own/"):].encode() if path.startswith("/own/") else b"page"
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Nonce", nonce.decode()),
                              ("Content-Length", str(len(nonce)))])
    return [nonce]

WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None).serve_forever()
"""


@pytest.fixture
def pywsgi_backend():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", PYWSGI_APP, str(port)])
    try:
        wait_for_port(port, proc=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def test_a_real_server_sending_a_body_on_head(proxy, redis_client, pywsgi_backend):
    Routes(redis_client, proxy).add("pywsgi.test", [pywsgi_backend], owner="mallory")
    problems = []
    for _ in range(ROUNDS):
        status, _headers, body = request(proxy.port, "HEAD", "/page", "pywsgi.test")
        assert (status, body) == (200, b"")
        problems += own_answers(proxy, host="pywsgi.test")
    assert problems == []


def read_responses(rfile, count: int) -> list[tuple[int, str | None, bytes]]:
    """`count` Content-Length framed responses read one after another off `rfile`."""
    answers = []
    for _ in range(count):
        status = int(rfile.readline().split(b" ", 2)[1])
        fields = {}
        while (line := rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        answers.append((status, fields.get("x-nonce"),
                        rfile.read(int(fields.get("content-length", "0")))))
    return answers


def test_pipelined_clients_get_their_answers_in_order_while_a_backend_misbehaves(
        proxy, hostile, hostile_routes):
    """Clients that pipeline: eight requests in one write, each with its own nonce, while
    another client keeps the hostile cases coming on the same backend."""
    stop = threading.Event()

    def misbehave():
        while not stop.is_set():
            for case, (method, _writes) in sorted(CASES.items()):
                request(proxy.port, method, f"/evil/{case}", "evil.test")

    attacker = threading.Thread(target=misbehave, daemon=True)
    attacker.start()
    problems = []
    try:
        for _ in range(10):
            nonces = [uuid.uuid4().hex for _ in range(8)]
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
                sock.sendall(b"".join(b"GET /own/%s HTTP/1.1\r\nHost: victim.test\r\n\r\n"
                                      % n.encode() for n in nonces))
                answers = read_responses(sock.makefile("rb"), len(nonces))
            for nonce, got in zip(nonces, answers, strict=True):
                totals["victims"] += 1
                if got != (200, nonce, nonce.encode()):
                    totals["wrong"] += 1
                    problems.append(f"{got[0]} {got[1]} {got[2][:40]!r}")
    finally:
        stop.set()
        attacker.join(30)
    assert problems == []


def test_figures(proxy, hostile, hostile_routes):
    """Printed for the README: how many honest answers were checked, how many went wrong."""
    print(f"\nresponse isolation: {len(CASES) + 2} hostile framings, {totals['victims']} "
          f"honest requests between them, {totals['wrong']} answered with another's bytes")
    assert totals["wrong"] == 0


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data

