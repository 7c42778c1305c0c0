"""WebSocket tunnels: after the upstream answered 101, bytes flow both ways until either side
closes or nothing moves in either direction for `idle_s`.

The relay is byte-level (frames are not parsed), so extensions and subprotocols pass through.
One greenlet copies each direction; a watchdog closes both sockets once the tunnel is idle.
A side that closes its sending half has that half-close passed on (plain TCP only: TLS
cannot half-close), so a closing handshake still completes in the other direction.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

import gevent

from proxy.headers import connection_tokens
from proxy.upstream import CHUNK, Connection


def is_upgrade(env: dict) -> bool:
    return (env.get("HTTP_UPGRADE", "").lower() == "websocket"
            and "upgrade" in connection_tokens(env.get("HTTP_CONNECTION")))


def switching_head(headers: list[tuple[str, str]]) -> bytes:
    """The 101 response for the client: the upstream's end-to-end headers (Sec-WebSocket-*,
    cookies, ...) plus the two hop-by-hop ones an upgrade needs."""
    lines = ["HTTP/1.1 101 Switching Protocols\r\n", "Upgrade: websocket\r\n",
             "Connection: Upgrade\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


class Tunnel:
    def __init__(self, client: socket.socket, upstream: Connection, idle_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.upstream = upstream
        self.idle_s = idle_s
        self.clock = clock
        self.bytes_in = 0  # client -> upstream
        self.bytes_out = 0  # upstream -> client
        self.idle_closed = False
        self._last = clock()

    def run(self, head: bytes) -> None:
        """Send the 101 head to the client, then relay until the tunnel ends."""
        self.client.settimeout(None)  # the watchdog, not socket timeouts, ends idle tunnels
        self.upstream.sock.settimeout(None)
        greenlets = []
        try:
            self.client.sendall(head)
            greenlets = [gevent.spawn(self._pump, self.upstream.rfile.read1, self.client, "out"),
                         gevent.spawn(self._pump, self.client.recv, self.upstream.sock, "in"),
                         gevent.spawn(self._watch)]
            gevent.joinall(greenlets[:2])
        finally:
            gevent.killall(greenlets)
            self._shutdown(self.client)
            self.upstream.close()

    def _pump(self, recv, dst: socket.socket, direction: str) -> None:
        while True:
            try:
                data = recv(CHUNK)
            except (OSError, ValueError):
                data = b""
            if not data:
                self._half_close(dst)
                return
            try:
                dst.sendall(data)
            except OSError:
                self._shutdown(self.client)
                self._shutdown(self.upstream.sock)
                return
            self._last = self.clock()
            if direction == "in":
                self.bytes_in += len(data)
            else:
                self.bytes_out += len(data)

    def _watch(self) -> None:
        while True:
            quiet = self.clock() - self._last
            if quiet >= self.idle_s:
                self.idle_closed = True
                self._shutdown(self.client)
                self._shutdown(self.upstream.sock)
                return
            gevent.sleep(self.idle_s - quiet)

    def _half_close(self, sock: socket.socket) -> None:
        if hasattr(sock, "getpeercert"):  # TLS cannot half-close: shutdown drops the TLS layer
            self._shutdown(self.client)
            self._shutdown(self.upstream.sock)
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
