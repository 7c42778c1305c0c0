"""Socket helpers shared by the proxy's server side (worker.py) and upstream side."""

from __future__ import annotations

import socket


def send_all(sock: socket.socket, data: bytes) -> None:
    """`sock.sendall(data)`, cheaper when the kernel takes `data` in one call, as it does
    for a request or response head: gevent's sendall asks the kernel for SO_SNDBUF first,
    on every call."""
    sent = sock.send(data)
    if sent != len(data):
        sock.sendall(memoryview(data)[sent:])
