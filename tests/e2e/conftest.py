"""Fixtures for the proxy end-to-end tests: the real gunicorn proxy, real backends, and helpers
to add routes (waiting until both workers serve them) and to read request events."""

from __future__ import annotations

import http.client
import socket

import pytest

from app.events import Event
from app.models import Route
from app.redis import stream
from app.stores import RouteStore
from app.tracing import new_trace_id
from harness.procs import wait_until
from harness.proxy import ProxyProcess
from tests.e2e.backends import HttpBackend, WebSocketEcho
from tests.support.policy import LOOPBACK_ALLOWED

# Short timeouts so the timeout paths are quick to reach; nothing here is a timing assertion.
PROXY_ENV = {
    "BERTH_PROXY_READ_TIMEOUT_S": "1.5",
    "BERTH_PROXY_CLIENT_TIMEOUT_S": "2",
    "BERTH_PROXY_KEEPALIVE_S": "2",
    "BERTH_PROXY_WEBSOCKET_IDLE_S": "1.5",
    "BERTH_PROXY_TARGET_DOWN_S": "60",
    "BERTH_PROXY_CONNECT_TIMEOUT_S": "1",
    "BERTH_TRUSTED_PROXIES": "127.0.0.2",
    "BERTH_PROXY_LIMIT_REQUEST_LINE": "1024",
    "BERTH_PROXY_LIMIT_REQUEST_FIELD_SIZE": "2048",
    "BERTH_HTTPS_PORT": "8443",
    "BERTH_USER_TARGET_NETWORKS": LOOPBACK_ALLOWED,
}


@pytest.fixture(scope="session")
def backend():
    server = HttpBackend("a").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def backend_b():
    server = HttpBackend("b").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ws_backend():
    server = WebSocketEcho().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_proxy(redis_server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("proxy-tls")
    process = ProxyProcess(workdir, redis_server.url,
                           {**PROXY_ENV, "BERTH_TLS_DIR": str(workdir / "tls")},
                           config="proxy/gunicorn_tls.py", module="proxy.wsgi_tls:app",
                           port_variable="BERTH_HTTPS_PORT")
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def proxy(redis_server, tmp_path_factory):
    process = ProxyProcess(tmp_path_factory.mktemp("proxy"), redis_server.url, PROXY_ENV)
    process.start()
    yield process
    process.stop()


def request(port: int, method: str, path: str, host: str, headers: dict | None = None,
            body=None, source: str | None = None, timeout: float = 10.0):
    """One request on a new connection; returns (status, headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


class Routes:
    """Adds routes to the store and waits until the proxy serves them."""

    def __init__(self, redis_client, proxy: ProxyProcess):
        self.store = RouteStore(redis_client)
        self.proxy = proxy

    def add(self, host: str, targets: list[str], owner: str = "alice", **fields) -> Route:
        route = self.store.create(self.store.new(owner, Route.clean(
            {"host": host, "targets": targets, **fields})))
        probe = host.replace("*", "probe")
        path = fields.get("path_prefix", "/")
        # New connections land on either worker; both must serve the new route. An answer
        # alone cannot show it (another route of the same host answers the same path until
        # the new table arrives), so each probe's request event must name the new route.
        wait_until(lambda: self._served(route.id, probe, path),
                   what=f"proxy serving {host}{path}")
        return route

    def _served(self, route_id: str, host: str, path: str, probes: int = 8) -> bool:
        traces = [new_trace_id() for _ in range(probes)]
        for trace in traces:
            try:
                request(self.proxy.port, "GET", path, host, headers={"X-Trace-Id": trace})
            except (OSError, http.client.HTTPException):
                return False
        redis_client = self.store.client

        def routed():
            events = [Event.from_entry(eid, fields)
                      for eid, fields in redis_client.xrange(stream("request"))]
            by_trace = {e.trace_id: e.data["route_id"] for e in events if e.trace_id in traces}
            return by_trace if len(by_trace) == probes else None
        try:
            return all(r == route_id for r in wait_until(routed, timeout=5).values())
        except TimeoutError:
            return False


@pytest.fixture
def routes(redis_client, proxy):
    return Routes(redis_client, proxy)


def request_events(redis_client, trace_id: str, count: int = 1) -> list[Event]:
    """The request events carrying `trace_id`, once `count` of them have landed."""
    def found():
        events = [Event.from_entry(eid, fields)
                  for eid, fields in redis_client.xrange(stream("request"))]
        matching = [e for e in events if e.trace_id == trace_id]
        return matching if len(matching) >= count else None
    return wait_until(found, timeout=10, what=f"{count} event(s) for trace {trace_id}")


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything the proxy answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)
