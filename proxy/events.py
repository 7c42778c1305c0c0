"""One event per proxied request, on `events:request:stream`, through the batched Publisher.

Types:
- proxy_request_completed: a response went out whole, whether relayed from the upstream or
  answered by the proxy itself (404 for an unknown host, 401, 308, 413, an ACME answer);
  `error` then names the proxy's reason ("no_route", "auth_required", ...), else it is "".
- proxy_request_failed: the exchange broke: no upstream answer (502/504), a response cut
  off midway, a client that vanished or stalled; `error` says which.
A WebSocket tunnel is one proxy_request_completed event with status 101 and
`"websocket": true`, sent when the tunnel closes, its bytes counted each way.

data: host, route_id, method, path (never the query string), status, duration_ms, bytes_in
(request body), bytes_out (response body), upstream, client_ip, error; the trace id is the
envelope's. Headers are never included, so credentials cannot leak into an event.
Publishing is a deque append: it never waits on Redis.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from app.events import Event, Publisher, now_ms
from app.logs import redact
from app.tracing import current_trace_id, trace_id_from_headers
from proxy.headers import TrustedProxies

_json_str = json.encoder.encode_basestring_ascii  # what json.dumps uses for strings
# Cheap test for what app.logs.redact would mask (tokens, credentials, keys).
_MAYBE_SECRET = re.compile(r"(?i)brt_|bearer|basic|authorization|cookie|api-key|private key")


@dataclass(slots=True)
class Exchange:
    """What one request did, filled in as it goes; becomes its event."""

    started: float
    method: str
    host_header: str  # as the client sent it (absolute-form target wins over Host)
    raw_path: str  # as the client sent it, without the query
    query: str
    peer: str
    trusted_peer: bool
    client_ip: str
    trace_id: str
    host: str = ""  # normalised, once known
    route_id: str = ""
    upstream: str = ""
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    error: str = ""
    failed: bool = False
    websocket: bool = False

    def fail(self, code: str, status: int = 0) -> None:
        self.failed = True
        self.error = self.error or code
        if status:
            self.status = status


class Journal:
    """Opens an Exchange per request and publishes it when the request is over."""

    def __init__(self, publisher: Publisher | None, source: str, trusted: TrustedProxies,
                 clock: Callable[[], float] = time.monotonic):
        self.publisher = publisher
        self.source = source
        self.trusted = trusted
        self.clock = clock

    def begin(self, env: dict) -> Exchange:
        raw = env.get("RAW_URI") or _rebuild_uri(env)
        host_header = env.get("HTTP_HOST", "")
        if not raw.startswith("/") and "://" in raw:  # absolute-form request target
            parts = urlsplit(raw)
            host_header = parts.netloc or host_header
            raw = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        raw_path, _, query = raw.partition("?")
        peer = env.get("REMOTE_ADDR", "")
        trusted = self.trusted.trusts(peer) if peer else False
        trace_id = trace_id_from_headers(env.get("HTTP_TRACEPARENT"), env.get("HTTP_X_TRACE_ID"))
        # Each connection has its own greenlet; log lines of this request carry its trace id.
        current_trace_id.set(trace_id)
        return Exchange(
            started=self.clock(), method=env.get("REQUEST_METHOD", "GET"),
            host_header=host_header, raw_path=raw_path, query=query, peer=peer,
            trusted_peer=trusted,
            client_ip=self.trusted.client_ip(peer, env.get("HTTP_X_FORWARDED_FOR")) if trusted
            else peer,
            trace_id=trace_id)

    def record(self, ex: Exchange) -> None:
        if self.publisher is None:
            return
        host, path = ex.host or ex.host_header, ex.raw_path
        # Built directly rather than with Event.create, whose recursive scrub costs more than
        # the rest of the request: only the client-chosen strings can hold a secret.
        if _MAYBE_SECRET.search(f"{host} {path}"):
            host, path = redact(host), redact(path)
        data = {
            "host": host, "route_id": ex.route_id, "method": ex.method, "path": path,
            "status": ex.status, "duration_ms": round((self.clock() - ex.started) * 1000, 3),
            "bytes_in": ex.bytes_in, "bytes_out": ex.bytes_out, "upstream": ex.upstream,
            "client_ip": ex.client_ip, "error": ex.error,
        }
        kind = RequestEvent
        if ex.websocket:
            data["websocket"] = True
            kind = Event
        self.publisher.publish("request", kind(
            type="proxy_request_failed" if ex.failed else "proxy_request_completed",
            source=self.source, subject=host, data=data, trace_id=ex.trace_id,
            ts_ms=now_ms()))


class RequestEvent(Event):
    """A request's event with the data Journal.record builds (no WebSocket flag), written as
    JSON by an f-string in a third of the json module's time: there is one per request, and
    the Publisher serialises it in the same process."""

    def to_fields(self) -> dict[str, str]:
        return {"type": self.type, "source": self.source, "subject": self.subject,
                "trace_id": self.trace_id, "ts_ms": str(self.ts_ms),
                "data": request_json(self.data)}


def request_json(d: dict) -> str:
    """json.dumps(d, separators=(",", ":")) for the data Journal.record builds: these keys,
    in this order, numbers where it puts numbers."""
    return (f'{{"host":{_json_str(d["host"])},"route_id":{_json_str(d["route_id"])},'
            f'"method":{_json_str(d["method"])},"path":{_json_str(d["path"])},'
            f'"status":{d["status"]},"duration_ms":{d["duration_ms"]!r},'
            f'"bytes_in":{d["bytes_in"]},"bytes_out":{d["bytes_out"]},'
            f'"upstream":{_json_str(d["upstream"])},"client_ip":{_json_str(d["client_ip"])},'
            f'"error":{_json_str(d["error"])}}}')


def _rebuild_uri(env: dict) -> str:
    """For servers that do not give the raw target (gunicorn does, as RAW_URI)."""
    path = quote((env.get("PATH_INFO") or "/").encode("latin-1"), safe="/:@!$&'()*+,;=-._~")
    query = env.get("QUERY_STRING")
    return f"{path}?{query}" if query else path
