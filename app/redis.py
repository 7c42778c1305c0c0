"""The Redis client factory and every key name berth uses, in one place."""

from __future__ import annotations

import redis

PREFIX = "berth"

# Event streams, one per domain (the architecture's names, so operators can XLEN them).
STREAM_DOMAINS = ("request", "route", "service", "certificate", "alert", "system")


def stream(domain: str) -> str:
    return f"events:{domain}:stream"


DEAD_LETTER_STREAM = "events:dead:stream"
ALL_STREAMS = tuple(stream(d) for d in STREAM_DOMAINS) + (DEAD_LETTER_STREAM,)

# Publisher drop counter, summed over every process.
EVENTS_DROPPED = f"{PREFIX}:events:dropped"

# Component heartbeats: hash of "component/instance" -> last beat (ms since epoch).
HEARTBEATS = f"{PREFIX}:heartbeats"


def record(noun: str, record_id: str) -> str:
    """The JSON document of one stored resource."""
    return f"{PREFIX}:{noun}:{record_id}"


def index(noun: str) -> str:
    """Sorted set of every id of a noun, scored by creation time (listing without KEYS)."""
    return f"{PREFIX}:{noun}:index"


def owner_index(noun: str, owner: str) -> str:
    """Sorted set of the ids of a noun that one owner holds."""
    return f"{PREFIX}:{noun}:owner:{owner}"


def unique_index(noun: str, name: str) -> str:
    """Hash of a unique attribute value -> id (e.g. route host+path, token hash)."""
    return f"{PREFIX}:{noun}:unique:{name}"


def table_version(noun: str) -> str:
    """Counter bumped on every change of a noun; caches compare it to refresh."""
    return f"{PREFIX}:{noun}:version"


def changes_channel(noun: str) -> str:
    """Pub/sub channel announcing a change of a noun (payload: the new table version)."""
    return f"{PREFIX}:{noun}:changed"


def ports_allocated() -> str:
    """Hash of allocated host port -> owning service."""
    return f"{PREFIX}:ports:allocated"


def lock(name: str) -> str:
    return f"{PREFIX}:lock:{name}"


def create_client(url: str, **options) -> redis.Redis:
    """A client with bounded timeouts, so a Redis outage is an error, not a hang."""
    options.setdefault("socket_connect_timeout", 2.0)
    options.setdefault("socket_timeout", 5.0)
    options.setdefault("health_check_interval", 15)
    options.setdefault("decode_responses", True)
    return redis.Redis.from_url(url, **options)


def acme_challenge(token: str) -> str:
    """HTTP-01 key authorization for `token` (string with a TTL), answered by the proxy."""
    return f"{PREFIX}:acme:challenge:{token}"
