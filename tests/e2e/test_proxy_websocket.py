"""WebSocket tunnels through the real proxy, against a real echo server."""

from __future__ import annotations

import socket

import pytest
import websocket

from app.tracing import new_trace_id
from tests.e2e.conftest import request, request_events

pytestmark = pytest.mark.e2e


def connect(proxy, host: str, path: str = "/chat", **headers):
    return websocket.create_connection(f"ws://127.0.0.1:{proxy.port}{path}", host=host,
                                       header=[f"{k}: {v}" for k, v in headers.items()],
                                       timeout=5)


def test_messages_are_tunnelled_both_ways_and_the_close_is_one_event(proxy, routes, ws_backend,
                                                                     redis_client):
    route = routes.add("ws.test", [ws_backend.url])
    trace = new_trace_id()
    ws = connect(proxy, "ws.test", **{"X-Trace-Id": trace})
    assert ws.getheaders()["x-trace-id"] == trace
    for message in ("hello", "x" * 70_000, "bye"):
        ws.send(message)
        assert ws.recv() == message
    ws.send_binary(b"\x00\x01\x02")
    assert ws.recv() == b"\x00\x01\x02"
    ws.close()

    handshake = ws_backend.handshakes[-1]
    assert handshake["request"].startswith("GET /chat HTTP/1.1")
    assert handshake["x-forwarded-for"] == "127.0.0.1" and handshake["x-trace-id"] == trace

    [event] = request_events(redis_client, trace)
    assert event.type == "proxy_request_completed"
    data = event.data
    assert data["websocket"] is True and data["status"] == 101
    assert data["route_id"] == route.id
    # Masked client frames carry 4 bytes more each than the server's; both exceed the payloads.
    assert data["bytes_in"] > 70_000 + 8 and data["bytes_out"] > 70_000 + 8
    assert data["bytes_in"] > data["bytes_out"]


def test_an_idle_tunnel_is_closed(proxy, routes, ws_backend, redis_client):
    routes.add("idle.test", [ws_backend.url])
    trace = new_trace_id()
    ws = connect(proxy, "idle.test", **{"X-Trace-Id": trace})
    ws.settimeout(10)
    ws.send("ping")
    assert ws.recv() == "ping"
    # Nothing moves: the proxy closes the tunnel after its idle timeout (1.5 s here).
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        ws.recv()
    [event] = request_events(redis_client, trace)
    assert event.data["error"] == "websocket_idle"


def test_a_refused_upgrade_is_relayed_as_a_plain_response(proxy, routes, backend):
    routes.add("noupgrade.test", [backend.url])
    status, _, _ = request(proxy.port, "GET", "/echo", "noupgrade.test",
                           headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                    "Sec-WebSocket-Version": "13"})
    assert status == 200  # the backend ignored the upgrade and answered normally


def test_the_connection_ends_with_the_tunnel(proxy, routes, ws_backend):
    routes.add("after.test", [ws_backend.url])
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET /raw HTTP/1.1\r\nHost: after.test\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        # A masked close frame; the server answers it and closes, and so does the proxy.
        sock.sendall(bytes([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2]))
        rest = b""
        while chunk := sock.recv(4096):
            rest += chunk
        assert rest[:1] == b"\x88"  # the server's close frame, then EOF: no HTTP after it
    assert "Traceback" not in proxy.output()
