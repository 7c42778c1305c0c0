"""The nouns of berth as frozen dataclasses, each with validation from untrusted input.

`X.from_input(payload, owner=...)` validates a JSON-decoded dict from a user and raises
ValidationError naming the field; `X.from_record(dict)` rebuilds a stored record without
re-validating; `to_record()` gives the stored form and `public()` what the API shows.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import idna

from app.choices import KEY_TYPES, RESTART_POLICIES, SCOPES
from app.errors import ValidationError

# The patterns are also the OpenAPI document's, hence ^...$; check with fullmatch, since in
# Python `$` also matches before a final newline ("v\n" would pass as a header value).
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")
# A basic-auth user name: printable ASCII but ':' (spelled out: `\s` differs between
# Python's and ECMAScript's regular expressions, and the document's must mean the same).
BASIC_USER_PATTERN = r"^[!-9;-~]{1,64}$"
HEADER_VALUE_RE = re.compile(r"^[\t\x20-\x7e\x80-\xff]{0,4096}$")
# A hostname in its ASCII form: dot-separated labels of letters, digits and inner hyphens,
# the last not all digits (that would be an IP address), "--" in 3rd and 4th place only for
# an IDNA "xn--" label, one optional trailing dot. check_hostname takes Unicode names too
# (IDNA), which no pattern can describe; the OpenAPI document gives this one.
_LABEL = r"(?!(?![xX][nN])[A-Za-z0-9]{2}--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_PATTERN = rf"^(?!(?:.*\.)?[0-9]+\.?$){_LABEL}(?:\.{_LABEL})*\.?$"
WILDCARD_HOST_PATTERN = rf"^(?:\*\.)?{HOST_PATTERN[1:]}"
HOST_MAX_LENGTH = 253
ROUTE_MAX_BODY_BYTES = 1 << 40
URL_RE = re.compile(r"^[!-~]+$")
TEXT_PATTERN = r"^[^\x00-\x1f]*$"  # check_text: no control characters
_TEXT_RE = re.compile(TEXT_PATTERN)


def now_s() -> float:
    return round(time.time(), 3)


# -- field validators: each takes the raw value and the field name, returns the clean value --


def check_name(value: Any, name: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValidationError(
            f"{name} must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a "
            "letter or digit", field=name)
    return value


def check_hostname(value: Any, name: str = "host", *, wildcard: bool = False) -> str:
    """An IDNA-normalised lower-case hostname; `*.` prefix allowed when `wildcard`."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{name} must be a hostname such as app.example.com", field=name)
    if len(value) > HOST_MAX_LENGTH:
        raise ValidationError(f"{name} must be at most {HOST_MAX_LENGTH} characters",
                              field=name)
    host = value[:-1] if value.endswith(".") else value  # one trailing dot: the DNS root
    prefix = ""
    if wildcard and host.startswith("*."):
        prefix, host = "*.", host[2:]
    # Spaces, controls and punctuation would reach IDNA's codepoint errors, or pass its
    # mapping; a DNS name never has them (a Unicode letter is IDNA's to judge). Every refusal
    # is in berth's words: the idna library's ("Codepoint U+005F at position 2 of 'a_b' not
    # allowed") name its internals, not the rule the user broke.
    refusal = ValidationError(
        f"{name} {value!r} is not a valid DNS name: use letters, digits and hyphens, in "
        "labels of at most 63 characters separated by dots"
        + (", optionally after '*.'" if wildcard else ""), field=name)
    if any(c.isascii() and not (c.isalnum() or c in "-.") for c in host):
        raise refusal
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise refusal from None
    labels = ascii_host.split(".")
    if any(not re.fullmatch(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", lab) for lab in labels):
        raise refusal
    if labels[-1].isdigit():
        raise ValidationError(f"{name} must be a name, not an IP address", field=name)
    return prefix + ascii_host


def check_url(value: Any, name: str = "url", schemes: tuple[str, ...] = ("http", "https")) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise ValidationError(f"{name} must be a URL", field=name)
    # A URI (RFC 3986) is printable ASCII; urlsplit would take a control character as a host.
    if not URL_RE.fullmatch(value):
        raise ValidationError(f"{name} must be a URL of printable ASCII characters, without "
                              "spaces (percent-encode the rest)", field=name)
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
    # JSON Schema counts a number without a fractional part as an integer: 8080.0 is 8080.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{name} must be an integer from {low} to {high}", field=name)
    return value


def check_text(value: Any, name: str, max_len: int = 200) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise ValidationError(f"{name} must be text of at most {max_len} characters",
                              field=name)
    if not _TEXT_RE.fullmatch(value):
        raise ValidationError(f"{name} must not contain control characters", field=name)
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
        if not isinstance(key, str) or not HEADER_NAME_RE.fullmatch(key):
            raise ValidationError(f"{name}: {key!r} is not a valid header name", field=name)
        if val is not None and (not isinstance(val, str) or not HEADER_VALUE_RE.fullmatch(val)):
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
    # True when a user-scope token wrote it last: the proxy then checks each address it
    # connects to against the target policy (app/target_policy.py); the API sets it.
    restricted: bool = False
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
                                              ROUTE_MAX_BODY_BYTES)
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
        if not isinstance(user, str) or not re.fullmatch(BASIC_USER_PATTERN, user):
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
    directory: str = "staging"  # production, staging or an ACME directory URL
    key_type: str = "ec256"
    status: str = "pending"  # pending, issuing, active, failed, revoked
    cert_pem: str = ""  # leaf first, then the chain
    key_pem: str = ""  # encrypted at rest when a secret key is set
    not_before: float = 0.0
    not_after: float = 0.0
    renew_after: float = 0.0
    last_error: str = ""
    backoff_until: float = 0.0
    # The ACME order in progress, recorded before any challenge is answered, so a redelivered
    # message resumes that order instead of placing another; cleared once it is done.
    order_url: str = ""
    order_key_pem: str = ""  # the key its CSR is made from (encrypted like key_pem)
    order_purpose: str = ""  # issue or renew: which lifecycle events the order belongs to
    order_directory: str = ""  # the directory URL the order was placed with
    issuer_directory: str = ""  # the directory URL the stored certificate came from
    serial: str = ""  # hex, of the stored certificate
    issued_at: float = 0.0
    renewal_source: str = ""  # ari (the CA's suggested window) or lifetime (a third left)
    ari_retry_at: float = 0.0  # when to ask the CA's renewal information again
    failures: int = 0  # failed attempts in a row; the backoff doubles with each
    backoff_reason: str = ""  # rate_limited, validation, unavailable, error
    last_error_at: float = 0.0
    revoked_at: float = 0.0
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    SECRET_FIELDS = ("key_pem", "order_key_pem")
    DIRECTORIES = ("production", "staging")
    MAX_DOMAINS = 100  # Let's Encrypt's limit of names on one certificate

    @staticmethod
    def clean(payload: Any) -> dict:
        """Validated fields of a new certificate: name, domains, and optionally directory
        and key_type. Wildcards are refused: HTTP-01 cannot validate them."""
        payload = _only_known(payload, {"name", "domains", "directory", "key_type"},
                              "certificate")
        out: dict[str, Any] = {"id": check_name(payload.get("name"), "name")}
        domains = payload.get("domains")
        if not isinstance(domains, list) or not 1 <= len(domains) <= Certificate.MAX_DOMAINS:
            raise ValidationError(f"domains must be a list of 1 to {Certificate.MAX_DOMAINS} "
                                  "hostnames", field="domains")
        names = []
        for raw in domains:
            host = check_hostname(raw, "domains")
            if host not in names:
                names.append(host)
        out["domains"] = tuple(names)
        if "directory" in payload:
            out["directory"] = check_directory(payload["directory"])
        if "key_type" in payload:
            out["key_type"] = check_choice(payload["key_type"], "key_type", KEY_TYPES)
        return out

    def covers(self, domains) -> bool:
        """True when this certificate's names include every one of `domains`."""
        return set(domains) <= set(self.domains)


def check_directory(value: Any, name: str = "directory") -> str:
    """`production`, `staging` or an https URL of an ACME directory."""
    if value in Certificate.DIRECTORIES:
        return value
    return check_url(value, name, schemes=("https",))


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
    bind: str = "127.0.0.1"  # host address container ports are published on
    # pending (created, first deployment queued), deploying, running, stopped, failed, deleting
    status: str = "pending"
    error: str = ""  # why the last command failed, while status is failed
    revision: int = 0  # bumped by each redeploy; containers carry it as a label
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    CREATE_FIELDS = frozenset({"name", "image", "port", "hostname", "command", "env",
                               "replicas", "memory_mb", "cpus", "restart", "labels", "health",
                               "bind"})
    # What a redeploy may change; the name and hostname are fixed, replicas change by scaling.
    REDEPLOY_FIELDS = CREATE_FIELDS - {"name", "hostname", "replicas"}
    MAX_REPLICAS = 32  # a route has at most 32 targets
    # Names whose record key would be another key of the noun (berth:service:index, ...).
    RESERVED_NAMES = frozenset({"index", "version", "changed", "owner", "unique"})

    @staticmethod
    def clean(payload: Any, *, allowed: frozenset[str] = CREATE_FIELDS,
              partial: bool = False) -> dict:
        """Validated service fields from user input (`name` becomes `id`); with `partial`,
        only those present, else name, image and port are required."""
        payload = _only_known(payload, set(allowed), "service")
        out: dict[str, Any] = {}
        if "name" in allowed and ("name" in payload or not partial):
            out["id"] = check_name(payload.get("name"), "name")
            if out["id"] in Service.RESERVED_NAMES:
                raise ValidationError(f"name {out['id']!r} is reserved", field="name")
        if "image" in payload or not partial:
            out["image"] = check_image(payload.get("image"))
        if "port" in payload or not partial:
            out["port"] = check_int(payload.get("port"), "port", 1, 65535)
        if "hostname" in payload:
            out["hostname"] = check_hostname(payload["hostname"], "hostname")
        if "command" in payload:
            out["command"] = check_command(payload["command"])
        if "env" in payload:
            out["env"] = check_env(payload["env"])
        if "replicas" in payload:
            out["replicas"] = check_int(payload["replicas"], "replicas", 1,
                                        Service.MAX_REPLICAS)
        if "memory_mb" in payload:
            out["memory_mb"] = check_int(payload["memory_mb"], "memory_mb", 0, 1 << 20)
            if 0 < out["memory_mb"] < 6:  # the engine's minimum
                raise ValidationError("memory_mb must be 0 (no limit) or at least 6",
                                      field="memory_mb")
        if "cpus" in payload:
            out["cpus"] = check_number(payload["cpus"], "cpus", 0, 1024)
        if "restart" in payload:
            out["restart"] = check_choice(payload["restart"], "restart", RESTART_POLICIES)
        if "labels" in payload:
            out["labels"] = check_labels(payload["labels"])
        if "health" in payload:
            out["health"] = check_health(payload["health"])
        if "bind" in payload:
            out["bind"] = check_ip(payload["bind"], "bind")
        return out


# -- service fields -------------------------------------------------------------------------

# Labels berth puts on every container it runs, so the engine alone tells what belongs to what.
LABEL_SERVICE = "berth.service"
LABEL_OWNER = "berth.owner"
LABEL_REVISION = "berth.revision"
LABEL_REPLICA = "berth.replica"
LABEL_PORT = "berth.port"  # the allocated host port
LABEL_INSTANCE = "berth.instance"  # the installation (app.redis.INSTANCE_ID)

IMAGE_RE = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]{1,5})?/)?"  # registry host[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # :tag
    r"(?:@sha256:[a-f0-9]{64})?$")  # @digest
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def check_image(value: Any, name: str = "image") -> str:
    if not isinstance(value, str) or len(value) > 255 or not IMAGE_RE.fullmatch(value):
        raise ValidationError(f"{name} must be an image reference such as nginx:1.27 or "
                              "registry.example.com/team/app@sha256:<digest>", field=name)
    return value


def check_number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValidationError(f"{name} must be a number from {low} to {high}", field=name)
    return float(value)


def check_ip(value: Any, name: str) -> str:
    try:
        if not isinstance(value, str):  # ip_address() would take 12345 as 0.0.48.57
            raise ValueError(value)
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValidationError(f"{name} must be an IP address such as 127.0.0.1",
                              field=name) from None


def check_command(value: Any, name: str = "command") -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 100 or not all(
            isinstance(arg, str) and len(arg) <= 4096 and "\0" not in arg for arg in value):
        raise ValidationError(f"{name} must be a list of at most 100 arguments (strings "
                              "without NUL)", field=name)
    return tuple(value)


def check_env(value: Any, name: str = "env") -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > 200:
        raise ValidationError(f"{name} must be an object of at most 200 variables", field=name)
    for key, val in value.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
            raise ValidationError(f"{name}: {key!r} is not a valid variable name", field=name)
        if not isinstance(val, str) or len(val) > 32768 or "\0" in val:
            raise ValidationError(f"{name}: the value of {key} must be a string", field=name)
    return dict(value)


def check_labels(value: Any, name: str = "labels") -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > 50:
        raise ValidationError(f"{name} must be an object of at most 50 labels", field=name)
    for key, val in value.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.fullmatch(key):
            raise ValidationError(f"{name}: {key!r} is not a valid label", field=name)
        if key.startswith("berth."):
            raise ValidationError(f"{name}: the berth. prefix is berth's own", field=name)
        check_text(val, f"{name}.{key}", 1024)
    return dict(value)


def check_health(value: Any, name: str = "health") -> dict:
    """{"path": "/healthz", "interval_s": 2, "timeout_s": 2}; missing keys take defaults."""
    value = _only_known(value, {"path", "interval_s", "timeout_s"}, "health check")
    path = value.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 1024 or any(
            ord(c) < 0x21 or ord(c) > 0x7e for c in path):
        raise ValidationError(f"{name}.path must be a URL path starting with '/'",
                              field=f"{name}.path")
    return {"path": path,
            "interval_s": check_int(value.get("interval_s", 2), f"{name}.interval_s", 1, 3600),
            "timeout_s": check_int(value.get("timeout_s", 2), f"{name}.timeout_s", 1, 60)}


def fresh_fields(**extra) -> dict:
    """Timestamps for a new record."""
    stamp = now_s()
    return {"created_at": stamp, "updated_at": stamp, **extra}
