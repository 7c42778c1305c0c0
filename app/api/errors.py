"""The one place that maps errors to HTTP responses.

Every error body is JSON: {"title": str, "description": str} plus "field" when one input field
is at fault. Never a traceback.

    BerthError subclass        status
    ValidationError            400  bad JSON, a missing/malformed/unknown field or query
                                    parameter (berth uses 400 for all input errors, never 422)
    Unauthorized               401  with `WWW-Authenticate: Bearer`
    Forbidden                  403  known token, not allowed (user-scope token, admin action)
    NotFound                   404  missing, or owned by someone else (never 403 for that)
    Conflict                   409
    Unavailable                503  Redis (or another backing service) unreachable, with
                                    `Retry-After`
    falcon.HTTPError           its own status (404 unknown route, 405 wrong method, 413, 415)
    redis.RedisError that      503  with `Retry-After`: a driver error that escaped
      says Redis cannot serve       translation (safety net). Unreachable, timed out, or
      now (app/redis_errors.py)     refusing: MISCONF, READONLY, OOM, LOADING, NOREPLICAS...
    anything else              500  logged with its traceback; the client gets generic JSON
                                    (a Redis error retrying would repeat, WRONGTYPE say, too)
"""

from __future__ import annotations

import contextlib
import http
import logging

import falcon
import redis

from app.errors import (
    AcmeError,
    BerthError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from app.redis_errors import refusal

log = logging.getLogger(__name__)

STATUS_BY_ERROR: tuple[tuple[type[BerthError], int], ...] = (
    (ValidationError, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Unavailable, 503),
    (RateLimited, 429),
    (AcmeError, 502),
)

WWW_AUTHENTICATE = 'Bearer realm="berth"'
RETRY_AFTER_S = "5"  # a Redis restart, failover or freed disk is usually seconds away


class ApiError(falcon.HTTPError):
    """An HTTPError that keeps the offending field, rendered by `serialize_error`."""

    def __init__(self, status: int, title: str, description: str, *, field: str | None = None,
                 headers: dict | None = None):
        super().__init__(status, title=title, description=description, headers=headers)
        self.field = field


def status_of(error: BerthError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


def _plain_title(status: int) -> str:
    phrase = http.HTTPStatus(status).phrase
    return phrase[:1] + phrase[1:].lower()


def _default_description(req: falcon.Request, error: falcon.HTTPError) -> str:
    status = error.status_code
    if status == 404:
        return f"nothing is served at {req.path}"
    if status == 405:
        allowed = (error.headers or {}).get("Allow", "")
        return f"{req.method} is not allowed on {req.path}" + (
            f"; allowed: {allowed}" if allowed else "")
    try:
        return http.HTTPStatus(status).description or _plain_title(status)
    except ValueError:
        return "request failed"


def error_body(title: str, description: str, field: str | None = None) -> dict:
    body = {"title": title, "description": description}
    if field:
        body["field"] = field
    return body


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Every HTTPError becomes the same JSON shape, whatever the client's Accept header says."""
    status = error.status_code
    title = error.title
    if not title or title == falcon.code_to_http_status(status):  # falcon's "404 Not Found"
        title = _plain_title(status)
    description = error.description or _default_description(req, error)
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(title, description, getattr(error, "field", None))


def _handle_berth_error(req, resp, error: BerthError, params) -> None:
    status = status_of(error)
    if status == 500:  # e.g. SettingsError at request time: a bug, not the caller's fault
        _handle_unexpected(req, resp, error, params)
        return
    headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if status == 401 else None
    if status == 503:
        log.warning("%s %s: %s", req.method, req.path, error.description)
        headers = {"Retry-After": RETRY_AFTER_S}
    raise ApiError(status, error.title, error.description, field=error.field, headers=headers)


def _handle_redis_error(req, resp, error: redis.RedisError, params) -> None:
    reason = refusal(error)
    if reason is None:  # e.g. WRONGTYPE: a bug, not an outage
        _handle_unexpected(req, resp, error, params)
        return
    log.warning("%s %s: Redis %s: %s", req.method, req.path, reason, error)
    raise ApiError(503, Unavailable.title, f"the store (Redis) is {reason}; retry shortly",
                   headers={"Retry-After": RETRY_AFTER_S})


def _handle_unexpected(req, resp, error: Exception, params) -> None:
    log.exception("unhandled error in %s %s", req.method, req.path)
    raise ApiError(500, "Internal server error",
                   "an unexpected error occurred; the server log has the details under the "
                   "trace id in the X-Trace-Id header")


def install(app: falcon.App) -> None:
    """Register the handlers and the serializer on `app` (most specific handler wins)."""
    app.add_error_handler(Exception, _handle_unexpected)
    app.add_error_handler(redis.RedisError, _handle_redis_error)
    app.add_error_handler(BerthError, _handle_berth_error)
    app.set_error_serializer(serialize_error)


@contextlib.contextmanager
def translate_redis_errors(what: str = "the store"):
    """Turn a Redis driver error saying Redis cannot serve now into Unavailable at the API
    edge (any other goes on, to be a 500)."""
    try:
        yield
    except redis.RedisError as ex:
        reason = refusal(ex)
        if reason is None:
            raise
        raise Unavailable(f"{what} (Redis) is {reason}: {ex}") from ex
