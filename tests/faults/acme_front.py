"""An HTTPS front of pebble that injects the CA faults pebble cannot produce itself.

berth's worker talks to the front as its ACME directory; the front forwards every request to
pebble unchanged, Host header included, so pebble writes the front's address into every URL it
answers with (the directory, orders, Location headers) and the client keeps coming back here.
On top of that it can:

- `down()` / `up()`: stop listening and cut open connections (as for a CA that is down:
  connections refused), and listen again on the same port;
- `rate_limit(retry_after_s)`: answer every new-order request with a
  `urn:ietf:params:acme:error:rateLimited` problem (429, Retry-After, a fresh nonce from
  pebble, as a CA does); `rate_limit(None)` stops;
- `hold(fragment)`: keep requests whose path contains `fragment` waiting until `release()`,
  then forward them (the CA acts on a request even when its sender died meanwhile).

This stands in only for the rateLimited answer and the pause; everything else is pebble.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from harness.pebble import Pebble, write_localhost_tls
from harness.procs import free_port

RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
HOLD_LIMIT_S = 60  # a held request is forwarded after this even without release()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class AcmeFront:
    def __init__(self, pebble: Pebble, workdir: Path):
        self.pebble = pebble
        self.workdir = workdir
        self.port = free_port()
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self.retry_after_s: int | None = None
        self.limiting = False
        self._hold = ""
        self.arrived = threading.Event()
        self._released = threading.Event()
        self._server: _Server | None = None
        self._clients: set = set()  # open client connections, closed by down()
        self._upstream = ssl.create_default_context(cafile=str(pebble.ca_bundle))
        self._paths: dict[str, str] = {}
        self.ca_bundle: Path | None = None
        self._tls: ssl.SSLContext | None = None

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> AcmeFront:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert, key = write_localhost_tls(self.workdir)
        # What a client must trust: the front's listener and pebble's (its own URLs).
        self.ca_bundle = self.workdir / "trust.pem"
        self.ca_bundle.write_text(cert.read_text() + Path(self.pebble.ca_bundle).read_text())
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert, key)
        status, _headers, body = self._forward("GET", "/dir", {}, b"")
        directory = json.loads(body)
        self._paths = {name: urlsplit(directory[name]).path
                       for name in ("newNonce", "newOrder", "revokeCert")}
        self.up()
        return self

    def up(self) -> None:
        server = _Server(("127.0.0.1", self.port), self._handler())
        server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones (kept-alive clients included)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for conn in list(self._clients):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.release()
        self.down()

    def rate_limit(self, retry_after_s: int | None) -> None:
        self.limiting, self.retry_after_s = True, retry_after_s

    def no_rate_limit(self) -> None:
        self.limiting = False

    def hold(self, fragment: str) -> threading.Event:
        """Hold the requests whose path contains `fragment`; the event is set when one came."""
        self.arrived.clear()
        self._released.clear()
        self._hold = fragment
        return self.arrived

    def release(self) -> None:
        self._hold = ""
        self._released.set()

    def new_orders(self) -> list[int]:
        """The status answered to each new-order request so far."""
        return [s for m, p, s in self.requests if m == "POST" and p == self._paths["newOrder"]]

    # -- serving ---------------------------------------------------------------------------

    def _forward(self, method: str, path: str, headers: dict, body: bytes):
        conn = http.client.HTTPSConnection("127.0.0.1", self.pebble.acme_port,
                                           context=self._upstream, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _rate_limited(self, headers: dict) -> tuple[int, list, bytes]:
        _status, nonce_headers, _ = self._forward("HEAD", self._paths["newNonce"], headers, b"")
        problem = json.dumps({"type": RATE_LIMITED, "status": 429,
                              "detail": "too many new orders recently (injected by the test)"})
        answer = [("Content-Type", "application/problem+json")]
        answer += [(k, v) for k, v in nonce_headers if k.lower() == "replay-nonce"]
        if self.retry_after_s is not None:
            answer.append(("Retry-After", str(self.retry_after_s)))
        return 429, answer, problem.encode()

    def _answer(self, method: str, path: str, headers: dict, body: bytes):
        if self._hold and self._hold in path:
            self.arrived.set()
            self._released.wait(HOLD_LIMIT_S)
        if self.limiting and method == "POST" and path == self._paths.get("newOrder"):
            return self._rate_limited(headers)
        return self._forward(method, path, headers, body)

    def _handler(self):
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                front._clients.add(self.connection)

            def finish(self):
                front._clients.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                try:
                    status, answer, data = front._answer(self.command, self.path, headers, body)
                except OSError:  # pebble unreachable behind a listening front
                    status, answer, data = 502, [("Content-Type", "text/plain")], b"no CA"
                front.requests.append((self.command, self.path, status))
                with contextlib.suppress(OSError):  # the client may have died meanwhile
                    self.send_response(status)
                    for name, value in answer:
                        if name.lower() not in _HOP:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _any  # noqa: N815

        return Handler
