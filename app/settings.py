"""One typed, frozen Settings object, read from the environment once, at the edge.

Every field names its environment variable, its default and what it means. An invalid value
raises SettingsError whose message names the variable and what is allowed; entry points print
that one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from app.alerts.rules import parse_rules_setting, parse_webhooks_setting
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


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low} to {high}")
        return value

    return parse


def _networks(raw: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks, normalised (e.g. "10.0.0.0/8")."""
    networks = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


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


def _https_url(raw: str) -> str:
    value = raw.strip()
    if urlparse(value).scheme != "https" or not urlparse(value).hostname:
        raise ValueError("expected an https:// URL")
    return value


def _days_list(raw: str) -> tuple[int, ...]:
    try:
        days = tuple(sorted({int(part) for part in raw.split(",") if part.strip()},
                            reverse=True))
    except ValueError:
        raise ValueError("expected comma-separated whole numbers of days, e.g. 14,7,3,1") from None
    if not days or any(not 1 <= d <= 365 for d in days):
        raise ValueError("expected comma-separated whole numbers of days from 1 to 365")
    return days


def _docker_url(raw: str) -> str:
    value = raw.strip()
    if urlparse(value).scheme not in ("unix", "tcp", "http", "https", "ssh"):
        raise ValueError("expected a unix://, tcp:// or ssh:// address of a Docker engine")
    return value


def _port_range(raw: str) -> tuple[int, int]:
    first, sep, last = raw.strip().partition("-")
    try:
        low, high = int(first), int(last if sep else first)
    except ValueError:
        raise ValueError("expected a port range such as 20000-29999") from None
    if not 1024 <= low <= high <= 65535:
        raise ValueError("expected a port range within 1024-65535, low end first")
    return low, high


def _port_set(raw: str) -> frozenset[int]:
    """Comma-separated ports or ranges, e.g. "20080,20443,21000-21099"."""
    ports: set[int] = set()
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            low, high = _port_range(item)
        except ValueError:
            raise ValueError(f"{item!r} is not a port or a port range (1024-65535)") from None
        ports.update(range(low, high + 1))
    return frozenset(ports)


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


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
    worker_heartbeat_timeout_ms: int = _setting(
        "BERTH_WORKER_HEARTBEAT_TIMEOUT_MS",
        "10000",
        _int_range(1000, 3_600_000),
        "A worker that sent Redis nothing for this long is dead: its unacknowledged messages "
        "go back to their queue (Dramatiq's heartbeat_timeout; Dramatiq's default is 60000). "
        "A live worker's consumers reach Redis every dramatiq_worker_timeout (100 ms in the "
        "Procfile), so this only has to outlast a stall.",
    )
    worker_maintenance_chance: int = _setting(
        "BERTH_WORKER_MAINTENANCE_CHANCE",
        "250000",
        _int_range(1, 1_000_000),
        "Per million broker calls (each consumer fetches every dramatiq_worker_timeout), how "
        "many also requeue the messages of dead workers (Dramatiq's maintenance_chance; its "
        "default, 1000, takes minutes on an idle broker). 250000: one fetch in four.",
    )
    heartbeat_stale_s: int = _setting(
        "BERTH_HEARTBEAT_STALE_S",
        "15",
        _int_range(1, 3600),
        "A component whose last heartbeat is older than this is reported stale (three of "
        "its 5 s beats missed); `berth status` then exits 4. Entries older than 10 minutes "
        "are removed.",
    )
    web_workers: int = _setting(
        "BERTH_WEB_WORKERS", "1", _int_range(1, 64), "gunicorn workers of the web process."
    )
    proxy_workers: int = _setting(
        "BERTH_PROXY_WORKERS", "2", _int_range(1, 64), "gunicorn workers of each proxy process."
    )
    proxy_listen_fd: int = _setting(
        "BERTH_PROXY_LISTEN_FD",
        "-1",
        _int_range(-1, 65535),
        "-1: each proxy binds BERTH_BIND_HOST and its port itself. Otherwise the file "
        "descriptor of the listening socket it inherits and serves instead (`make run` sets 0: "
        "supervisord holds the socket, so it outlives the proxy's gunicorn arbiter).",
    )
    proxy_worker_connections: int = _setting(
        "BERTH_PROXY_WORKER_CONNECTIONS",
        "1000",
        _int_range(1, 100_000),
        "Concurrent client connections per proxy worker (gevent greenlets).",
    )
    trusted_proxies: tuple[str, ...] = _setting(
        "BERTH_TRUSTED_PROXIES",
        "",
        _networks,
        "Comma-separated IPs/CIDRs of proxies in front of berth whose X-Forwarded-* and "
        "Forwarded headers are believed; empty: nobody's.",
    )
    user_target_networks: tuple[str, ...] = _setting(
        "BERTH_USER_TARGET_NETWORKS",
        "0.0.0.0/0,::/0",
        _networks,
        "Comma-separated IPs/CIDRs that routes written by user tokens may target, checked "
        "when written and when the proxy connects. Loopback, link-local and unspecified "
        "addresses stay refused unless a network inside them is listed (e.g. 127.0.0.0/8); "
        "berth's own listeners and Redis always are.",
    )
    proxy_connect_timeout_s: float = _setting(
        "BERTH_PROXY_CONNECT_TIMEOUT_S", "5", _float_range(0.05, 300), "Upstream connect timeout."
    )
    proxy_read_timeout_s: float = _setting(
        "BERTH_PROXY_READ_TIMEOUT_S",
        "60",
        _float_range(0.05, 3600),
        "Longest wait for the next bytes of an upstream response (504 before its head).",
    )
    proxy_client_timeout_s: float = _setting(
        "BERTH_PROXY_CLIENT_TIMEOUT_S",
        "60",
        _float_range(0.05, 3600),
        "Longest wait for a client to send more request body or accept more response.",
    )
    proxy_keepalive_s: int = _setting(
        "BERTH_PROXY_KEEPALIVE_S",
        "5",
        _int_range(1, 3600),
        "Idle client keep-alive connections, and request heads slower than this, are closed.",
    )
    proxy_pool_idle_s: float = _setting(
        "BERTH_PROXY_POOL_IDLE_S",
        "30",
        _float_range(0.1, 3600),
        "Idle upstream keep-alive connections older than this are not reused.",
    )
    proxy_pool_size: int = _setting(
        "BERTH_PROXY_POOL_SIZE",
        "64",
        _int_range(0, 10_000),
        "Idle upstream keep-alive connections kept per upstream and worker.",
    )
    proxy_target_down_s: float = _setting(
        "BERTH_PROXY_TARGET_DOWN_S",
        "10",
        _float_range(0.0, 3600),
        "A route target that failed to accept a connection is skipped for this long.",
    )
    proxy_websocket_idle_s: float = _setting(
        "BERTH_PROXY_WEBSOCKET_IDLE_S",
        "300",
        _float_range(0.05, 86_400),
        "A WebSocket tunnel with no bytes in either direction for this long is closed.",
    )
    proxy_limit_request_line: int = _setting(
        "BERTH_PROXY_LIMIT_REQUEST_LINE",
        "8190",
        _int_range(64, 8190),
        "Longest request line in bytes; longer is refused with 414.",
    )
    proxy_limit_request_fields: int = _setting(
        "BERTH_PROXY_LIMIT_REQUEST_FIELDS",
        "100",
        _int_range(1, 32768),
        "Most request header fields; more is refused with 431.",
    )
    proxy_limit_request_field_size: int = _setting(
        "BERTH_PROXY_LIMIT_REQUEST_FIELD_SIZE",
        "8190",
        _int_range(64, 65536),
        "Largest request header field in bytes; larger is refused with 431.",
    )
    proxy_request_events: str = _setting(
        "BERTH_PROXY_REQUEST_EVENTS",
        "on",
        _choice("on", "off"),
        "on: one event per proxied request on events:request:stream; off: none (metrics and "
        "alerts then see no traffic).",
    )
    tls_dir: str = _setting(
        "BERTH_TLS_DIR",
        ".berth/tls",
        _text,
        "Where the TLS proxy keeps its certificate files (private keys: mode 0600).",
    )
    acme_production_url: str = _setting(
        "BERTH_ACME_PRODUCTION_URL",
        "https://acme-v02.api.letsencrypt.org/directory",
        _https_url,
        "ACME directory meant by the directory name `production`.",
    )
    acme_staging_url: str = _setting(
        "BERTH_ACME_STAGING_URL",
        "https://acme-staging-v02.api.letsencrypt.org/directory",
        _https_url,
        "ACME directory meant by the directory name `staging`.",
    )
    acme_ca_bundle: str = _setting(
        "BERTH_ACME_CA_BUNDLE",
        "",
        _text,
        "PEM file of CAs trusted for the ACME server's HTTPS (empty: the system's).",
    )
    acme_key_type: str = _setting(
        "BERTH_ACME_KEY_TYPE",
        "ec256",
        _choice("ec256", "ec384", "rsa2048", "rsa3072", "rsa4096"),
        "Key type of new certificates unless a request names one.",
    )
    acme_timeout_s: int = _setting(
        "BERTH_ACME_TIMEOUT_S",
        "90",
        _int_range(5, 3600),
        "Longest wait for the CA to validate and issue one order before it counts as failed.",
    )
    acme_weekly_orders: int = _setting(
        "BERTH_ACME_WEEKLY_ORDERS",
        "50",
        _int_range(0, 100_000),
        "Most new orders per registered domain in any 7 days, checked before ordering "
        "(0: no cap).",
    )
    acme_backoff_s: int = _setting(
        "BERTH_ACME_BACKOFF_S",
        "300",
        _int_range(1, 86400),
        "Wait after a failed order before the next attempt; doubles with each failure in a row.",
    )
    acme_backoff_max_s: int = _setting(
        "BERTH_ACME_BACKOFF_MAX_S",
        "86400",
        _int_range(1, 30 * 86400),
        "Longest wait between attempts after repeated failures.",
    )
    acme_lock_ttl_s: int = _setting(
        "BERTH_ACME_LOCK_TTL_S",
        "60",
        _int_range(2, 3600),
        "Expiry of a certificate's operation lock; renewed while held, so it only matters "
        "when a worker dies holding it.",
    )
    expiry_warn_days: tuple[int, ...] = _setting(
        "BERTH_EXPIRY_WARN_DAYS",
        "14,7,3,1",
        _days_list,
        "expiring_soon is published once per certificate as each of these days-left is crossed.",
    )
    renewal_scan_s: int = _setting(
        "BERTH_RENEWAL_SCAN_S",
        "3600",
        _int_range(1, 86400),
        "Scheduler interval of the renewal scan and the expiry warnings.",
    )
    trim_interval_s: int = _setting(
        "BERTH_TRIM_INTERVAL_S",
        "3600",
        _int_range(1, 86400),
        "Scheduler interval of stream retention trimming.",
    )
    scheduler_lock_ttl_s: int = _setting(
        "BERTH_SCHEDULER_LOCK_TTL_S",
        "3",
        _int_range(2, 3600),
        "Expiry of the scheduler leader lease; every replica takes or extends it every quarter "
        "of this, so a dead leader is replaced within 1.25 times this.",
    )

    docker_host: str = _setting(
        "DOCKER_HOST",
        "unix:///var/run/docker.sock",
        _docker_url,
        "The Docker engine that runs services (the worker's and the API's, for logs).",
    )
    image_pull: str = _setting(
        "BERTH_IMAGE_PULL",
        "missing",
        _choice("missing", "never"),
        "missing: pull a service's image when the engine lacks it; never: only local images.",
    )
    service_ports: tuple[int, int] = _setting(
        "BERTH_SERVICE_PORTS",
        "20000-29999",
        _port_range,
        "Host ports published for service containers are allocated from this range.",
    )
    restricted_ports: frozenset[int] = _setting(
        "BERTH_RESTRICTED_PORTS",
        "",
        _port_set,
        "Ports (e.g. 20080,21000-21099) never given to containers; berth's own listener "
        "ports are always skipped too.",
    )
    service_start_timeout_s: int = _setting(
        "BERTH_SERVICE_START_TIMEOUT_S",
        "60",
        _int_range(1, 3600),
        "How long new containers may take to pass their health check before the command fails.",
    )
    service_drain_ms: int = _setting(
        "BERTH_SERVICE_DRAIN_MS",
        "2000",
        _int_range(0, 600_000),
        "After a route stops targeting containers, wait this long (proxies refresh, in-flight "
        "requests finish) before stopping them.",
    )
    service_stop_timeout_s: int = _setting(
        "BERTH_SERVICE_STOP_TIMEOUT_S",
        "10",
        _int_range(0, 600),
        "Grace period between SIGTERM and SIGKILL when a container is stopped.",
    )
    service_lock_wait_s: int = _setting(
        "BERTH_SERVICE_LOCK_WAIT_S",
        "30",
        _int_range(1, 3600),
        "How long a service command waits for another one on the same service to finish "
        "before it is retried later.",
    )
    service_lock_ttl_s: int = _setting(
        "BERTH_SERVICE_LOCK_TTL_S",
        "15",
        _int_range(2, 3600),
        "Expiry of a service's command lock; renewed while held, so it only matters when a "
        "worker dies holding it (its redelivered command waits this long at most).",
    )
    reconcile_interval_s: int = _setting(
        "BERTH_RECONCILE_INTERVAL_S",
        "30",
        _int_range(1, 86400),
        "Scheduler interval of reconcile_services (containers compared with the records).",
    )

    # -- observability: the consumer, alerts, /metrics ------------------------------------------
    consumer_batch: int = _setting(
        "BERTH_CONSUMER_BATCH",
        "1000",
        _int_range(1, 10_000),
        "Stream entries a consumer applies per transaction (bigger batches cost less each).",
    )
    consumer_claim_idle_ms: int = _setting(
        "BERTH_CONSUMER_CLAIM_IDLE_MS",
        "5000",
        _int_range(100, 3_600_000),
        "Entries a consumer read but did not acknowledge for this long (it died) are taken "
        "over by another. Must stay well above the time one batch takes.",
    )
    alert_eval_s: float = _setting(
        "BERTH_ALERT_EVAL_S",
        "5",
        _float_range(0.05, 3600),
        "How often the consumer evaluates the periodic alert rules (error rate, p99, lag, "
        "dropped events).",
    )
    alert_rules: str = _setting(
        "BERTH_ALERT_RULES",
        "",
        parse_rules_setting,
        'Alert rule overrides as JSON, e.g. {"rules": {"error_rate": {"threshold": 0.1}}}; '
        "the API's overrides (stored in Redis) apply on top.",
    )
    alert_webhooks: tuple[str, ...] = _setting(
        "BERTH_ALERT_WEBHOOKS",
        "",
        parse_webhooks_setting,
        "Comma-separated http(s) URLs that receive alert_fired and alert_resolved (POST, JSON).",
    )
    alert_webhook_secret: str = _setting(
        "BERTH_ALERT_WEBHOOK_SECRET",
        "",
        _text,
        "Key of the X-Berth-Signature header (sha256=HMAC of the body); empty: not signed.",
    )
    alert_webhook_retries: int = _setting(
        "BERTH_ALERT_WEBHOOK_RETRIES",
        "8",
        _int_range(0, 100),
        "Retries of a failed webhook delivery, with exponential backoff.",
    )
    alert_webhook_backoff_ms: int = _setting(
        "BERTH_ALERT_WEBHOOK_BACKOFF_MS",
        "2000",
        _int_range(1, 3_600_000),
        "Backoff before the first retry of a webhook delivery; doubles with each retry.",
    )
    alert_webhook_timeout_s: float = _setting(
        "BERTH_ALERT_WEBHOOK_TIMEOUT_S",
        "10",
        _float_range(0.1, 300),
        "Longest wait for a webhook receiver to answer.",
    )
    metrics_public: bool = _setting(
        "BERTH_METRICS_PUBLIC",
        "false",
        _bool,
        "true: /metrics on the web port answers without a token (for a scraper on a trusted "
        "network); false: it needs an admin token, like the API.",
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
        if self.acme_backoff_max_s < self.acme_backoff_s:
            raise SettingsError("BERTH_ACME_BACKOFF_MAX_S: expected at least BERTH_ACME_BACKOFF_S")
        first, last = self.service_ports
        if len(set(range(first, last + 1)) - self.blocked_ports) == 0:
            raise SettingsError("BERTH_SERVICE_PORTS: every port of the range is restricted")

    @property
    def blocked_ports(self) -> frozenset[int]:
        """Ports never allocated to containers: the restricted ones and berth's listeners."""
        return self.restricted_ports | {self.web_port, self.http_port, self.https_port}

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
