"""Real backends for the proxy end-to-end tests, each a threaded server on a free loopback port.

HttpBackend paths (any method):
  /echo...          JSON: method, path (raw target), headers, body length and SHA-256
  /bytes/<n>        n bytes of a repeating pattern, streamed (?chunked=1: chunked encoding)
  /sse?n=&gap=      n Server-Sent Events, `gap` seconds apart, each flushed on its own
  /slow?delay=      the answer after `delay` seconds
  /cut              promises 1000 bytes, sends 10 and closes
  /hop              a response carrying hop-by-hop headers
  /cookies          two Set-Cookie headers
  /status/<code>    an empty answer with that status
Every response carries `X-Backend: <name>`; `requests` counts what each backend served.
With keep_alive=False it answers HTTP/1.0 and closes every connection, so a stopped backend
leaves no pooled connection behind: it refuses connections at once.

WebSocketEcho: echoes each text/binary message back, answers ping and close, per RFC 6455.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from harness.procs import free_port

PATTERN = bytes(range(256)) * 4096  # 1 MiB


def pattern_bytes(count: int):
    """The /bytes/<n> body, in 1 MiB pieces."""
    while count > 0:
        piece = PATTERN[:min(count, len(PATTERN))]
        count -= len(piece)
        yield piece


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops SYNs in a burst of connections, which the
    # proxy then reports as a connect timeout.
    request_queue_size = 128


class HttpBackend:
    def __init__(self, name: str = "backend", port: int | None = None, keep_alive: bool = True):
        self.name = name
        self.keep_alive = keep_alive
        self.port = port or free_port()
        self.requests: list[tuple[str, str]] = []
        self.server = _Server(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpBackend:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if backend.keep_alive else "HTTP/1.0"
            # Head and body are separate writes: without TCP_NODELAY the body waits for the
            # client's delayed ACK (40 ms a request).
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (ConnectionError, TimeoutError, ValueError):
                    # ValueError: a chunked body cut off mid-size line (the proxy gave up on a
                    # malformed or stalled client); the connection is done either way.
                    self.close_connection = True

            def _any(self):
                backend.requests.append((self.command, self.path))
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                route = parts.path
                if route.startswith("/bytes/"):
                    return self._bytes(int(route.split("/")[2]), query.get("chunked") == "1")
                if route == "/sse":
                    return self._sse(int(query.get("n", 3)), float(query.get("gap", 0.2)))
                if route == "/slow":
                    self._drain()
                    time.sleep(float(query.get("delay", 1)))
                    return self._send(200, b"late")
                if route == "/cut":
                    self._drain()
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b"0123456789")
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                if route == "/hop":
                    self._drain()
                    return self._send(200, b"hop", [
                        ("Connection", "X-Private, keep-alive"), ("X-Private", "secret"),
                        ("Keep-Alive", "timeout=5"), ("Proxy-Authenticate", "Basic"),
                        ("Trailer", "X-Sum"), ("X-Kept", "yes")])
                if route == "/cookies":
                    self._drain()
                    return self._send(200, b"", [("Set-Cookie", "a=1; Path=/"),
                                                 ("Set-Cookie", "b=2; Path=/")])
                if route.startswith("/status/"):
                    self._drain()
                    return self._send(int(route.split("/")[2]), b"")
                return self._echo()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _any  # noqa: N815

            def do_HEAD(self):  # noqa: N802
                backend.requests.append((self.command, self.path))
                self.send_response(200)
                self.send_header("X-Backend", backend.name)
                self.send_header("Content-Length", "12345")
                self.end_headers()

            def _body(self):
                """Yield the request body as it arrives (Content-Length or chunked)."""
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return
                        remaining = size
                        while remaining:
                            data = self.rfile.read(min(remaining, 1 << 20))
                            if not data:
                                raise ConnectionError("short chunk")
                            remaining -= len(data)
                            yield data
                        self.rfile.readline()
                remaining = int(self.headers.get("Content-Length") or 0)
                while remaining:
                    data = self.rfile.read(min(remaining, 1 << 20))
                    if not data:
                        raise ConnectionError("short body")
                    remaining -= len(data)
                    yield data

            def _drain(self):
                for _ in self._body():
                    pass

            def _echo(self):
                digest, length = hashlib.sha256(), 0
                for data in self._body():
                    digest.update(data)
                    length += len(data)
                payload = json.dumps({
                    "backend": backend.name, "method": self.command, "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "body_length": length, "body_sha256": digest.hexdigest(),
                }).encode()
                self._send(200, payload, [("Content-Type", "application/json")])

            def _send(self, status, body, headers=()):
                self.send_response(status)
                self.send_header("X-Backend", backend.name)
                for name, value in headers:
                    self.send_header(name, value)
                if status not in (204, 304):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def _bytes(self, count, chunked):
                self._drain()
                self.send_response(200)
                self.send_header("X-Backend", backend.name)
                self.send_header("Content-Type", "application/octet-stream")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(count))
                self.end_headers()
                for piece in pattern_bytes(count):
                    if chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    else:
                        self.wfile.write(piece)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")

            def _sse(self, count, gap):
                self._drain()
                self.send_response(200)
                self.send_header("X-Backend", backend.name)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                for i in range(count):
                    event = f"id: {i}\ndata: event {i} at {time.time():.3f}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    time.sleep(gap)
                self.wfile.write(b"0\r\n\r\n")

        return Handler


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketEcho:
    """A minimal RFC 6455 echo server (one thread per connection)."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.handshakes: list[dict] = []
        self._closed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebSocketEcho:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._closed = True
        self.sock.close()

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        with conn:
            rfile = conn.makefile("rb")
            request = rfile.readline()
            headers = {}
            while (line := rfile.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            self.handshakes.append({"request": request.decode("latin-1"), **headers})
            if headers.get("upgrade", "").lower() != "websocket":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                return
            accept = base64.b64encode(hashlib.sha1(
                (headers.get("sec-websocket-key", "") + WS_GUID).encode()).digest()).decode()
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                          "X-Backend: ws\r\n\r\n").encode())
            try:
                while True:
                    opcode, payload = _read_frame(rfile)
                    if opcode == 0x8:  # close: answer it, then close
                        conn.sendall(_frame(0x8, payload[:2]))
                        return
                    if opcode == 0x9:
                        conn.sendall(_frame(0xA, payload))
                    elif opcode in (0x1, 0x2):
                        conn.sendall(_frame(opcode, payload))
            except (ConnectionError, OSError, ValueError):
                return


def _read_frame(rfile) -> tuple[int, bytes]:
    head = rfile.read(2)
    if len(head) < 2:
        raise ConnectionError("closed")
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", rfile.read(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = rfile.read(length)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return head + payload
