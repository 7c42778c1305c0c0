"""A backend that breaks HTTP/1.1 framing on purpose, over raw sockets on loopback.

Every connection is served in a loop, as a keep-alive server would. `/own/<nonce>` is an
honest answer whose body and `X-Nonce` header are the nonce, so a client can tell its own
answer from anyone else's; `/trailers` is an honest chunked answer with a trailer.
`/evil/<case>` sends the case's hostile bytes (see CASES), which carry a complete crafted
response (`X-Nonce: smuggled`) wherever a proxy might take them for
the next exchange's answer. Anything else (the route probes) gets a plain 200.

`connections` counts accepted connections, so a test can show that honest exchanges are
still pooled; `cut_bodies` counts request bodies that ended early (the proxy closed the
connection in the middle of a body, as it must when its client went away).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from harness.procs import free_port

SMUGGLED = b"smuggled"
CRAFTED = (b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Nonce: smuggled\r\n"
           b"Content-Type: text/plain\r\n\r\n" + SMUGGLED)
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra)) + body


# case -> (method the test sends, [writes, each sent alone, with a pause between]).
# Every case leaves CRAFTED where a careless pool would read it as the next answer.
CASES: dict[str, tuple[str, list[bytes]]] = {
    # A body on HEAD, announced by Content-Length, in the same write as the head...
    "head-body": ("HEAD", [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(CRAFTED), CRAFTED)]),
    # ... and a moment after it, as a server writing head and body separately does.
    "head-body-later": ("HEAD", [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                                 % len(CRAFTED), CRAFTED]),
    # A body on HEAD that the head does not announce.
    "head-unannounced": ("HEAD", [b"HTTP/1.1 200 OK\r\n\r\n" + CRAFTED]),
    # Bytes past Content-Length, in the same write and in a later one.
    "past-length": ("GET", [_ok(b"ok") + CRAFTED]),
    "past-length-later": ("GET", [_ok(b"ok"), CRAFTED]),
    # Statuses that forbid a body, with one.
    "204-body": ("GET", [b"HTTP/1.1 204 No Content\r\n\r\n" + CRAFTED]),
    "204-announced": ("GET", [b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n"
                              % len(CRAFTED), CRAFTED]),
    "304-body": ("GET", [b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n" + CRAFTED]),
    "304-announced": ("GET", [b"HTTP/1.1 304 Not Modified\r\nContent-Length: %d\r\n\r\n"
                              % len(CRAFTED), CRAFTED]),
    # Interim responses in unexpected places: after the final one, before and after it.
    "1xx-after-final": ("GET", [_ok(b"ok") + b"HTTP/1.1 100 Continue\r\n\r\n" + CRAFTED]),
    "1xx-around": ("GET", [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + _ok(b"ok"),
                           b"HTTP/1.1 100 Continue\r\n\r\n" + CRAFTED]),
    # An upgrade nobody asked for, with a response behind it.
    "101-unasked": ("GET", [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                            b"Connection: Upgrade\r\n\r\n" + CRAFTED]),
    # Chunked with trailers, then a crafted response in the same write and a later one.
    "chunked-trailers": ("GET", [CHUNKED_HEAD + b"\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n"
                                 + CRAFTED]),
    "chunked-trailers-later": ("GET", [CHUNKED_HEAD + b"\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n",
                                       CRAFTED]),
    # Close-delimited: everything up to the close is this response's body.
    "close-delimited": ("GET", [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok" + CRAFTED]),
    # Two complete answers to one request.
    "two-answers": ("GET", [_ok(b"ok") + _ok(b"again")]),
}
# Answered as soon as the head is in, without reading the body: the rest of the body (a
# request line the client wrote into it) would then be read as the connection's next request.
EARLY = "early"


class HostileBackend:
    def __init__(self, pause_s: float = 0.005):
        self.port = free_port()
        self.pause_s = pause_s
        self.connections = 0
        self.cut_bodies = 0
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=128)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostileBackend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        try:
            with sock, reader:
                while self._one(sock, reader):
                    pass
        except OSError:
            pass

    def _one(self, sock: socket.socket, reader) -> bool:
        """Serve one request; False when the connection is done."""
        line = reader.readline(65536)
        if not line:
            return False
        try:
            method, target = line.split(b" ")[:2]
        except ValueError:
            return False  # not a request line
        headers = {}
        while (field := reader.readline(65536)) not in (b"\r\n", b"\n", b""):
            name, _, value = field.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        path = target.decode("latin-1")
        with self._lock:
            self.requests.append(path)
        if path == f"/evil/{EARLY}":
            sock.sendall(_ok(b"early"))
            return True  # the body, unread, is parsed as what comes next
        if not self._read_body(reader, headers):
            with self._lock:
                self.cut_bodies += 1
            return False
        if path.startswith("/own/"):
            nonce = path.removeprefix("/own/").encode()
            sock.sendall(_ok(nonce, b"X-Nonce: %s\r\n" % nonce))
            return True
        if path == "/trailers":  # honest: chunked with a trailer, ending exactly there
            sock.sendall(CHUNKED_HEAD + b"\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n")
            return True
        case = CASES.get(path.removeprefix("/evil/"))
        if case is None:
            sock.sendall(_ok(b"probe" if method != b"HEAD" else b""))
            return True
        for index, write in enumerate(case[1]):
            if index:
                time.sleep(self.pause_s)
            sock.sendall(write)
        return path.removeprefix("/evil/") != "close-delimited"

    @staticmethod
    def _read_body(reader, headers: dict[str, str]) -> bool:
        """Read the request body; False when the connection ended inside it."""
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                size_line = reader.readline(65536)
                if not size_line.endswith(b"\n"):
                    return False
                size = int(size_line.split(b";")[0], 16)
                if len(reader.read(size + 2)) < size + 2:
                    return False
                if size == 0:
                    return True
        length = int(headers.get("content-length", "0") or 0)
        return len(reader.read(length)) == length if length else True
