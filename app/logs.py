"""Logging: one set-up function; JSON lines in production, readable lines on a terminal.

Every record carries the current trace id, and secrets (bearer tokens, berth tokens,
Authorization/Cookie values, private keys) are masked before any handler sees them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from app.tracing import get_trace_id

_SECRET_PATTERNS = (
    re.compile(r"brt_[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+"),
    re.compile(r"(?i)((?:authorization|cookie|set-cookie|x-api-key)['\"]?\s*[:=]\s*['\"]?)[^'\",\n]+"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
)


# Cheap pre-check: a string without any of these (case-folded) cannot match a pattern below.
_MARKERS = ("brt_", "bearer", "basic", "authorization", "cookie", "x-api-key", "private key")


def redact(text: str) -> str:
    """`text` with anything that looks like a credential or private key masked."""
    folded = text.casefold()
    if not any(marker in folded for marker in _MARKERS):
        return text
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + " [redacted]", text)
        else:
            text = pattern.sub("[redacted]", text)
    return text


class _ContextFilter(logging.Filter):
    """Adds trace_id and masks secrets in the rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = get_trace_id() or "-"
        message = record.getMessage()
        masked = redact(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "trace_id": getattr(record, "trace_id", "-"),
            "pid": record.process,
        }
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = (
            f"{stamp} {record.levelname:<7} {record.name} "
            f"[{getattr(record, 'trace_id', '-')}] {record.getMessage()}"
        )
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def setup_logging(level: str = "info", fmt: str = "auto", stream=None) -> None:
    """Configure the root logger once per process; safe to call again (replaces handlers)."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_berth", False):
            root.removeHandler(old)
    handler._berth = True
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that log request lines with credentials or chatter at INFO.
    for noisy in ("urllib3", "docker", "acme", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
