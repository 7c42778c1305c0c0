"""The HTTP client of the command line, on a small HTTP/1.1 transport of its own
(app/cli/transport.py: importing requests, or even http.client, would slow every command).

Every request carries a fresh W3C `traceparent` (so each command is one trace the user can
follow with `berth events tail --trace ID`) and, when there is one, the bearer token. Every
failure leaves this module as a CliError subclass (see app/cli/errors.py), never as a
transport or socket exception.
"""

from __future__ import annotations

import contextlib
import json
from collections import namedtuple
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from app.cli import transport
from app.cli.errors import ApiError, BadResponse, ConnectionFailed, UsageError
from app.cli.transport import ProtocolError, Response
from app.tracing import format_traceparent, new_trace_id

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
_STREAM_CHUNK = 16 * 1024

if TYPE_CHECKING:
    from typing import Any


# A named tuple rather than a dataclass: importing dataclasses slows every command's start.
Reply = namedtuple("Reply", "status data trace_id")
Reply.__doc__ = "An API answer: HTTP status, the decoded JSON body (None for 204), trace id."


def _reason(ex: BaseException) -> str:
    """The most specific cause of a network error: `connection refused`, `timed out`..."""
    seen: set[int] = set()
    pending = [ex]
    while pending:
        err = pending.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.strerror:
            return err.strerror[0].lower() + err.strerror[1:]
        pending += [e for e in (*getattr(err, "args", ()), err.__cause__, err.__context__)
                    if isinstance(e, BaseException)]
    return str(ex) or type(ex).__name__


def _content_type(response: Response) -> str:
    return response.getheader("Content-Type") or "no content type"


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError("Invalid URL", f"{base_url!r}: expected http(s)://host[:port]")
        try:
            self._port = parts.port
        except ValueError:
            raise UsageError("Invalid URL", f"{base_url!r}: the port is not a number") from None
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._netloc = parts.netloc.rpartition("@")[2]  # the Host header: [v6]:port kept
        self._prefix = parts.path.rstrip("/")
        self._token = token

    # -- plain requests ------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Reply:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> Reply:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Any) -> Reply:
        return self.request("PATCH", path, body=body)

    def delete(self, path: str, params: Mapping[str, Any] | None = None) -> Reply:
        return self.request("DELETE", path, params=params)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                body: Any = None) -> Reply:
        """Send one request and return its decoded JSON; raise ApiError on 4xx/5xx."""
        with self._send(method, path, params=params, body=body) as (response, trace_id):
            content = self._read(response, method, path)
            self._check(response, content, method, path, trace_id)
            if response.status == 204 or not content:
                return Reply(response.status, None, trace_id)
            return Reply(response.status, self._json(response, content, method, path),
                         trace_id)

    # -- streams -------------------------------------------------------------------------

    @contextlib.contextmanager
    def stream(self, path: str, *, params: Mapping[str, Any] | None = None,
               headers: Mapping[str, str] | None = None, read_timeout: float | None,
               kind: str = "text/event-stream") -> Iterator[Iterator[bytes]]:
        """Open a streamed answer of content type `kind` (by default a Server-Sent Events
        stream); yields an iterator over its raw bytes as they arrive. A read waiting longer
        than `read_timeout` (None: no limit, e.g. a quiet log being followed), or a dropped
        connection, raises ConnectionFailed from that iterator."""
        headers = {"Accept": kind, "Accept-Encoding": "identity",
                   "Cache-Control": "no-cache", **(headers or {})}
        with self._send("GET", path, params=params, headers=headers, read_timeout=read_timeout,
                        forever=read_timeout is None) as (response, trace_id):
            if response.status >= 300:
                self._check(response, self._read(response, "GET", path), "GET", path, trace_id)
            answered = response.getheader("Content-Type") or ""
            if not answered.startswith(kind):
                what = "an event stream" if kind == "text/event-stream" else kind
                raise BadResponse("Bad response",
                                  f"GET {path} answered {answered or 'no content type'}, "
                                  f"not {what}")
            yield self._chunks(response)

    def _chunks(self, response: Response) -> Iterator[bytes]:
        # read1 returns what has arrived (chunked or not) instead of waiting for a full buffer.
        try:
            while chunk := response.read1(_STREAM_CHUNK):
                yield chunk
        except (ProtocolError, OSError) as ex:
            raise ConnectionFailed("Connection lost", f"{self.base_url}: {_reason(ex)}") from ex

    # -- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _send(self, method: str, path: str, *, params=None, body=None, headers=None,
              read_timeout: float | None = None, forever: bool = False
              ) -> Iterator[tuple[Response, str]]:
        """One request on its own connection (closed on exit): (response, trace id)."""
        trace_id = new_trace_id()
        all_headers = {"traceparent": format_traceparent(trace_id), "User-Agent": "berth-cli",
                       "Accept": "application/json", "Accept-Encoding": "identity",
                       **(headers or {})}
        if self._token:
            all_headers["Authorization"] = f"Bearer {self._token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None},
                          doseq=True)
        target = self._prefix + path + (f"?{query}" if query else "")
        read = self.timeout if read_timeout is None else read_timeout
        connect = min(CONNECT_TIMEOUT_S, read)
        port = self._port or (443 if self._https else 80)
        try:
            sock = transport.connect(self._host, port, tls=self._https, timeout=connect)
        except TimeoutError as ex:
            raise ConnectionFailed("Cannot connect", f"{self.base_url}: no connection "
                                                     f"after {connect:g}s") from ex
        except OSError as ex:
            raise ConnectionFailed("Cannot connect", f"{self.base_url}: {_reason(ex)}") from ex
        response = None
        try:
            sock.settimeout(None if forever else read)
            try:
                transport.send(sock, method, target, self._netloc, all_headers, payload)
                response = Response(sock, method)
            except ValueError as ex:  # a header the transport will not send
                raise UsageError("Invalid request", str(ex)) from None
            except TimeoutError as ex:
                raise ConnectionFailed("Timed out",
                                       f"{method} {path}: no answer after {read:g}s") from ex
            except (OSError, ProtocolError) as ex:
                raise ConnectionFailed("Request failed",
                                       f"{method} {path}: {_reason(ex)}") from ex
            yield response, response.getheader("X-Trace-Id") or trace_id
        finally:
            if response is not None:
                response.close()
            sock.close()

    def _read(self, response: Response, method: str, path: str) -> bytes:
        try:
            return response.read()
        except TimeoutError as ex:
            raise ConnectionFailed("Timed out", f"{method} {path}: the answer stopped "
                                                f"arriving for {self.timeout:g}s") from ex
        except (OSError, ProtocolError) as ex:
            raise ConnectionFailed("Request failed", f"{method} {path}: {_reason(ex)}") from ex

    def _check(self, response: Response, content: bytes, method: str,
               path: str, trace_id: str) -> None:
        status = response.status
        if 300 <= status < 400:
            where = response.getheader("Location") or "elsewhere"
            raise BadResponse("Redirected", f"{method} {path} answered {status} to {where}; "
                              "check --url or BERTH_URL")
        if status < 400:
            return
        try:
            body = json.loads(content)
            title, description = body["title"], body["description"]
        except (ValueError, KeyError, TypeError):
            # Not the API's error shape (a proxy's page, a crash): status line and trace id.
            title = f"HTTP {status} {response.reason or ''}".strip()
            raise ApiError(title, f"{method} {path} answered {_content_type(response)}, not a "
                           f"JSON error (trace {trace_id})", status=status,
                           trace_id=trace_id) from None
        if status >= 500:
            description = f"{description} (trace {trace_id})"
        raise ApiError(str(title), str(description), status=status,
                       field=body.get("field"), trace_id=trace_id)

    def _json(self, response: Response, content: bytes, method: str,
              path: str) -> Any:
        try:
            return json.loads(content)
        except ValueError:
            raise BadResponse("Bad response",
                              f"{method} {path} answered {response.status} with "
                              f"{_content_type(response)}, not JSON (is {self.base_url} the "
                              "berth API?)") from None
