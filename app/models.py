"""The nouns of berth as frozen dataclasses, each with validation from untrusted input.

`X.from_input(payload, owner=...)` validates a JSON-decoded dict from a user and raises
ValidationError naming the field; `X.from_record(dict)` rebuilds a stored record without
re-validating; `to_record()` gives the stored form and `public()` what the API shows.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import idna

from app.errors import ValidationError

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")
HEADER_VALUE_RE = re.compile(r"^[\t\x20-\x7e\x80-\xff]{0,4096}$")
SCOPES = ("admin", "user")


def now_s() -> float:
    return round(time.time(), 3)


# -- field validators: each takes the raw value and the field name, returns the clean value --


def check_name(value: Any, name: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValidationError(
            f"{name} must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a "
            "letter or digit", field=name)
    return value


def check_hostname(value: Any, name: str = "host", *, wildcard: bool = False) -> str:
    """An IDNA-normalised lower-case hostname; `*.` prefix allowed when `wildcard`."""
    if not isinstance(value, str) or not value or len(value) > 253:
        raise ValidationError(f"{name} must be a hostname", field=name)
    host = value.strip().rstrip(".").lower()
    prefix = ""
    if wildcard and host.startswith("*."):
        prefix, host = "*.", host[2:]
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as ex:
        raise ValidationError(f"{name} is not a valid hostname: {ex}", field=name) from None
    labels = ascii_host.split(".")
    if any(not re.match(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", lab) for lab in labels):
        raise ValidationError(f"{name} is not a valid hostname", field=name)
    if labels[-1].isdigit():
        raise ValidationError(f"{name} must be a name, not an IP address", field=name)
    return prefix + ascii_host


def check_url(value: Any, name: str = "url", schemes: tuple[str, ...] = ("http", "https")) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise ValidationError(f"{name} must be a URL", field=name)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValidationError(f"{name} is not a valid URL", field=name) from None
    if parts.scheme not in schemes or not parts.hostname:
        raise ValidationError(f"{name} must be an {' or '.join(schemes)} URL with a host",
                              field=name)
    if parts.username or parts.password:
        raise ValidationError(f"{name} must not carry credentials", field=name)
    if port == 0:
        raise ValidationError(f"{name} has an invalid port", field=name)
    return value.rstrip("/") if parts.path in ("", "/") else value


def check_path_prefix(value: Any, name: str = "path_prefix") -> str:
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 1024:
        raise ValidationError(f"{name} must start with '/'", field=name)
    if any(c in value for c in "?#\\") or any(ord(c) < 0x21 or ord(c) > 0x7e for c in value):
        raise ValidationError(f"{name} must be a plain path without query, spaces or controls",
                              field=name)
    if "/../" in value + "/" or "/./" in value + "/":
        raise ValidationError(f"{name} must not contain dot segments", field=name)
    return value


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be true or false", field=name)
    return value


def check_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{name} must be an integer from {low} to {high}", field=name)
    return value


def check_text(value: Any, name: str, max_len: int = 200) -> str:
    if not isinstance(value, str) or len(value) > max_len or any(ord(c) < 0x20 for c in value):
        raise ValidationError(f"{name} must be text of at most {max_len} characters",
                              field=name)
    return value


def check_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValidationError(f"{name} must be one of {', '.join(allowed)}", field=name)
    return value


def check_headers(value: Any, name: str) -> dict[str, str | None]:
    """Header rules: name -> value to set, or null to remove. Refuses CR/LF injection."""
    if not isinstance(value, dict) or len(value) > 50:
        raise ValidationError(f"{name} must be an object of at most 50 headers", field=name)
    rules = {}
    for key, val in value.items():
        if not isinstance(key, str) or not HEADER_NAME_RE.match(key):
            raise ValidationError(f"{name}: {key!r} is not a valid header name", field=name)
        if val is not None and (not isinstance(val, str) or not HEADER_VALUE_RE.match(val)):
            raise ValidationError(f"{name}: the value of {key} must be text without line "
                                  "breaks or control characters", field=name)
        rules[key] = val
    return rules


def _only_known(payload: Any, allowed: set[str], what: str) -> dict:
    if not isinstance(payload, dict):
        raise ValidationError(f"the {what} must be a JSON object")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise ValidationError(f"unknown field(s) for a {what}: {', '.join(unknown)}",
                              field=unknown[0])
    return payload


class _Model:
    """Shared record conversion for the frozen dataclasses below."""

    SECRET_FIELDS: tuple[str, ...] = ()

    def to_record(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        for f in dataclasses.fields(cls):  # JSON lists back to tuples for frozen fields
            if isinstance(values.get(f.name), list) and "tuple" in str(f.type):
                values[f.name] = tuple(values[f.name])
        return cls(**values)

    def public(self) -> dict:
        record = self.to_record()
        for name in self.SECRET_FIELDS:
            record.pop(name, None)
        return record

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Route(_Model):
    """Traffic for `host` (exact or `*.domain`) under `path_prefix` goes to `targets`."""

    id: str
    host: str
    targets: tuple[str, ...]
    owner: str
    path_prefix: str = "/"
    strip_prefix: bool = False
    preserve_host: bool = False
    request_headers: dict = field(default_factory=dict)
    response_headers: dict = field(default_factory=dict)
    https_redirect: str = "auto"  # auto: when an active certificate covers the host
    hsts: bool = False
    auth: dict = field(default_factory=lambda: {"type": "none"})
    max_body_bytes: int = 0  # 0: no limit
    auto_certificate: bool = False
    service: str = ""  # set when the route belongs to a berth service
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    EDITABLE = {"host", "targets", "path_prefix", "strip_prefix", "preserve_host",
                "request_headers", "response_headers", "https_redirect", "hsts", "auth",
                "max_body_bytes", "auto_certificate"}
    SECRET_FIELDS = ()

    @staticmethod
    def clean(payload: Any, *, partial: bool = False) -> dict:
        """Validated route fields from user input; with `partial`, only those present."""
        payload = _only_known(payload, Route.EDITABLE | {"version"}, "route")
        out: dict[str, Any] = {}
        if "host" in payload or not partial:
            out["host"] = check_hostname(payload.get("host"), "host", wildcard=True)
        if "targets" in payload or not partial:
            targets = payload.get("targets")
            if not isinstance(targets, list) or not 1 <= len(targets) <= 32:
                raise ValidationError("targets must be a list of 1 to 32 URLs", field="targets")
            out["targets"] = tuple(check_url(t, "targets") for t in targets)
        if "path_prefix" in payload:
            out["path_prefix"] = check_path_prefix(payload["path_prefix"])
        for flag in ("strip_prefix", "preserve_host", "hsts", "auto_certificate"):
            if flag in payload:
                out[flag] = check_bool(payload[flag], flag)
        for rules in ("request_headers", "response_headers"):
            if rules in payload:
                out[rules] = check_headers(payload[rules], rules)
        if "https_redirect" in payload:
            out["https_redirect"] = check_choice(payload["https_redirect"], "https_redirect",
                                                 ("auto", "always", "never"))
        if "max_body_bytes" in payload:
            out["max_body_bytes"] = check_int(payload["max_body_bytes"], "max_body_bytes", 0,
                                              1 << 40)
        if "auth" in payload:
            out["auth"] = check_route_auth(payload["auth"])
        return out


def check_route_auth(value: Any) -> dict:
    """`{"type": "none"}`, `{"type": "token", "scope": "user"}` or
    `{"type": "basic", "users": {"name": "<bcrypt or argon2 hash>"}}`."""
    if not isinstance(value, dict):
        raise ValidationError("auth must be an object with a type", field="auth")
    kind = check_choice(value.get("type"), "auth.type", ("none", "token", "basic"))
    if kind == "none":
        return {"type": "none"}
    if kind == "token":
        scope = check_choice(value.get("scope", "user"), "auth.scope", SCOPES)
        return {"type": "token", "scope": scope}
    users = value.get("users")
    if not isinstance(users, dict) or not 1 <= len(users) <= 100:
        raise ValidationError("auth.users must map 1 to 100 user names to password hashes",
                              field="auth.users")
    for user, hashed in users.items():
        if not isinstance(user, str) or not re.match(r"^[^:\s]{1,64}$", user):
            raise ValidationError("auth.users: invalid user name", field="auth.users")
        if not isinstance(hashed, str) or not re.match(r"^\$(2[aby]|argon2(id|i|d))\$", hashed):
            raise ValidationError("auth.users: each value must be a bcrypt or argon2 hash",
                                  field="auth.users")
    return {"type": "basic", "users": dict(users)}


@dataclass(frozen=True)
class Token(_Model):
    """An API credential. Only the SHA-256 of the secret is stored."""

    id: str
    name: str
    scope: str
    owner: str
    secret_hash: str
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    SECRET_FIELDS = ("secret_hash",)

    @staticmethod
    def clean(payload: Any) -> dict:
        payload = _only_known(payload, {"name", "scope", "owner"}, "token")
        out = {"name": check_name(payload.get("name"), "name"),
               "scope": check_choice(payload.get("scope", "user"), "scope", SCOPES)}
        if "owner" in payload:
            out["owner"] = check_name(payload["owner"], "owner")
        return out


@dataclass(frozen=True)
class Certificate(_Model):
    """A TLS certificate for one or more names, issued over ACME."""

    id: str  # the certificate's name
    domains: tuple[str, ...]
    owner: str
    directory: str = "staging"
    key_type: str = "ec256"
    status: str = "pending"  # pending, issuing, active, failed, revoked
    cert_pem: str = ""
    key_pem: str = ""  # encrypted at rest when a secret key is set
    not_before: float = 0.0
    not_after: float = 0.0
    renew_after: float = 0.0
    last_error: str = ""
    backoff_until: float = 0.0
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    SECRET_FIELDS = ("key_pem",)


@dataclass(frozen=True)
class Service(_Model):
    """A container workload berth runs and routes to."""

    id: str  # the service's name
    image: str
    port: int
    owner: str
    hostname: str = ""
    command: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    replicas: int = 1
    memory_mb: int = 0
    cpus: float = 0.0
    restart: str = "on-failure"
    labels: dict = field(default_factory=dict)
    health: dict = field(default_factory=lambda: {"path": "/", "interval_s": 2, "timeout_s": 2})
    status: str = "pending"
    revision: int = 0
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0


def fresh_fields(**extra) -> dict:
    """Timestamps for a new record."""
    stamp = now_s()
    return {"created_at": stamp, "updated_at": stamp, **extra}
