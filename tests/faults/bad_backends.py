"""Backends that misbehave at the socket level, each a thread on a free loopback port.

- `hang`: accepts, reads the request, never answers; counts the connections the client
  then closes (`released`), so a test sees the proxy give them up;
- `reset`: accepts, reads the request head, then closes with a TCP RST (SO_LINGER 0);
- any bytes: accepts, reads the request head, sends those bytes and closes (a malformed
  response: garbage instead of a status line, an invalid Content-Length...).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from harness.procs import free_port

HANG, RESET = "hang", "reset"


class BadBackend:
    def __init__(self, behaviour: str | bytes):
        self.behaviour = behaviour
        self.port = free_port()
        self.accepted = 0
        self.released = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        self._open: list[socket.socket] = []
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BadBackend:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._closed.set()
        self._sock.close()
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                head += chunk
        if self.behaviour == HANG:
            self._open.append(conn)  # unanswered until the client gives up, or stop()
            with contextlib.suppress(OSError):
                conn.settimeout(60)
                if conn.recv(1) == b"":
                    self.released += 1
            return
        if self.behaviour == RESET:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            with contextlib.suppress(OSError):
                conn.sendall(self.behaviour)
        conn.close()
