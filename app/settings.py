"""One typed, frozen Settings object, read from the environment once, at the edge.

Every field names its environment variable, its default and what it means. An invalid value
raises SettingsError whose message names the variable and what is allowed; entry points print
that one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from app.errors import SettingsError


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected an integer from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return value

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _redis_url(raw: str) -> str:
    if urlparse(raw).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return raw


def _text(raw: str) -> str:
    return raw.strip()


def _setting(env: str, default: str, parse: Callable[[str], object], doc: str):
    return field(metadata={"env": env, "default": default, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    redis_url: str = _setting(
        "REDIS_URL", "redis://127.0.0.1:6379/0", _redis_url, "Redis holding all shared state."
    )
    bind_host: str = _setting(
        "BERTH_BIND_HOST", "127.0.0.1", _text, "Address the web and proxy processes listen on."
    )
    web_port: int = _setting(
        "BERTH_WEB_PORT", "8000", _int_range(1, 65535), "Management API, dashboard, /metrics."
    )
    http_port: int = _setting(
        "BERTH_HTTP_PORT", "8080", _int_range(1, 65535), "Plain HTTP proxy listener."
    )
    https_port: int = _setting(
        "BERTH_HTTPS_PORT", "8443", _int_range(1, 65535), "TLS proxy listener."
    )
    base_domain: str = _setting(
        "BASE_DOMAIN", "localhost", _text, "Services get <name>.<BASE_DOMAIN> by default."
    )
    acme_directory: str = _setting(
        "BERTH_ACME_DIRECTORY",
        "staging",
        _text,
        "Default ACME directory: production, staging (Let's Encrypt) or a URL.",
    )
    acme_email: str = _setting(
        "BERTH_ACME_EMAIL", "", _text, "Contact address for the ACME account (optional)."
    )
    secret_key: str = _setting(
        "BERTH_SECRET_KEY",
        "",
        _text,
        "Encrypts private keys at rest in Redis when set (any string of 16+ characters).",
    )
    log_level: str = _setting(
        "BERTH_LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"), "Log level."
    )
    log_format: str = _setting(
        "BERTH_LOG_FORMAT",
        "auto",
        _choice("auto", "json", "text"),
        "json: one object a line; text: readable; auto: text on a terminal, else json.",
    )
    events_maxlen: int = _setting(
        "BERTH_EVENTS_MAXLEN",
        "1000000",
        _int_range(1000, 1_000_000_000),
        "Approximate maximum entries kept per event stream.",
    )
    events_retention_hours: int = _setting(
        "BERTH_EVENTS_RETENTION_HOURS",
        "168",
        _int_range(1, 24 * 365),
        "Entries older than this are trimmed (MINID) by the trim_streams job.",
    )
    publisher_batch: int = _setting(
        "BERTH_PUBLISHER_BATCH",
        "500",
        _int_range(1, 100_000),
        "Publisher flushes when this many events are buffered.",
    )
    publisher_flush_ms: int = _setting(
        "BERTH_PUBLISHER_FLUSH_MS",
        "100",
        _int_range(1, 60_000),
        "Publisher flushes at least this often.",
    )
    publisher_buffer: int = _setting(
        "BERTH_PUBLISHER_BUFFER",
        "50000",
        _int_range(10, 10_000_000),
        "Events buffered while Redis is unreachable; beyond this they are dropped and counted.",
    )
    worker_max_retries: int = _setting(
        "BERTH_WORKER_MAX_RETRIES", "5", _int_range(0, 100), "Retries of a failed actor."
    )
    heartbeat_stale_s: int = _setting(
        "BERTH_HEARTBEAT_STALE_S",
        "30",
        _int_range(1, 3600),
        "A component whose last heartbeat is older than this is reported down.",
    )
    web_workers: int = _setting(
        "BERTH_WEB_WORKERS", "1", _int_range(1, 64), "gunicorn workers of the web process."
    )
    proxy_workers: int = _setting(
        "BERTH_PROXY_WORKERS", "2", _int_range(1, 64), "gunicorn workers of each proxy process."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Read every field from `environ` (default: the process environment)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in overrides:
                values[f.name] = overrides[f.name]
                continue
            meta = f.metadata
            raw = environ.get(meta["env"])
            if raw is None or raw == "":
                raw = meta["default"]
            try:
                values[f.name] = meta["parse"](raw)
            except ValueError as ex:
                raise SettingsError(f"{meta['env']}={raw!r}: {ex}") from None
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        if self.secret_key and len(self.secret_key) < 16:
            raise SettingsError("BERTH_SECRET_KEY: expected at least 16 characters")

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting, for the README and `--help`."""
        return [
            (f.metadata["env"], f.metadata["default"], f.metadata["doc"])
            for f in dataclasses.fields(cls)
        ]


def load_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """For entry points: the settings, or one line on stderr and exit status 2."""
    try:
        return Settings.from_env(environ)
    except SettingsError as ex:
        raise SystemExit(f"berth: invalid setting {ex}") from None
