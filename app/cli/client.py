"""The HTTP client of the command line: one per run, over one requests Session.

Every request carries a fresh W3C `traceparent` (so each command is one trace the user can
follow with `berth events tail --trace ID`) and, when there is one, the bearer token. Every
failure leaves this module as a CliError subclass (see app/cli/errors.py), never as a requests
or urllib3 exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.auth import AuthBase

from app.cli.errors import ApiError, BadResponse, ConnectionFailed, UsageError
from app.tracing import format_traceparent, new_trace_id

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
_STREAM_CHUNK = 16 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    data: Any  # the decoded JSON body; None for 204
    trace_id: str


class _Bearer(AuthBase):
    """Set as `auth` so requests never replaces the header with credentials from ~/.netrc."""

    def __init__(self, secret: str):
        self.secret = secret

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.secret}"
        return request


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
        pending += [e for e in (*getattr(err, "args", ()), getattr(err, "reason", None),
                                err.__cause__, err.__context__) if isinstance(e, BaseException)]
    return str(ex) or type(ex).__name__


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S, session: requests.Session | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError("Invalid URL", f"{base_url!r}: expected http(s)://host[:port]")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._auth = _Bearer(token) if token else None
        self._session = session or requests.Session()

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
        response, trace_id = self._send(method, path, params=params, body=body)
        with response:
            self._check(response, method, path, trace_id)
            if response.status_code == 204 or not response.content:
                return Reply(response.status_code, None, trace_id)
            return Reply(response.status_code, self._json(response, method, path), trace_id)

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
        response, trace_id = self._send("GET", path, params=params, headers=headers,
                                        stream=True, read_timeout=read_timeout,
                                        forever=read_timeout is None)
        with response:
            self._check(response, "GET", path, trace_id)
            answered = response.headers.get("Content-Type", "")
            if not answered.startswith(kind):
                what = "an event stream" if kind == "text/event-stream" else kind
                raise BadResponse("Bad response",
                                  f"GET {path} answered {answered or 'no content type'}, "
                                  f"not {what}")
            yield self._chunks(response)

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        # read1 returns what has arrived (chunked or not) instead of waiting for a full buffer.
        try:
            while chunk := response.raw.read1(_STREAM_CHUNK):
                yield chunk
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as ex:
            raise ConnectionFailed("Connection lost", f"{self.base_url}: {_reason(ex)}") from ex

    # -- internals -----------------------------------------------------------------------

    def _send(self, method: str, path: str, *, params=None, body=None, headers=None,
              stream: bool = False, read_timeout: float | None = None, forever: bool = False
              ) -> tuple[requests.Response, str]:
        trace_id = new_trace_id()
        all_headers = {"traceparent": format_traceparent(trace_id), "User-Agent": "berth-cli",
                       "Accept": "application/json", **(headers or {})}
        read = self.timeout if read_timeout is None else read_timeout
        connect = min(CONNECT_TIMEOUT_S, read)
        try:
            response = self._session.request(
                method, self.base_url + path, json=body, headers=all_headers,
                params={k: v for k, v in (params or {}).items() if v is not None},
                auth=self._auth, timeout=(connect, None if forever else read),
                stream=stream, allow_redirects=False)
        except requests.ConnectTimeout as ex:
            raise ConnectionFailed("Cannot connect",
                                   f"{self.base_url}: no connection after "
                                   f"{min(CONNECT_TIMEOUT_S, read):g}s") from ex
        except requests.ConnectionError as ex:
            raise ConnectionFailed("Cannot connect", f"{self.base_url}: {_reason(ex)}") from ex
        except requests.Timeout as ex:
            raise ConnectionFailed("Timed out",
                                   f"{method} {path}: no answer after {read:g}s") from ex
        except requests.RequestException as ex:
            raise ConnectionFailed("Request failed", f"{method} {path}: {_reason(ex)}") from ex
        return response, response.headers.get("X-Trace-Id") or trace_id

    def _check(self, response: requests.Response, method: str, path: str,
               trace_id: str) -> None:
        status = response.status_code
        if 300 <= status < 400:
            where = response.headers.get("Location", "elsewhere")
            raise BadResponse("Redirected", f"{method} {path} answered {status} to {where}; "
                              "check --url or BERTH_URL")
        if status < 400:
            return
        try:
            body = response.json()
            title, description = body["title"], body["description"]
        except (ValueError, KeyError, TypeError, requests.RequestException):
            # Not the API's error shape (a proxy's page, a crash): status line and trace id.
            title = f"HTTP {status} {response.reason or ''}".strip()
            kind = response.headers.get("Content-Type") or "no content type"
            raise ApiError(title, f"{method} {path} answered {kind}, not a JSON error "
                           f"(trace {trace_id})", status=status, trace_id=trace_id) from None
        if status >= 500:
            description = f"{description} (trace {trace_id})"
        raise ApiError(str(title), str(description), status=status,
                       field=body.get("field"), trace_id=trace_id)

    def _json(self, response: requests.Response, method: str, path: str) -> Any:
        try:
            return response.json()
        except (ValueError, requests.RequestException):
            kind = response.headers.get("Content-Type") or "no content type"
            raise BadResponse("Bad response",
                              f"{method} {path} answered {response.status_code} with {kind}, "
                              f"not JSON (is {self.base_url} the berth API?)") from None
