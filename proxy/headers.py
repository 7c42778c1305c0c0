"""Header policy of the proxy: what crosses it in each direction, and what it adds.

Towards the upstream:
- hop-by-hop headers (RFC 9110 7.6.1) and every header the client named in Connection go;
- `X-Berth-*` is ours: a client's copy is dropped, so a backend can trust what we set
  (`X-Berth-User` after route authentication);
- X-Forwarded-For/-Proto/-Host, Forwarded and X-Real-IP are rebuilt; a client's values are
  kept (and extended) only when its address is a configured trusted proxy;
- traceparent and X-Trace-Id carry the request's trace id (the caller's, or a new one);
- Host is the target's unless the route preserves the client's;
- the route's request rules apply last, so an operator can override any of the above.

Towards the client: hop-by-hop headers go, as do Server and Date (the server writes its
own), then the route's response rules, HSTS when asked for over TLS, and X-Trace-Id.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import Iterable

from app.tracing import format_traceparent

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
})
FORWARDING = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                        "forwarded", "x-real-ip"})
# Set by the proxy itself, or meaningless after it: gunicorn answers Expect: 100-continue.
REPLACED_REQUEST = frozenset({"host", "content-length", "expect", "traceparent", "x-trace-id"})
REPLACED_RESPONSE = frozenset({"server", "date", "x-trace-id"})
_NOT_RELAYED = HOP_BY_HOP | REPLACED_RESPONSE
INTERNAL_PREFIX = "x-berth-"
HSTS_VALUE = "max-age=31536000"

Rules = tuple[tuple[str, str, str | None], ...]


def connection_tokens(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


class TrustedProxies:
    """Which peers may tell us who the client is (BERTH_TRUSTED_PROXIES)."""

    def __init__(self, networks: Iterable[str] = ()):
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self.trusts = functools.lru_cache(maxsize=4096)(self._trusts)

    def _trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client_ip(self, peer: str, x_forwarded_for: str | None) -> str:
        """The first address, from the right, that is not a trusted proxy."""
        if not x_forwarded_for or not self.trusts(peer):
            return peer
        chain = [a.strip() for a in x_forwarded_for.split(",") if a.strip()]
        for address in reversed(chain):
            if not self.trusts(address):
                return address
        return chain[0] if chain else peer


def _forwarded_node(address: str) -> str:
    return f'"[{address}]"' if ":" in address else address


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forwarding_headers(env: dict, *, peer: str, trusted: bool, client_ip: str, scheme: str,
                       host: str) -> list[tuple[str, str]]:
    """X-Forwarded-*, Forwarded and X-Real-IP for the upstream request."""
    xff = env.get("HTTP_X_FORWARDED_FOR") if trusted else None
    proto = (env.get("HTTP_X_FORWARDED_PROTO") if trusted else None) or scheme
    fwd_host = (env.get("HTTP_X_FORWARDED_HOST") if trusted else None) or host
    ours = f"for={_forwarded_node(peer)};host={_quoted(host)};proto={scheme}"
    forwarded = env.get("HTTP_FORWARDED") if trusted else None
    return [
        ("X-Forwarded-For", f"{xff}, {peer}" if xff else peer),
        ("X-Forwarded-Proto", proto.split(",")[0].strip()),
        ("X-Forwarded-Host", fwd_host.split(",")[0].strip()),
        ("Forwarded", f"{forwarded}, {ours}" if forwarded else ours),
        ("X-Real-IP", client_ip),
    ]


# environ key -> (lower-case name, name to send), or _NOT_FORWARDED for a header the policy
# above always replaces or removes; bounded, since clients choose header names.
_ENVIRON_NAMES: dict[str, tuple[str, str]] = {}
_NOT_FORWARDED = ("", "")


def _environ_name(key: str) -> tuple[str, str]:
    lower = key[5:].replace("_", "-").lower()
    entry = _NOT_FORWARDED if (lower in HOP_BY_HOP or lower in REPLACED_REQUEST
                               or lower in FORWARDING or lower.startswith(INTERNAL_PREFIX)) \
        else (lower, lower.title())
    if len(_ENVIRON_NAMES) < 1024:
        _ENVIRON_NAMES[key] = entry
    return entry


def _span_id() -> str:
    """The proxy's span id in the traceparent it sends: unique is enough, secret is not, so
    no system call for randomness (gunicorn reseeds `random` in every worker)."""
    return f"{random.getrandbits(64) or 1:016x}"


def request_headers(env: dict, *, forwarding: list[tuple[str, str]],
                    trace_id: str, rules: Rules, drop: frozenset[str] = frozenset(),
                    extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The headers to send upstream, from the WSGI environ of the client request (Host
    apart: it depends on the target, see Upstream.send).

    `drop` names further headers to leave out (Authorization once the proxy consumed it);
    `extra` adds ours (e.g. X-Berth-User) before the rules are applied.
    """
    named = connection_tokens(env.get("HTTP_CONNECTION"))
    out = []
    content_type = env.get("CONTENT_TYPE")
    if content_type:
        out.append(("Content-Type", content_type))
    for key, value in env.items():
        if not key.startswith("HTTP_"):
            continue
        entry = _ENVIRON_NAMES.get(key) or _environ_name(key)
        if entry is _NOT_FORWARDED:
            continue
        lower, name = entry
        if lower in named or lower in drop:
            continue
        out.append((name, value))
    out.extend(forwarding)
    out.append(("traceparent", format_traceparent(trace_id, _span_id())))
    out.append(("X-Trace-Id", trace_id))
    out.extend(extra)
    return apply_rules(out, rules) if rules else out


def response_headers(headers: list[tuple[str, str]], *, trace_id: str, rules: Rules,
                     hsts: bool = False) -> list[tuple[str, str]]:
    """The upstream response headers as the client gets them."""
    lowered = [(name.lower(), name, value) for name, value in headers]
    named = frozenset()
    for lower, _name, value in lowered:
        if lower == "connection":
            named |= connection_tokens(value)
    out = [(name, value) for lower, name, value in lowered
           if lower not in _NOT_RELAYED and lower not in named]
    if rules:
        out = apply_rules(out, rules)
    if hsts and not any(name.lower() == "strict-transport-security" for name, _ in out):
        out.append(("Strict-Transport-Security", HSTS_VALUE))
    out.append(("X-Trace-Id", trace_id))
    return out


def apply_rules(headers: list[tuple[str, str]], rules: Rules) -> list[tuple[str, str]]:
    """Each rule replaces every header of its name with its value, or removes them (None)."""
    for lower, name, value in rules:
        headers = [(n, v) for n, v in headers if n.lower() != lower]
        if value is not None:
            headers.append((name, value))
    return headers
