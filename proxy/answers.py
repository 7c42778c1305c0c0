"""Answers the proxy gives itself (errors, redirects): short JSON naming no internals."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING

import falcon

if TYPE_CHECKING:  # proxy.worker imports this module in the arbiter, before gevent patches
    from proxy.events import Exchange

TITLES = {
    308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large",
    421: "Misdirected Request",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


def title(status: int) -> str:
    if status in TITLES:
        return TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def answer(resp: falcon.Response, ex: Exchange, status: int, description: str, *,
           reason: str = "", failed: bool = False,
           headers: dict[str, str] | None = None) -> None:
    """Set `resp` to a JSON error body with the trace id. `reason` becomes the event's
    error; `failed` makes it a proxy_request_failed event (see proxy/events.py)."""
    ex.status = status
    if reason:
        ex.error = ex.error or reason
    ex.failed = ex.failed or failed
    resp.status = status
    resp.content_type = "application/json"
    resp.data = json.dumps({"title": title(status), "description": description,
                            "trace_id": ex.trace_id}).encode()
    resp.set_header("X-Trace-Id", ex.trace_id)
    resp.set_header("Cache-Control", "no-store")
    for name, value in (headers or {}).items():
        resp.set_header(name, value)
