"""The route table: an immutable snapshot of every route, matched by host, then path prefix.

Matching makes no Redis call and never raises:

1. host: the exact name first, then the wildcard one label up: `*.example.com` matches
   `a.example.com`, but neither `example.com` nor `a.b.example.com` (as certificates do).
   When none of the exact host's prefixes matches the path, the wildcard routes are tried.
2. path: the longest prefix, on segment boundaries: `/api` matches `/api` and `/api/x` but
   not `/apix`; a prefix ending in `/` matches everything under it.

A worker swaps in a new table as one attribute assignment, so a request sees either the old
table or the new one, never half of each.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import idna

from app.models import Route

_ASCII_HOST = re.compile(r"^[a-z0-9.\-_]+$")


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream of a route, parsed once when the table is built."""

    url: str
    host: str
    port: int
    tls: bool
    base_path: str  # prefixed to every forwarded path ("" for none)
    host_header: str  # what Host says when the route does not preserve the client's
    owner: str = ""  # of the route: pooled connections serve one owner (see pool_key)

    @property
    def key(self) -> tuple[str, int, bool]:
        """The upstream's address: its health is shared by every route that targets it."""
        return (self.host, self.port, self.tls)

    @property
    def pool_key(self) -> tuple[str, str, int, bool]:
        """Idle connections are kept per owner as well as per address: bytes a backend sends
        after an exchange has ended, too late for the pool to see them (see proxy/
        upstream.py), can then only reach a request of the same owner's routes, never
        another tenant's clients."""
        return (self.owner, self.host, self.port, self.tls)

    @classmethod
    def parse(cls, url: str, owner: str = "") -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        default_port = 443 if tls else 80
        port = parts.port or default_port
        host = parts.hostname or ""
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default_port else f"{shown}:{port}"
        return cls(url=url.rstrip("/"), host=host, port=port, tls=tls,
                   base_path=parts.path.rstrip("/"), host_header=host_header, owner=owner)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """A route with everything the hot path needs precomputed."""

    route: Route
    targets: tuple[Target, ...]
    # (lower-case name, name, value or None to remove), applied in order
    request_rules: tuple[tuple[str, str, str | None], ...]
    response_rules: tuple[tuple[str, str, str | None], ...]
    # round-robin position; mutable on purpose (per worker, reset with each new table)
    turn: itertools.count = field(default_factory=itertools.count, compare=False)

    @property
    def prefix(self) -> str:
        return self.route.path_prefix

    @classmethod
    def build(cls, route: Route) -> RouteEntry:
        return cls(route=route,
                   targets=tuple(Target.parse(url, route.owner) for url in route.targets),
                   request_rules=_rules(route.request_headers),
                   response_rules=_rules(route.response_headers))


def _rules(rules: dict) -> tuple[tuple[str, str, str | None], ...]:
    return tuple((name.lower(), name, value) for name, value in rules.items())


def prefix_matches(prefix: str, path: str) -> bool:
    if not path.startswith(prefix):
        return False
    return (len(path) == len(prefix) or prefix.endswith("/") or path[len(prefix)] == "/")


def strip_prefix(prefix: str, path: str) -> str:
    """`path` below `prefix` (which it must match), always starting with '/'."""
    if prefix == "/":
        return path
    rest = path[len(prefix) - 1:] if prefix.endswith("/") else path[len(prefix):]
    return rest or "/"


def normalize_host(raw: str | None) -> str | None:
    """The lower-case IDNA host of a Host header without port or trailing dot, or None when
    it cannot be a host. Never raises: unusual input simply matches no route."""
    if not raw:
        return None
    if not raw.isascii():
        raw = _from_latin1(raw)
    host = raw.strip().lower()
    if host.startswith("["):  # IPv6 literal, optionally with a port
        end = host.find("]")
        return host[:end + 1] if end > 1 else None
    name, colon, port = host.rpartition(":")
    if colon:
        if (port and not port.isdigit()) or ":" in name:
            return None
        host = name
    host = host.rstrip(".")
    if not host:
        return None
    if _ASCII_HOST.match(host):
        return host
    return _idna_host(host)


def _from_latin1(raw: str) -> str:
    # WSGI hands header values over as latin-1; a UTF-8 Host arrives as mojibake.
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        return raw.encode("latin-1").decode("utf-8")
    return raw


@functools.lru_cache(maxsize=1024)
def _idna_host(host: str) -> str | None:
    try:
        # UTS 46 maps full stops such as U+3002 to ".", so a trailing one shows only now.
        return idna.encode(host, uts46=True).decode("ascii").rstrip(".") or None
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def wildcard_of(host: str) -> str | None:
    """The wildcard name that covers `host` (`a.example.com` -> `*.example.com`)."""
    _label, dot, parent = host.partition(".")
    return f"*.{parent}" if dot and parent else None


class RouteTable:
    """Every route of one table version, indexed by host; immutable once built."""

    __slots__ = ("version", "entries", "_by_host")

    def __init__(self, entries: Iterable[RouteEntry], version: int = 0):
        self.version = version
        self.entries: tuple[RouteEntry, ...] = tuple(entries)
        by_host: dict[str, list[RouteEntry]] = {}
        for entry in self.entries:
            by_host.setdefault(entry.route.host, []).append(entry)
        # Longest prefix first; ties (impossible in the store) resolved by id for stability.
        self._by_host = {host: tuple(sorted(group, key=lambda e: (-len(e.prefix), e.route.id)))
                         for host, group in by_host.items()}

    @classmethod
    def build(cls, routes: Iterable[Route], version: int = 0) -> RouteTable:
        return cls((RouteEntry.build(route) for route in routes), version)

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, host: str | None, path: str) -> tuple[RouteEntry, str] | None:
        """(route entry, path below its prefix) for a normalised host, or None."""
        if not host:
            return None
        for name in (host, wildcard_of(host)):
            for entry in self._by_host.get(name, ()) if name else ():
                if prefix_matches(entry.prefix, path):
                    return entry, strip_prefix(entry.prefix, path)
        return None

    def knows_host(self, host: str | None) -> bool:
        if not host:
            return False
        wildcard = wildcard_of(host)
        return host in self._by_host or (wildcard is not None and wildcard in self._by_host)
