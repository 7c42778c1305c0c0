"""Raw HTTP/1.1 on the wire: split what a server sent back into its responses."""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import threading


class _Bytes(io.BytesIO):
    def close(self) -> None:  # http.client closes its file after each body; keep reading
        pass


class _Replay:
    """Stands in for a socket so http.client parses bytes that were already received."""

    def __init__(self, data: bytes):
        self.file = _Bytes(data)

    def makefile(self, *_args, **_kwargs):
        return self.file


def responses(data: bytes, method: str = "GET") -> list[tuple[int, http.client.HTTPMessage,
                                                              bytes]]:
    """Each complete response in `data`, in order: (status, headers, body)."""
    replay = _Replay(data)
    found = []
    while replay.file.tell() < len(data):
        response = http.client.HTTPResponse(replay, method=method)
        try:
            response.begin()
            body = response.read()
        except (http.client.HTTPException, ValueError):
            break  # a truncated tail: not a complete response
        found.append((response.status, response.headers, body))
    return found


def statuses(data: bytes) -> list[int]:
    return [status for status, _headers, _body in responses(data)]


def send_until_answered(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` while reading, and return what the server answered.

    A server that refuses an oversized head closes with our bytes unread, and the reset that
    follows can discard an answer not read yet; reading while a thread sends (rather than
    after sending everything) takes the answer in as soon as it arrives."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sender = threading.Thread(target=_send_quietly, args=(sock, data), daemon=True)
        sender.start()
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        sender.join(timeout)
        return received


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server may close before it has read it all
        sock.sendall(data)
