"""The upstream side: a hand-written HTTP/1.1 client over (gevent) sockets.

One `UpstreamPool` per worker keeps idle keep-alive connections per route owner and
(host, port, tls), LIFO, and remembers which targets recently refused connections (passive
health). `Upstream.send` picks a route's targets round-robin, skipping those marked down,
writes the request head and streams the client's body, then reads the response head; the body
is read by iterating the returned `UpstreamResponse`, so nothing is ever buffered whole.

Reuse: a connection goes back to the pool only when the exchange ended exactly at its framing
and nothing more is buffered or readable (`Connection.reusable`, asked by
`UpstreamResponse.close`, the one place that decides). Anything else closes it: a byte past
the body, a response head that announces a body the method or status forbids (a broken server
sends that body, maybe a moment later), a response that arrived while the request was still
being sent, a body not read to its end. So no byte of one exchange can reach another client.
What no pool can see are bytes a backend sends after an exchange that ended cleanly, once the
connection is idle or already carries the next request: HTTP/1.1 cannot tell them from the
answer to that request (nginx and HAProxy cannot either). Pools are kept per owner so that
such a backend only ever answers requests of the owner whose routes target it.

Restricted routes (written last by a user token, Route.restricted): the target's name is
resolved here and each address is checked against the target policy (app/target_policy.py)
before connecting to exactly that address, so a name that resolves to a denied address (DNS
rebinding) is answered 502 without a connection. Their connections are pooled apart from
others', so they never reuse one that was not checked. Other routes cost nothing extra.

Retries: a target that fails to connect is marked down; the request moves to the next target
only when the method is idempotent (nothing was sent). A pooled connection that turns out to
be closed before any response byte is replaced by a fresh one to the same target, once, when
the method is idempotent and the body is small enough to have been kept for a replay.

    UpstreamError (BerthError)        .status, .code for the client answer and the event
    ├── ConnectFailed          502/504  refused, unreachable or timed out while connecting
    │   └── TargetDenied       502      a restricted route's target resolves only to denied
    │                                   addresses (nothing is connected)
    ├── UpstreamTimeout        504      no response bytes within the read timeout
    ├── UpstreamClosed         502      the connection closed or reset mid-exchange
    └── UpstreamProtocolError  502      a response we will not relay (bad framing, garbage)
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gevent import monkey
from gunicorn.http.errors import ParseException

from app.errors import BerthError
from app.target_policy import TargetPolicy
from proxy.routing import RouteEntry, Target
from proxy.sockets import send_all

CHUNK = 64 * 1024
MAX_LINE = 64 * 1024
MAX_HEADERS = 200
MAX_INTERIM = 16  # 1xx responses before the final one; a backend sending more is refused
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_NO_BODY_STATUS = frozenset({204, 304})
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a field value
_CONTROL_BUT_CR_LF = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
# A zero-timeout poll never blocks, so the unpatched call skips a trip through the hub.
_select = monkey.get_original("select", "select")


class UpstreamError(BerthError):
    status = 502
    code = "upstream_error"

    def __init__(self, description: str, *, received: bool = False):
        super().__init__(description)
        self.received = received  # whether any response byte had arrived
        self.target = ""  # the target's URL, once known


class ConnectFailed(UpstreamError):
    code = "upstream_connect_failed"


class TargetDenied(ConnectFailed):
    code = "upstream_target_denied"


class ConnectTimeout(ConnectFailed):
    status = 504
    code = "upstream_connect_timeout"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamClosed(UpstreamError):
    code = "upstream_closed"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"


class ClientBodyError(BerthError):
    """The client stopped sending its request body (timeout, disconnect, bad chunking)."""

    code = "client_body_incomplete"


class BodyTooLarge(BerthError):
    code = "body_too_large"


class RequestBody:
    """The client's request body: read once, in pieces, under the route's size limit.

    A body with a known length of at most CHUNK bytes is read before connecting, so it goes
    out with the head in one write and can be replayed on a fresh connection.
    """

    __slots__ = ("stream", "length", "chunked", "limit", "received", "kept")

    def __init__(self, stream, length: int | None, chunked: bool, limit: int = 0):
        self.stream = stream
        self.length = length
        self.chunked = chunked
        self.limit = limit
        self.received = 0
        self.kept: bytes | None = None
        if limit and length is not None and length > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")

    @property
    def empty(self) -> bool:
        return not self.chunked and not self.length

    @property
    def replayable(self) -> bool:
        return self.empty or self.kept is not None

    def preload(self) -> None:
        if self.length and self.length <= CHUNK:
            self.kept = self._read(self.length)
            if len(self.kept) < self.length:
                raise ClientBodyError("the client sent less than its Content-Length")

    def _read(self, size: int) -> bytes:
        try:
            data = self.stream.read(size)
        except (OSError, ValueError, ParseException) as ex:  # timeout, reset, bad chunking
            raise ClientBodyError(f"reading the request body failed: {ex}") from ex
        self.received += len(data)
        if self.limit and self.received > self.limit:
            raise BodyTooLarge(f"the body is larger than {self.limit} bytes")
        return data

    def pieces(self) -> Iterator[bytes]:
        """The body as it arrives from the client (what was preloaded, if anything)."""
        if self.kept is not None:
            yield self.kept
            return
        remaining = self.length if not self.chunked else None
        while remaining is None or remaining > 0:
            data = self._read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not data:
                if remaining:
                    raise ClientBodyError("the client sent less than its Content-Length")
                return
            if remaining is not None:
                remaining -= len(data)
            yield data


class Connection:
    __slots__ = ("sock", "rfile", "target", "idle_since", "reused", "read_timeout", "checked")

    def __init__(self, sock: socket.socket, target: Target, read_timeout: float | None = None,
                 checked: bool = False):
        self.sock = sock
        self.rfile = sock.makefile("rb", buffering=CHUNK)
        self.target = target
        self.idle_since = 0.0
        self.reused = False
        self.read_timeout = read_timeout
        self.checked = checked  # its peer address passed the target policy

    @property
    def pool_key(self) -> tuple:
        return (self.target.pool_key, self.checked)

    def close(self) -> None:
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass

    def still_open(self) -> bool:
        """False when the peer closed (or sent something unasked, such as a TLS alert) while
        the connection was idle: readable then means EOF or junk, never a response."""
        try:
            readable, _, _ = _select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def answered_early(self) -> bool:
        """Whether the upstream has sent something while the request is still going out."""
        return not self.still_open() or self._tls_pending()

    def reusable(self) -> bool:
        """True when nothing at all follows the exchange just read: no byte in our read
        buffer, none decrypted but unread (TLS), none readable on the socket (nor EOF)."""
        if not self.still_open() or self._tls_pending():
            return False
        # The buffered reader keeps what one read brought beyond the response; peek shows
        # it. Non-blocking for this one call, since with an empty buffer peek reads the
        # socket, which must not wait (nothing readable is the answer we hope for).
        self.sock.settimeout(0)
        try:
            extra = self.rfile.peek(1)
        except ssl.SSLWantReadError:
            extra = b""
        except (OSError, ValueError):
            return False
        finally:
            self.sock.settimeout(self.read_timeout)
        return not extra

    def _tls_pending(self) -> bool:
        pending = getattr(self.sock, "pending", None)
        return pending is not None and pending() > 0


class UpstreamPool:
    """Per-worker keep-alive connections and target health; never shared across processes."""

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 60.0,
                 idle_s: float = 30.0, max_idle: int = 64, down_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 tls_context: ssl.SSLContext | None = None,
                 policy: TargetPolicy | None = None):
        self.policy = policy or TargetPolicy(())  # without one, restricted routes reach nothing
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_s = idle_s
        self.max_idle = max_idle
        self.down_s = down_s
        self.clock = clock
        self._tls_context = tls_context
        self._idle: dict[tuple, deque[Connection]] = {}
        self._down_until: dict[tuple, float] = {}
        self.connects = 0  # fresh connections opened (for tests and diagnostics)

    # -- health ----------------------------------------------------------------------

    def is_down(self, target: Target) -> bool:
        until = self._down_until.get(target.key)
        return until is not None and until > self.clock()

    def mark_down(self, target: Target) -> None:
        if self.down_s > 0:
            self._down_until[target.key] = self.clock() + self.down_s

    def plan(self, entry: RouteEntry) -> list[Target]:
        """The route's targets in the order to try them: round-robin from this request's
        turn, healthy ones first, then the down ones, soonest back first."""
        targets = entry.targets
        if len(targets) == 1:
            return list(targets)
        start = next(entry.turn) % len(targets)
        rotated = targets[start:] + targets[:start]
        healthy = [t for t in rotated if not self.is_down(t)]
        if len(healthy) == len(rotated):
            return healthy
        down = sorted((t for t in rotated if self.is_down(t)),
                      key=lambda t: self._down_until.get(t.key, 0.0))
        return healthy + down

    # -- connections -----------------------------------------------------------------

    def acquire(self, target: Target, restricted: bool = False) -> Connection:
        """An idle pooled connection to `target` that is still open (for a restricted route,
        one whose address was checked), or a new one."""
        idle = self._idle.get((target.pool_key, restricted))
        now = self.clock()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since <= self.idle_s and conn.still_open():
                conn.reused = True
                return conn
            conn.close()
        return self.connect(target, restricted)

    def connect(self, target: Target, restricted: bool = False) -> Connection:
        try:
            if restricted:
                sock = self._connect_checked(target)
            else:
                sock = socket.create_connection((target.host, target.port),
                                                timeout=self.connect_timeout)
        except TargetDenied:
            raise  # not a health problem: the target is not marked down
        except TimeoutError as ex:
            self.mark_down(target)
            raise ConnectTimeout(f"connecting to {target.url} timed out") from ex
        except OSError as ex:
            self.mark_down(target)
            raise ConnectFailed(f"cannot connect to {target.url}: {ex.strerror or ex}") from ex
        self._down_until.pop(target.key, None)
        self.connects += 1
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.tls:
            try:
                sock = self._context().wrap_socket(sock, server_hostname=target.host)
            except (OSError, ssl.SSLError) as ex:
                sock.close()
                raise ConnectFailed(f"TLS with {target.url} failed: {ex}") from ex
        sock.settimeout(self.read_timeout)
        return Connection(sock, target, self.read_timeout, checked=restricted)

    def _connect_checked(self, target: Target) -> socket.socket:
        """Resolve once, connect only to addresses the policy allows (to the address itself,
        so nothing resolves the name again in between)."""
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as ex:
            raise ConnectFailed(f"cannot resolve {target.host}: {ex}") from ex
        error: OSError | None = None
        for family, kind, proto, _name, address in infos:
            if self.policy.refusal(address[0], target.port) is not None:
                continue
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect(address)
                return sock
            except OSError as ex:
                sock.close()
                error = ex
        if error is None:
            raise TargetDenied(f"{target.url} resolves only to addresses user routes may "
                               "not reach")
        raise error

    def release(self, conn: Connection) -> None:
        """Back into the pool for the next request to the same upstream."""
        idle = self._idle.setdefault(conn.pool_key, deque())
        now = self.clock()
        while idle and now - idle[0].idle_since > self.idle_s:  # drop the stale, oldest first
            idle.popleft().close()
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = ssl.create_default_context()
        return self._tls_context


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    length: int | None  # None: chunked or until close
    chunked: bool
    keep_alive: bool


class UpstreamResponse:
    """A response whose head has been read; iterate it for the body, exactly once."""

    def __init__(self, pool: UpstreamPool, conn: Connection, head: ResponseHead):
        self.pool = pool
        self.conn = conn
        self.head = head
        self.target = conn.target
        self.received = 0
        self._done = head.length == 0 and not head.chunked
        self._open = True

    @property
    def status(self) -> int:
        return self.head.status

    def __iter__(self) -> Iterator[bytes]:
        try:
            if self.head.chunked:
                yield from self._chunked()
            elif self.head.length is not None:
                yield from self._sized(self.head.length)
            else:
                yield from self._until_close()
            self._done = True
        except TimeoutError as ex:
            raise UpstreamTimeout("the upstream stopped sending its response",
                                  received=True) from ex
        except (OSError, ValueError) as ex:
            raise UpstreamClosed(f"the upstream connection failed: {ex}", received=True) from ex
        finally:
            self.close()

    def close(self) -> None:
        """Return the connection to the pool when the exchange ended exactly at its framing
        and nothing else has arrived (see the module docstring), else close it."""
        if not self._open:
            return
        self._open = False
        if self._done and self.head.keep_alive and self.conn.reusable():
            self.pool.release(self.conn)
        else:
            self.conn.close()

    def _sized(self, remaining: int) -> Iterator[bytes]:
        read1 = self.conn.rfile.read1
        while remaining > 0:
            data = read1(min(remaining, CHUNK))
            if not data:
                raise UpstreamClosed("the upstream closed before the end of its response",
                                     received=True)
            remaining -= len(data)
            self.received += len(data)
            yield data

    def _chunked(self) -> Iterator[bytes]:
        rfile = self.conn.rfile
        while True:
            line = rfile.readline(MAX_LINE)
            if not line.endswith(b"\n"):
                raise UpstreamProtocolError("truncated chunk size line", received=True)
            size_text = line.split(b";", 1)[0].rstrip(b"\r\n").rstrip(b" \t")
            # Hex digits only: int() would also take "1_0", "+5", " 5" or "0x5".
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise UpstreamProtocolError("invalid chunk size", received=True)
            size = int(size_text, 16)
            if size == 0:
                break
            yield from self._sized(size)
            if rfile.readline(MAX_LINE) not in (b"\r\n", b"\n"):
                raise UpstreamProtocolError("chunk without its line end", received=True)
        for _ in range(MAX_HEADERS + 1):  # trailers are dropped
            line = rfile.readline(MAX_LINE)
            if line in (b"\r\n", b"\n"):
                return
            if not line.endswith(b"\n"):
                raise UpstreamClosed("truncated chunked trailer", received=True)
        raise UpstreamProtocolError("too many chunked trailer fields", received=True)

    def _until_close(self) -> Iterator[bytes]:
        read1 = self.conn.rfile.read1
        while data := read1(CHUNK):
            self.received += len(data)
            yield data


def request_head(method: str, path: str, host: str, headers: list[tuple[str, str]],
                 body: RequestBody) -> bytes:
    lines = [f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    if body.chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    elif body.length or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {body.length or 0}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def read_head(rfile, method: str) -> ResponseHead:
    """Parse a response head, skipping interim 1xx responses other than 101."""
    for _ in range(MAX_INTERIM + 1):
        lines, clean = _head_lines(rfile)
        version, _, rest = lines[0].partition(" ")
        status_text, _, reason = rest.partition(" ")
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(status_text) != 3 \
                or not (status_text.isascii() and status_text.isdigit()):
            raise UpstreamProtocolError("the upstream did not answer with HTTP/1.x",
                                        received=True)
        status = int(status_text)
        if 100 <= status < 200 and status != 101:
            continue
        headers, framing = _fields(lines, clean)
        return _frame(status, reason, headers, framing, method, http11=version == "HTTP/1.1")
    raise UpstreamProtocolError("too many interim responses", received=True)


def _head_lines(rfile) -> tuple[list[str], bool]:
    """The lines of one response head without their line ends, decoded as latin-1, and
    whether the head is free of control characters (then no field needs checking)."""
    buffered = rfile.peek(MAX_LINE)  # what one read brought: usually the whole head
    if not buffered:
        raise UpstreamClosed("the upstream closed without responding")
    end = buffered.find(b"\r\n\r\n")
    if end >= 0:
        head = rfile.read(end + 4)[:-4]
        return head.decode("latin-1").split("\r\n"), _clean(head)
    lines = []  # a head spread over several reads, or with bare LF line ends
    while True:
        line = rfile.readline(MAX_LINE)
        if line in (b"\r\n", b"\n"):
            return lines, False
        if not line.endswith(b"\n") or len(lines) > MAX_HEADERS:
            raise UpstreamProtocolError("truncated or oversized response head", received=True)
        lines.append(line.rstrip(b"\r\n").decode("latin-1"))


def _clean(head: bytes) -> bool:
    """No control character in `head` but the CR LF pairs that end its lines (counting is
    several times faster than one regular expression with lookarounds)."""
    pairs = head.count(b"\r\n")
    return (head.count(b"\r") == pairs == head.count(b"\n")
            and not _CONTROL_BUT_CR_LF.search(head))


def _fields(lines: list[str], clean: bool) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The header fields, and the values of those that frame the response by lower-case
    name (a repeated one joined with commas)."""
    if len(lines) > MAX_HEADERS + 1:
        raise UpstreamProtocolError("too many response headers", received=True)
    headers = []
    framing: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            raise UpstreamProtocolError("malformed response header", received=True)
        value = value.strip(" \t")
        if not clean and _CONTROL.search(value):
            continue  # a control character cannot be relayed safely; drop the field
        headers.append((name, value))
        lower = name.lower()
        if lower in _FRAMING:
            framing[lower] = f"{framing[lower]},{value}" if lower in framing else value
    return headers, framing


def _frame(status: int, reason: str, headers: list[tuple[str, str]], framing: dict[str, str],
           method: str, http11: bool) -> ResponseHead:
    lengths = {v.strip() for v in framing["content-length"].split(",")} \
        if "content-length" in framing else set()
    codings = [c.strip().lower() for c in framing.get("transfer-encoding", "").split(",")
               if c.strip()]
    connection = framing.get("connection", "").lower()
    keep_alive = ("close" not in connection) if http11 else ("keep-alive" in connection)
    if status == 101:  # the connection now belongs to the upgraded protocol
        return ResponseHead(status, reason, headers, 0, False, False)
    if method == "HEAD" or status in _NO_BODY_STATUS or status < 200:
        # No body follows, whatever the head says. But a head that announces one (HEAD's
        # Content-Length of the GET, a 204 with a length) comes from a server that may send
        # it anyway, and perhaps only after we have looked: such a connection is not reused.
        announced = codings or (lengths and lengths != {"0"})
        return ResponseHead(status, reason, headers, 0, False, keep_alive and not announced)
    if codings:
        if lengths:  # RFC 9112 6.3: a proxy must not relay both; a smuggling vector
            raise UpstreamProtocolError("response with both Content-Length and "
                                        "Transfer-Encoding", received=True)
        if codings != ["chunked"]:  # a transfer coding we would have to undo (gzip, ...)
            raise UpstreamProtocolError(f"unsupported Transfer-Encoding {codings}",
                                        received=True)
        return ResponseHead(status, reason, headers, None, True, keep_alive)
    if lengths:
        length = next(iter(lengths))
        if len(lengths) != 1 or not (length.isascii() and length.isdigit()):
            raise UpstreamProtocolError("invalid or conflicting Content-Length",
                                        received=True)
        return ResponseHead(status, reason, headers, int(length), False, keep_alive)
    return ResponseHead(status, reason, headers, None, False, False)


class Upstream:
    """Sends one client request to one of a route's targets; see the module docstring."""

    def __init__(self, pool: UpstreamPool):
        self.pool = pool

    def send(self, entry: RouteEntry, method: str, path: str, headers: list[tuple[str, str]],
             body: RequestBody, *, host: str | None = None,
             fresh: bool = False) -> UpstreamResponse:
        """The response head from the first target that answers; raises UpstreamError.

        `path` is below the target's base path; `host` is the Host header to send (default:
        the target's own); `fresh` skips the pool (for upgrades, never pooled).
        """
        body.preload()
        retry_ok = method in IDEMPOTENT
        restricted = entry.route.restricted
        plan = self.pool.plan(entry)
        for attempt, target in enumerate(plan, start=1):
            head = request_head(method, target.base_path + path, host or target.host_header,
                                headers, body)
            try:
                try:
                    conn = (self.pool.connect(target, restricted) if fresh
                            else self.pool.acquire(target, restricted))
                except ConnectFailed:
                    if retry_ok and attempt < len(plan):
                        continue
                    raise
                replayable = retry_ok and body.replayable
                try:
                    return self._exchange(conn, head, body, method)
                except UpstreamClosed as ex:  # a timeout is no sign of a stale connection
                    if ex.received or not replayable:
                        raise
                    if not conn.reused and attempt < len(plan):
                        continue  # e.g. a target draining during a redeploy: the next one
                    if not conn.reused:
                        raise
                # The pooled connection had been closed by the upstream: once more, fresh.
                try:
                    return self._exchange(self.pool.connect(target, restricted), head, body,
                                          method)
                except (ConnectFailed, UpstreamClosed) as ex:
                    if getattr(ex, "received", False) or attempt >= len(plan):
                        raise
                    continue
            except UpstreamError as ex:
                ex.target = target.url
                raise
        raise AssertionError("a route has at least one target")  # pragma: no cover

    def _exchange(self, conn: Connection, head: bytes, body: RequestBody,
                  method: str) -> UpstreamResponse:
        """Send the request on `conn` and read the response head; `conn` is closed on error."""
        try:
            return UpstreamResponse(self.pool, conn, self._roundtrip(conn, head, body, method))
        except BaseException:
            conn.close()
            raise

    def _roundtrip(self, conn: Connection, head: bytes, body: RequestBody,
                   method: str) -> ResponseHead:
        try:
            early = self._write(conn, head, body)
        except TimeoutError as ex:
            raise UpstreamTimeout(f"{conn.target.url} stopped reading the request") from ex
        except OSError as ex:
            # The upstream may have answered early (e.g. 413) and closed; relay that answer.
            try:
                early = read_head(conn.rfile, method)
            except (UpstreamError, OSError, ValueError):
                raise UpstreamClosed(f"sending to {conn.target.url} failed: {ex}") from ex
            early.keep_alive = False
            return early
        try:
            response = read_head(conn.rfile, method)
        except TimeoutError as ex:
            raise UpstreamTimeout(f"{conn.target.url} did not answer in time") from ex
        except (OSError, ValueError) as ex:
            raise UpstreamClosed(f"reading from {conn.target.url} failed: {ex}") from ex
        if early:
            response.keep_alive = False
        return response

    @staticmethod
    def _write(conn: Connection, head: bytes, body: RequestBody) -> bool:
        """Send the request; True when the upstream answered before all of it had gone out
        (it may not have read the rest of the body, which it would then take for a request).
        A body that goes in one write with the head leaves no moment to notice that."""
        sendall = conn.sock.sendall
        if body.empty:
            send_all(conn.sock, head)
            return False
        if body.kept is not None:
            send_all(conn.sock, head + body.kept)
            return False
        early = False
        sendall(head)
        for piece in body.pieces():
            early = early or conn.answered_early()
            sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if body.chunked else piece)
        if body.chunked:
            early = early or conn.answered_early()
            sendall(b"0\r\n\r\n")
        return early

