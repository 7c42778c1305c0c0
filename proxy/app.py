"""The proxy's WSGI application: a Falcon app with the ACME challenge route and one sink that
proxies everything else.

Per request, in order: route table lookup (memory), path sanity, HTTPS redirect, route auth,
body limit, then the upstream exchange, whose response body is streamed back as an iterator
(never buffered). The request's event is published once the body has gone out, or the
tunnel closed. The sink touches `req.env` directly rather than Falcon's request helpers, and
Falcon adds no default Content-Type, so a relayed response is what the upstream sent.

`create_proxy` builds it; `ProxyApp.start()` (gunicorn `post_worker_init`) starts the
per-worker background work (route and certificate refreshers, heartbeat, event flusher),
and `stop()` (gunicorn `worker_exit`) flushes events and says goodbye.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import falcon
import redis
from gunicorn.http.errors import ParseException
from gunicorn.workers.base_async import ALREADY_HANDLED

from app.crypto import SecretBox
from app.events import Publisher
from app.heartbeat import Heartbeat
from app.settings import Settings
from app.stores import CertificateStore, ChallengeStore, RouteStore, TokenStore
from app.target_policy import TargetPolicy
from proxy import acme_challenge
from proxy.answers import answer
from proxy.auth import RouteAuth, Verdict
from proxy.certificates import CertIndex, certificate_cache
from proxy.events import Exchange, Journal
from proxy.headers import TrustedProxies, forwarding_headers, request_headers, response_headers
from proxy.route_cache import TableCache, route_cache
from proxy.routing import RouteEntry, RouteTable, normalize_host, prefix_matches, strip_prefix
from proxy.served import ServedReport
from proxy.tls import SERVER_NAME, TlsContexts
from proxy.upstream import (
    BodyTooLarge,
    ClientBodyError,
    ConnectFailed,
    ConnectTimeout,
    RequestBody,
    Upstream,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)
from proxy.websocket import Tunnel, is_upgrade, switching_head

log = logging.getLogger(__name__)

_AUTH_ANSWERS = {401: "authentication required", 403: "not allowed",
                 503: "authentication is unavailable"}

HIJACKED = "berth.hijacked"  # environ flag: the connection was taken over (WebSocket)
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class ProxySink:
    """Everything that is not an ACME challenge."""

    def __init__(self, *, routes: TableCache[RouteTable],
                 certificates: TableCache[CertIndex] | None, upstream: Upstream,
                 auth: RouteAuth, journal: Journal, trusted: TrustedProxies, scheme: str,
                 https_port: int, client_timeout_s: float, websocket_idle_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.routes = routes
        self.certificates = certificates
        self.upstream = upstream
        self.auth = auth
        self.journal = journal
        self.trusted = trusted
        self.scheme = scheme
        self.https_port = https_port
        self.client_timeout_s = client_timeout_s
        self.websocket_idle_s = websocket_idle_s
        self.clock = clock

    def __call__(self, req: falcon.Request, resp: falcon.Response, **_params) -> None:
        env = req.env
        ex = self.journal.begin(env)
        deferred = False
        try:
            deferred = self._handle(env, resp, ex)
        except Exception:
            log.exception("proxying %s %s failed", ex.method, ex.raw_path)
            resp.stream = None
            answer(resp, ex, 500, "the proxy failed to handle this request",
                   reason="proxy_error", failed=True)
        finally:
            if not deferred:
                self.journal.record(ex)

    def _handle(self, env: dict, resp: falcon.Response, ex: Exchange) -> bool:
        """Answer the request; True when its event is left to the response stream."""
        client = env.get("gunicorn.socket")
        if client is not None:  # slow-client protection for body reads and response writes
            client.settimeout(self.client_timeout_s)
        admitted = self._admit(env, resp, ex)
        if admitted is None:
            return False
        return self._forward(env, resp, ex, client, *admitted)

    def _admit(self, env: dict, resp: falcon.Response, ex: Exchange):
        """(route entry, path below its prefix, auth verdict, body) when the request goes
        upstream; None once it has been answered here."""
        table = self.routes.get()
        if table is None:
            answer(resp, ex, 503, "routing is not available yet", reason="no_route_table",
                   failed=True)
            return None
        ex.host = normalize_host(ex.host_header) or ""
        refused = _refused(env, ex.host)
        if refused is not None:
            answer(resp, ex, *refused, reason="bad_request")
            return None
        if self._misdirected(env, ex.host):
            answer(resp, ex, 421, "this connection's certificate does not cover this name; "
                   "open a connection for it (TLS server name) first", reason="misdirected")
            return None
        path = env.get("PATH_INFO") or "/"
        found = table.match(ex.host, path)
        if found is None:
            answer(resp, ex, 404, "no site is served under this name and path",
                   reason="no_route")
            return None
        entry, below = found
        route = entry.route
        ex.route_id = route.id
        if _has_dot_segments(path):
            answer(resp, ex, 400, "the path must not contain dot segments", reason="bad_path")
            return None
        if self._redirects(entry, ex.host):
            self._redirect(resp, ex)
            return None
        verdict = self.auth.check(route.auth, route.id, env.get("HTTP_AUTHORIZATION"))
        if verdict.status != 200:
            answer(resp, ex, verdict.status, _AUTH_ANSWERS.get(verdict.status, "denied"),
                   reason=verdict.reason, failed=verdict.status >= 500,
                   headers={"WWW-Authenticate": verdict.challenge} if verdict.challenge
                   else None)
            return None
        try:
            body = RequestBody(env["wsgi.input"], _content_length(env),
                               "chunked" in env.get("HTTP_TRANSFER_ENCODING", "").lower(),
                               route.max_body_bytes)
        except BodyTooLarge:
            answer(resp, ex, 413, "the request body is too large", reason="body_too_large")
            return None
        return entry, below, verdict, body

    def _misdirected(self, env: dict, host: str) -> bool:
        if self.scheme != "https" or self.certificates is None:
            return False
        index = self.certificates.get()
        sock = env.get("gunicorn.socket")
        return index is not None and index.misdirected(getattr(sock, SERVER_NAME, None), host)

    def _fresh_entry(self, env: dict, ex: Exchange,
                     entry: RouteEntry) -> tuple[RouteEntry, str] | None:
        """After every target of `entry` refused the connection (nothing was sent): the route's
        entry from the stored table when it now has other targets, else None. The refresher
        reloads on each announcement, but one lost, or late on a loaded machine, would
        otherwise send requests to the containers a redeploy stopped after its drain. Same
        route and auth only, since the request was admitted under them."""
        try:
            self.routes.reload_if_changed()
        except Exception as reload_failed:  # whatever it was, the request keeps its 502
            log.info("route reload on a refused connection failed: %s", reload_failed)
            return None
        table = self.routes.current
        found = table.match(ex.host, env.get("PATH_INFO") or "/") if table else None
        if found is None:
            return None
        fresh, below = found
        if (fresh.route.id != entry.route.id or fresh.route.auth != entry.route.auth
                or fresh.targets == entry.targets):
            return None
        log.info("%s %s: route %s had stale targets; reloaded", ex.method, ex.raw_path,
                 entry.route.id)
        return fresh, below

    def _forward(self, env: dict, resp: falcon.Response, ex: Exchange,
                 client: socket.socket | None, entry: RouteEntry, below: str,
                 verdict: Verdict, body: RequestBody, *, rerouted: bool = False) -> bool:
        route = entry.route
        websocket = client is not None and ex.method == "GET" and is_upgrade(env)
        headers = request_headers(
            env, forwarding=forwarding_headers(env, peer=ex.peer, trusted=ex.trusted_peer,
                                               client_ip=ex.client_ip, scheme=self.scheme,
                                               host=ex.host_header),
            trace_id=ex.trace_id, rules=entry.request_rules,
            drop=frozenset({"authorization"}) if verdict.user else frozenset(),
            extra=(("X-Berth-User", verdict.user),) if verdict.user else ())
        if websocket:
            headers += [("Connection", "Upgrade"), ("Upgrade", "websocket")]
        try:
            upstream = self.upstream.send(
                entry, ex.method, self._target_path(entry, ex, below), headers, body,
                host=ex.host_header if route.preserve_host else None, fresh=websocket)
        except BodyTooLarge:
            answer(resp, ex, 413, "the request body is too large", reason="body_too_large")
            return False
        except ClientBodyError as err:
            if isinstance(err.__cause__, ParseException):
                # Malformed chunking: the client is still there to read why, but the rest of
                # the connection cannot be parsed, so the answer goes out before the cut.
                answer(resp, ex, 400, "the request body's chunked framing is malformed",
                       reason="client_body_malformed")
                _answer_now(client, resp)
            else:
                answer(resp, ex, 400, "the request body was incomplete",
                       reason="client_body_incomplete", failed=True)
            _abort(client)  # the client is gone or stalled; nothing useful can be sent back
            return False
        except UpstreamError as err:
            refused = isinstance(err, ConnectFailed) and not isinstance(err, ConnectTimeout)
            fresh = (self._fresh_entry(env, ex, entry)
                     if refused and not rerouted and body.replayable else None)
            if fresh is not None:
                return self._forward(env, resp, ex, client, *fresh, verdict, body,
                                     rerouted=True)
            ex.upstream = err.target
            log.info("%s %s: %s", ex.method, ex.raw_path, err.description)
            answer(resp, ex, err.status, "the upstream is unavailable" if err.status == 502
                   else "the upstream did not answer in time", reason=err.code, failed=True)
            return False
        finally:
            ex.bytes_in = body.received
        ex.upstream = upstream.target.url
        ex.status = upstream.status
        if upstream.status == 101:
            if websocket:
                self._tunnel(env, client, upstream, entry, ex)
                return False
            upstream.close()  # an upgrade nobody asked for cannot be relayed
            answer(resp, ex, 502, "the upstream is unavailable", reason="upstream_bad_upgrade",
                   failed=True)
            return False
        self._respond(resp, upstream, entry, ex)
        if upstream.head.length == 0 and not upstream.head.chunked:
            upstream.close()
            return False
        resp.stream = self._relay(upstream, ex, client)
        return True

    # -- the pieces --------------------------------------------------------------------

    def _redirects(self, entry: RouteEntry, host: str) -> bool:
        mode = entry.route.https_redirect
        if self.scheme != "http" or mode == "never":
            return False
        if mode == "always":
            return True
        index = self.certificates.get() if self.certificates is not None else None
        return index is not None and index.covers(host)

    def _redirect(self, resp: falcon.Response, ex: Exchange) -> None:
        host = ex.host if ":" not in ex.host else f"[{ex.host.strip('[]')}]"
        port = "" if self.https_port == 443 else f":{self.https_port}"
        query = f"?{ex.query}" if ex.query else ""
        location = f"https://{host}{port}{ex.raw_path}{query}"
        answer(resp, ex, 308, "this site is served over HTTPS", reason="https_redirect",
               headers={"Location": location})

    @staticmethod
    def _target_path(entry: RouteEntry, ex: Exchange, below: str) -> str:
        """The path to request below the target's base: the client's bytes, unless a prefix
        is stripped."""
        route = entry.route
        path = ex.raw_path
        if route.strip_prefix:
            if prefix_matches(route.path_prefix, path):
                path = strip_prefix(route.path_prefix, path)
            else:  # the client percent-encoded part of the prefix
                path = quote(below.encode("latin-1"), safe=_PATH_SAFE)
        return f"{path}?{ex.query}" if ex.query else path

    def _respond(self, resp: falcon.Response, upstream: UpstreamResponse, entry: RouteEntry,
                 ex: Exchange) -> None:
        head = upstream.head
        resp.status = head.status
        keep_length = ex.method == "HEAD" or head.status == 304
        for name, value in response_headers(
                head.headers, trace_id=ex.trace_id, rules=entry.response_rules,
                hsts=self.scheme == "https" and entry.route.hsts):
            if name.lower() == "content-length" and not keep_length:
                continue  # set once below from the parsed framing
            resp.append_header(name, value)
        if head.length is not None and not keep_length:
            resp.content_length = head.length

    def _relay(self, upstream: UpstreamResponse, ex: Exchange,
               client: socket.socket | None) -> Iterator[bytes]:
        try:
            for chunk in upstream:
                yield chunk
                ex.bytes_out += len(chunk)
        except UpstreamError as err:
            log.warning("%s %s: response from %s cut off: %s", ex.method, ex.raw_path,
                        ex.upstream, err.description)
            ex.fail(err.code)
            _abort(client)  # so the client sees a truncated response, not a complete one
        except GeneratorExit:
            ex.fail("client_closed")
            raise
        finally:
            upstream.close()
            self.journal.record(ex)

    def _tunnel(self, env: dict, client: socket.socket, upstream: UpstreamResponse,
                entry: RouteEntry, ex: Exchange) -> None:
        ex.websocket = True
        env[HIJACKED] = True
        headers = response_headers(upstream.head.headers, trace_id=ex.trace_id,
                                   rules=entry.response_rules)
        tunnel = Tunnel(client, upstream.conn, self.websocket_idle_s, self.clock)
        try:
            tunnel.run(switching_head(headers))
        except OSError as err:
            ex.fail("client_closed")
            log.info("websocket %s: %s", ex.raw_path, err)
        finally:
            ex.bytes_in, ex.bytes_out = tunnel.bytes_in, tunnel.bytes_out
            if tunnel.idle_closed:
                ex.error = ex.error or "websocket_idle"


class ProxyApp:
    """The WSGI callable gunicorn serves: the Falcon app plus the per-worker lifecycle."""

    def __init__(self, app: falcon.App, sink: ProxySink, *, publisher: Publisher | None,
                 heartbeat: Heartbeat | None, pool: UpstreamPool,
                 certificates: TableCache[CertIndex], tls: TlsContexts | None = None,
                 served: ServedReport | None = None):
        self.app = app
        self.sink = sink
        self.publisher = publisher
        self.heartbeat = heartbeat
        self.pool = pool
        self.certificates = certificates
        self.tls = tls  # for the gunicorn ssl_context hook of proxy-tls
        self.served = served

    def __call__(self, env: dict, start_response):
        body = self.app(env, start_response)
        if env.get(HIJACKED):
            # The tunnel wrote its own 101 and has shut the socket down; tell gunicorn the
            # response is handled, so it writes nothing more and reads EOF next.
            return ALREADY_HANDLED
        return body

    def start(self) -> None:
        """Start this worker's background work (idempotent, fork-aware). The first tables
        load here, before the worker serves, so its first request finds them."""
        self.sink.routes.start()
        self.sink.routes.get()
        self.certificates.start()
        self.certificates.get()
        if self.heartbeat is not None:
            self.heartbeat.ensure_started()

    def stop(self) -> None:
        self.sink.routes.stop()
        self.certificates.stop()
        if self.publisher is not None:
            self.publisher.close(timeout=2.0)
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.served is not None:
            self.served.clear()
        self.pool.close()


def create_proxy(settings: Settings, redis_client: redis.Redis,
                 publisher: Publisher | None = None, *, scheme: str = "http",
                 component: str = "proxy", clock: Callable[[], float] = time.monotonic,
                 heartbeat: bool = True) -> ProxyApp:
    """The proxy application for one listener (`scheme` http or https). Opens no connection."""
    trusted = TrustedProxies(settings.trusted_proxies)
    journal = Journal(publisher if settings.proxy_request_events == "on" else None,
                      component, trusted, clock)
    pool = UpstreamPool(connect_timeout=settings.proxy_connect_timeout_s,
                        read_timeout=settings.proxy_read_timeout_s,
                        idle_s=settings.proxy_pool_idle_s, max_idle=settings.proxy_pool_size,
                        down_s=settings.proxy_target_down_s, clock=clock,
                        policy=TargetPolicy.from_settings(settings))
    # HTTP consults certificates to redirect to HTTPS; HTTPS to choose one per name (SNI)
    # and to refuse requests for names the connection's certificate does not cover.
    certificates = certificate_cache(CertificateStore(redis_client))
    sink = ProxySink(
        routes=route_cache(RouteStore(redis_client)),
        certificates=certificates,
        upstream=Upstream(pool), auth=RouteAuth(TokenStore(redis_client), clock=clock),
        journal=journal, trusted=trusted, scheme=scheme, https_port=settings.https_port,
        client_timeout_s=settings.proxy_client_timeout_s,
        websocket_idle_s=settings.proxy_websocket_idle_s, clock=clock)
    app = falcon.App(media_type=None)
    app.req_options.strip_url_path_trailing_slash = False
    app.add_route(acme_challenge.PATH,
                  acme_challenge.AcmeChallenge(ChallengeStore(redis_client), journal))
    # Prefix "": targets that are no path (`OPTIONS *`, CONNECT's host:port) get the sink's
    # answer and event too, not Falcon's bare 404.
    app.add_sink(sink, prefix="")
    tls = (TlsContexts(certificates, SecretBox.from_settings(settings), Path(settings.tls_dir))
           if scheme == "https" else None)
    served = beat = None
    if heartbeat:  # what it serves is reported under its heartbeat's name, with each beat
        served = ServedReport(redis_client, {"route": sink.routes, "certificate": certificates})
        beat = Heartbeat(redis_client, component, also=served.stage)
        served.heartbeat = beat
    return ProxyApp(app, sink, publisher=publisher, pool=pool, certificates=certificates,
                    tls=tls, heartbeat=beat, served=served)


# What a backend with a signed 64-bit length can hold: beyond, it might wrap and desync.
_MAX_CONTENT_LENGTH = (1 << 63) - 1
_CODINGS = frozenset({"chunked", "identity"})


def _refused(env: dict, host: str) -> tuple[int, str] | None:
    """(status, why) for a request no backend should see, beyond what gunicorn refuses:
    no usable Host (RFC 9112 3.2), a transfer coding other than chunked that the body would
    lose on the way (6.1), a Content-Length a backend could misread."""
    if not host:
        return 400, "the Host header is missing or is not a valid host name"
    coding = env.get("HTTP_TRANSFER_ENCODING")
    if coding and not {c.strip().lower() for c in coding.split(",")} <= _CODINGS:
        return 501, "only the chunked transfer coding is supported"
    length = env.get("CONTENT_LENGTH")
    if length and len(length) > 18 and int(length) > _MAX_CONTENT_LENGTH:
        return 400, "the Content-Length is out of range"
    return None


def _answer_now(client: socket.socket | None, resp: falcon.Response) -> None:
    """Write the answer in `resp` straight to the client, for a connection about to be cut."""
    if client is None:
        return
    head = [f"HTTP/1.1 {falcon.code_to_http_status(resp.status)}",
            *(f"{name}: {value}" for name, value in resp.headers.items()),
            f"Content-Length: {len(resp.data)}", "Connection: close", "", ""]
    with contextlib.suppress(OSError):
        client.sendall("\r\n".join(head).encode("latin-1") + resp.data)


def _content_length(env: dict) -> int | None:
    raw = env.get("CONTENT_LENGTH")
    return int(raw) if raw and raw.isdigit() else None


def _has_dot_segments(path: str) -> bool:
    """`.` or `..` segments would let `/public/../admin` match the `/public` route while the
    backend serves /admin; clients normalise them away, so only attackers send them."""
    if "/." not in path:
        return False
    return any(seg in (".", "..") for seg in path.split("/"))


def _abort(client: socket.socket | None) -> None:
    if client is not None:
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
