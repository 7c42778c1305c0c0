"""The proxy's gunicorn worker: gunicorn's gevent worker with a cheaper per-request path.

gunicorn still accepts, parses and frames every request (its parser enforces the size limits
and refuses ambiguous framing, see gunicorn_common.py); what changes is bookkeeping that
costs more than the proxying itself on a small request:

- settings are read once per worker: gunicorn's Config resolves every `cfg.x` through
  `__getattr__` and a Setting object, dozens of times per request, although a running
  worker's settings never change (a reload starts new workers);
- the WSGI environ starts from a per-worker template instead of being rebuilt (gunicorn
  creates a new `wsgi.errors` wrapper, which looks its loggers up, for every request);
- the response head and the first piece of the body go out in one `send`, not two, and the
  Date header is formatted once a second;
- writes skip gevent's `sendall` when one `send` takes everything (see proxy/sockets.py);
- gunicorn's forwarded-IPs check skips parsing the peer's address on every request when
  no address is trusted (berth decides whom to believe itself, see gunicorn_common.py);
- the objects loaded at start-up are frozen out of the garbage collector's full passes;
- `Expect: 100-continue` is answered when the app first reads the body, not before the app
  runs: a request the route refuses (413 over its body limit, 401 without credentials) gets
  its answer without the client sending the body, and the connection closes, since the body
  the client may still send would otherwise be read as the next request.

The environ holds what gunicorn 27's `gunicorn.http.wsgi.create` puts there for a plain or
TLS TCP listener, minus `wsgi.early_hints` (neither Falcon nor the proxy sends 103s); unix
sockets and the PROXY protocol still go through gunicorn's own function, and HTTP/2 or the
PROXY protocol through gunicorn's own connection handling. Errors are answered by gunicorn
(`handle_error`; berth's JSON for unparsable heads, see app/gunicorn_errors.py), and the
request hooks still run.
"""

from __future__ import annotations

import errno
import gc
import os
import socket
import ssl
import time
from datetime import timedelta
from urllib.parse import unquote_to_bytes

import gevent
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.errors import NoMoreData
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser
from gunicorn.workers.base import Worker
from gunicorn.workers.base_async import ALREADY_HANDLED
from gunicorn.workers.ggevent import GeventWorker

from app.gunicorn_errors import ParseErrorAnswers
from proxy.sockets import send_all

_PROTOCOLS = {(1, 1): "HTTP/1.1", (1, 0): "HTTP/1.0"}




class SettledConfig:
    """A worker's gunicorn Config whose settings become plain attributes on first read."""

    def __init__(self, cfg):
        self._cfg = cfg

    def __getattr__(self, name):
        value = getattr(self._cfg, name)
        setattr(self, name, value)
        return value


class _Clock:
    """The HTTP Date header value, formatted at most once a second."""

    second = -1
    value = ""

    @classmethod
    def http_date(cls) -> str:
        now = int(time.time())
        if now != cls.second:
            cls.value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
            cls.second = now
        return cls.value


class ContinueOnRead:
    """A request body (wsgi.input) that sends `100 Continue` before its first read.

    gunicorn 27 marks a request whose head asked for it in `Request._expected_100_continue`
    (private; gunicorn.http.message) and sends the 100 in `wsgi.create` before the app runs;
    the worker clears that mark and wraps the body in this instead (tests/e2e/
    test_proxy_limits.py checks both sides).
    """

    __slots__ = ("body", "sock", "pending")

    def __init__(self, body, sock):
        self.body = body
        self.sock = sock
        self.pending = True

    def _continue(self) -> None:
        if self.pending:
            self.pending = False
            send_all(self.sock, b"HTTP/1.1 100 Continue\r\n\r\n")

    def read(self, size=None):
        self._continue()
        return self.body.read(size)

    def readline(self, size=None):
        self._continue()
        return self.body.readline(size)

    def readlines(self, size=None):
        self._continue()
        return self.body.readlines(size)

    def __iter__(self):
        self._continue()
        return iter(self.body)


def _announces_body(req) -> bool:
    return any(name == "TRANSFER-ENCODING" or (name == "CONTENT-LENGTH" and value != "0")
               for name, value in req.headers)


class ProxyResponse(wsgi.Response):
    """gunicorn's Response, holding its head back until the first body bytes (or the end)
    so both leave in one write."""

    _pending = b""
    # The body of a request that expects 100-continue, while its 100 has not gone out.
    unread_body: ContinueOnRead | None = None

    def default_headers(self) -> list[str]:
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        headers = [f"HTTP/{self.req.version[0]}.{self.req.version[1]} {self.status}\r\n",
                   f"Server: {self.version}\r\n", f"Date: {_Clock.http_date()}\r\n",
                   f"Connection: {connection}\r\n"]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        if self.unread_body is not None and self.unread_body.pending:
            # Answered without asking for the body: whether the client sends it anyway
            # cannot be told from here, so this connection carries no further request.
            self.unread_body.pending = False
            self.force_close()
        head = self.default_headers()
        head.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        head.append("\r\n")
        self._pending = "".join(head).encode("latin-1")
        self.headers_sent = True

    def _emit_body(self, data: bytes) -> None:
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        if self._pending:
            data, self._pending = self._pending + data, b""
        send_all(self.sock, data)

    def close(self) -> None:
        if not self.headers_sent:
            self.send_headers()
        tail = b"0\r\n\r\n" if self.chunked else b""
        if self._pending or tail:
            data, self._pending = self._pending + tail, b""
            send_all(self.sock, data)

    def can_sendfile(self) -> bool:
        return False  # the proxy relays streams; it never serves files


class ProxyRequest(Request):
    def _peer_is_trusted_proxy(self):
        # gunicorn parses the peer's address on every request to test it against an allow
        # list that, for the proxy, is empty (berth decides whom to believe itself).
        if not self.cfg.forwarded_allow_ips:
            return not isinstance(self.peer_addr, tuple)
        return super()._peer_is_trusted_proxy()


class ProxyParser(RequestParser):
    mesg_class = ProxyRequest


class ProxyWorker(ParseErrorAnswers, GeventWorker):
    """`worker_class` of the proxy processes (see gunicorn_common.py)."""

    def init_process(self):
        self.cfg = SettledConfig(self.cfg)
        self._environ = {**wsgi.base_environ(self.cfg), "wsgi.multithread": True,
                         "SCRIPT_NAME": ""}
        cfg = self.cfg
        # The keep-alive loop below serves HTTP/1 only; anything else is gunicorn's.
        self._http1_only = (cfg.keepalive > 0 and cfg.http_protocols == ["h1"]
                            and cfg.http2_cleartext == "off" and cfg.proxy_protocol == "off"
                            and getattr(cfg, "protocol", "http") == "http")
        super().init_process()

    def notify(self):
        """gunicorn's GeventWorker.notify calls sys.exit(0) in the main greenlet as soon as
        the arbiter is gone (SIGKILLed, say, while a supervisor starts another): requests in
        flight are cut, and those answered whose events were not yet handed to the publisher
        were lost (a fault test saw one per killed arbiter). An orphaned worker now stops as
        on SIGTERM: it closes its listeners, finishes what it serves (up to graceful_timeout),
        then flushes its events on the way out (worker_exit)."""
        Worker.notify(self)  # the liveness tick the arbiter watches
        if self.alive and self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            self.alive = False

    def run(self):
        # Everything loaded so far (the app, its libraries, the route table) lives as long as
        # the worker: out of the collector's sight, a full collection no longer walks it and
        # pauses every request in the worker for tens of milliseconds.
        gc.freeze()
        super().run()

    def handle(self, listener, client, addr):
        """AsyncWorker.handle for HTTP/1 with keep-alive, with the parser below."""
        if not self._http1_only:
            return super().handle(listener, client, addr)
        client.setblocking(1)
        req = None
        try:
            if (isinstance(client, ssl.SSLSocket) and not self.cfg.do_handshake_on_connect
                    and not self._handshake(client)):
                return
            parser = ProxyParser(self.cfg, client, addr)
            listener_name = listener.getsockname()
            try:
                while True:
                    req = None
                    # The app sets a timeout on the socket for body reads and writes; the wait
                    # for the next head has its own timer (new each time: a restarted libev
                    # timer resumes where it stopped), and two would cost two per request.
                    client.settimeout(None)
                    with gevent.Timeout(self.cfg.keepalive, False):
                        req = next(parser)
                    if not req:
                        break
                    self.handle_request(listener_name, req, client, addr)
            except NoMoreData as ex:
                self.log.debug("Ignored premature client disconnection. %s", ex)
            except StopIteration as ex:
                self.log.debug("Closing connection. %s", ex)
            except (ssl.SSLError, OSError):
                raise
            except Exception as ex:
                self.handle_error(req, client, addr, ex)
        except ssl.SSLError as ex:
            if ex.args[0] == ssl.SSL_ERROR_EOF:
                self.log.debug("ssl connection closed")
                client.close()
            else:
                self.log.debug("Error processing SSL request.")
                self.handle_error(req, client, addr, ex)
        except OSError as ex:
            if ex.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
            else:
                self.log.debug("Ignoring socket error %s", ex)
        except BaseException as ex:
            self.handle_error(req, client, addr, ex)
        finally:
            util.close(client)

    def _handshake(self, client: ssl.SSLSocket) -> bool:
        """The TLS handshake, given as long as a request head (`keepalive`): gunicorn's head
        timer only starts after it, so a peer that never finishes it would hold one of the
        worker's connections for good."""
        client.settimeout(self.cfg.keepalive)
        try:
            client.do_handshake()
        except TimeoutError:
            self.log.debug("TLS handshake from %s not finished in %ss", client.getpeername(),
                           self.cfg.keepalive)
            return False
        client.settimeout(None)
        return True

    def handle_request(self, listener_name, req, sock, addr):
        try:
            return self._handle_request(listener_name, req, sock, addr)
        except (gevent.GreenletExit, SystemExit):  # as GeventWorker.handle_request
            return None

    def _handle_request(self, listener_name, req, sock, addr):
        """gunicorn's AsyncWorker.handle_request with the environ and response above."""
        environ = {}
        resp = None
        expects_continue = req._expected_100_continue and _announces_body(req)
        req._expected_100_continue = False  # sent on the first read instead, see ContinueOnRead
        try:
            self.cfg.pre_request(self, req)
            if (isinstance(listener_name, tuple) and isinstance(addr, tuple)
                    and not req.proxy_protocol_info):
                resp = ProxyResponse(req, sock, self.cfg)
                environ = self.environ(req, sock, addr, listener_name)
            else:  # unix sockets, PROXY protocol: gunicorn's own environ
                resp, environ = wsgi.create(req, sock, addr, listener_name, self.cfg,
                                            response_class=ProxyResponse)
                environ["wsgi.multithread"] = True
            if expects_continue:
                resp.unread_body = environ["wsgi.input"] = ContinueOnRead(
                    environ["wsgi.input"], sock)
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            started = time.monotonic()
            respiter = self.wsgi(environ, resp.start_response)
            if respiter is ALREADY_HANDLED:
                return False
            try:
                for item in respiter:
                    resp.write(item)
                resp.close()
            finally:
                if self.cfg.accesslog:
                    self.log.access(resp, req, environ,
                                    timedelta(seconds=time.monotonic() - started))
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                raise StopIteration()
        except (StopIteration, OSError):
            raise
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:
                # The head has been produced: a 500 now would corrupt the response.
                self.log.exception("Error handling request")
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
        return True

    def environ(self, req, sock, addr: tuple, server: tuple) -> dict:
        """What gunicorn.http.wsgi.create puts in the environ, for a TCP listener."""
        env = self._environ.copy()
        env["wsgi.input"] = req.body
        env["gunicorn.socket"] = sock
        env["REQUEST_METHOD"] = req.method
        env["QUERY_STRING"] = req.query
        env["RAW_URI"] = req.uri
        env["SERVER_PROTOCOL"] = (_PROTOCOLS.get(req.version)
                                  or f"HTTP/{req.version[0]}.{req.version[1]}")
        repeated = None
        for name, value in req.headers:
            if name == "CONTENT-TYPE":
                env["CONTENT_TYPE"] = value
                continue
            if name == "CONTENT-LENGTH":
                env["CONTENT_LENGTH"] = value
                continue
            key = "HTTP_" + name.replace("-", "_")
            if key in env:  # repeated fields are joined once, at the end
                repeated = repeated or {}
                repeated.setdefault(key, [env[key]]).append(value)
            else:
                env[key] = value
        if repeated:
            for key, values in repeated.items():
                env[key] = ",".join(values)
        env["wsgi.url_scheme"] = req.scheme
        env["REMOTE_ADDR"] = addr[0]
        env["REMOTE_PORT"] = str(addr[1])
        env["SERVER_NAME"] = server[0]
        env["SERVER_PORT"] = str(server[1])
        path = req.path
        env["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1") if "%" in path else path
        return env
