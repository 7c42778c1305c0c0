"""W3C traceparent and X-Trace-Id: parse, create, propagate.

The current trace id lives in a ContextVar, so each greenlet, thread or actor run has its own.
"""

from __future__ import annotations

import contextlib
import os
import re
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")

current_trace_id: ContextVar[str | None] = ContextVar("berth_trace_id", default=None)


# os.urandom is what the secrets module reads; importing that module (hmac, hashlib, random)
# would slow every command line's start.
def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def valid_trace_id(value: str | None) -> bool:
    return bool(value) and bool(_TRACE_ID.fullmatch(value)) and value != "0" * 32


def parse_traceparent(header: str | None) -> tuple[str, str] | None:
    """(trace_id, parent span id) from a W3C traceparent header, or None if invalid."""
    if not header:
        return None
    match = _TRACEPARENT.fullmatch(header.strip().lower())
    if not match:
        return None
    version, trace_id, span_id, _flags = match.groups()
    if version == "ff" or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id


def format_traceparent(trace_id: str, span_id: str | None = None) -> str:
    return f"00-{trace_id}-{span_id or new_span_id()}-01"


def trace_id_from_headers(traceparent: str | None, x_trace_id: str | None) -> str:
    """The caller's trace id (traceparent first, then X-Trace-Id), or a new one."""
    parsed = parse_traceparent(traceparent)
    if parsed:
        return parsed[0]
    if x_trace_id and valid_trace_id(x_trace_id.strip().lower()):
        return x_trace_id.strip().lower()
    return new_trace_id()


def get_trace_id() -> str | None:
    return current_trace_id.get()


@contextlib.contextmanager
def trace_context(trace_id: str | None):
    """Run a block under `trace_id` (a new one when None), restoring the previous one after."""
    token = current_trace_id.set(trace_id or new_trace_id())
    try:
        yield current_trace_id.get()
    finally:
        current_trace_id.reset(token)
