"""HTTP/1.1 for the command line: one request per connection, on a bare socket.

The standard library's http.client would do, but importing it (and the email package it
parses headers with) costs about 30 ms, a third of a command's start-up, on every command.
The API is the only server this talks to, so this is a client for what it answers: a status
line, headers, and a body framed by Content-Length, by chunked encoding, or by the end of
the connection (every request says `Connection: close`). TLS is imported only for https.

Every failure is an OSError (socket, TLS, timeouts: TimeoutError) or a ProtocolError.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

MAX_LINE = 64 * 1024  # a status or header line, or a chunk-size line
MAX_HEADERS = 100


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


def connect(host: str, port: int, *, tls: bool, timeout: float) -> socket.socket:
    """A connected socket (TLS verified against the system's CAs for https)."""
    # An ASCII name as bytes: a str would be encoded with the idna codec, whose import
    # (unicodedata, stringprep) costs more than the connection.
    sock = socket.create_connection((host.encode() if host.isascii() else host, port),
                                    timeout=timeout)
    if not tls:
        return sock
    import ssl  # only https pays for it

    try:
        return ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def send(sock: socket.socket, method: str, target: str, host: str,
         headers: Mapping[str, str], body: bytes | None) -> None:
    """Write one request. A value with a line break or a NUL (a token read from a file, say)
    would end the header early and smuggle in another: ValueError."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    for line in lines:
        if any(c in line for c in "\r\n\0"):
            raise ValueError(f"a line break or NUL in the request: {line.split(':')[0]!r}")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:  # not shown: it may be in the token
        raise ValueError("a character outside Latin-1 in the request's headers") from None
    sock.sendall(head + body if body else head)


class Response:
    """The status line and headers, read at once; the body on demand with `read` (all of
    it) or `read1` (what has arrived, for a stream)."""

    def __init__(self, sock: socket.socket, method: str):
        self._file = sock.makefile("rb")
        self.status, self.reason = self._status_line()
        self.headers = self._headers()
        while self.status < 200:  # interim answers (100 Continue, 103): the real one follows
            self.status, self.reason = self._status_line()
            self.headers = self._headers()
        self._chunked = "chunked" in self.getheader("Transfer-Encoding", "").lower()
        self._left: int | None = None  # body bytes still to read; None: up to the close
        self._chunk_left = 0
        self._done = method == "HEAD" or self.status in (204, 304)
        if not self._chunked and not self._done:
            length = self.getheader("Content-Length")
            if length is not None:
                if not (length.isascii() and length.isdigit()):  # not "²", "-1", "1, 2"
                    raise ProtocolError(f"invalid Content-Length {length[:40]!r}")
                self._left = int(length)

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def read(self) -> bytes:
        parts = []
        while chunk := self.read1(64 * 1024):
            parts.append(chunk)
        return b"".join(parts)

    def read1(self, size: int) -> bytes:
        """Up to `size` bytes of the body, waiting only until some have arrived; b"" at its
        end. A body cut short (by the connection's end) is a ProtocolError."""
        if self._done:
            return b""
        if self._chunked:
            if not self._chunk_left and not self._next_chunk():
                return b""
            data = self._file.read1(min(size, self._chunk_left))
            self._chunk_left -= len(data)
            if self._chunk_left == 0 and data and self._file.read(2) != b"\r\n":
                raise ProtocolError("a chunk not followed by CRLF")
        elif self._left is None:
            data = self._file.read1(size)
            self._done = not data
            return data
        else:
            data = self._file.read1(min(size, self._left)) if self._left else b""
            self._left -= len(data)
            self._done = self._left == 0
        if not data and not self._done:
            raise ProtocolError("the connection closed before the end of the body")
        return data

    def close(self) -> None:
        self._file.close()

    # -- internals -----------------------------------------------------------------------

    def _line(self) -> bytes:
        line = self._file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError("a line of the answer is too long")
        if not line.endswith(b"\n"):
            raise ProtocolError("the connection closed in the middle of the answer"
                                if line else "the connection closed without an answer")
        return line.rstrip(b"\r\n")

    def _status_line(self) -> tuple[int, str]:
        version, _, rest = self._line().decode("latin-1").partition(" ")
        code, _, reason = rest.partition(" ")
        if not (version.startswith("HTTP/1.") and len(code) == 3 and code.isascii()
                and code.isdigit()):
            raise ProtocolError(f"not an HTTP/1.x status line: {version[:20]!r}")
        return int(code), reason.strip()

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if not line:
                return headers
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"a malformed header line: {name[:40]!r}")
            name, value = name.lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raise ProtocolError(f"more than {MAX_HEADERS} headers")

    def _next_chunk(self) -> bool:
        """Read the next chunk's size line; False (and the trailers read) at the last."""
        size = self._line().split(b";")[0].strip()
        if not size or size.strip(b"0123456789abcdefABCDEF"):  # int() would take "0x1", "+1"
            raise ProtocolError(f"an invalid chunk size {size[:20]!r}")
        self._chunk_left = int(size, 16)
        if self._chunk_left == 0:
            while self._line():  # trailers, then the blank line
                pass
            self._done = True
            return False
        return True
