"""Which addresses a user-scope route may send traffic to (ARCHITECTURE: Tenancy).

An address is allowed when it lies in one of the networks of BERTH_USER_TARGET_NETWORKS
(default: all of IPv4 and IPv6), except:

- loopback, link-local and unspecified addresses (BUILTIN_DENIED), unless the setting lists
  a network inside that range itself (e.g. `127.0.0.0/8` on a single machine whose user
  backends run locally): `0.0.0.0/0` alone does not open them;
- the platform's own listeners (web, HTTP and HTTPS ports) and Redis, always.

IPv4-mapped and IPv4-compatible IPv6 forms (`::ffff:127.0.0.1`) are judged as the IPv4
address they carry. The API checks every address a target's name resolves to when a user
writes a route; the proxy checks the address it is about to connect to again, for routes a
user wrote last (Route.restricted), so a name that resolves elsewhere later gains nothing.
Imported by the proxy process too: standard library only.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

BUILTIN_DENIED: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128",  # loopback
    "169.254.0.0/16", "fe80::/10",  # link-local (cloud metadata services live here)
    "0.0.0.0/8", "::/128",  # unspecified ("this host": connecting to 0.0.0.0 reaches loopback)
))
_LOCAL: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128"))  # where a local listener answers
_COMPAT = ipaddress.ip_network("::/96")


def plain(address: str) -> Address | None:
    """The address, with an IPv4 one carried in IPv6 unwrapped; None if it is not one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _COMPAT and int(ip) > 1:  # ::a.b.c.d, but not :: or ::1
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


class TargetPolicy:
    def __init__(self, allowed: Iterable[str], platform: Iterable[tuple[str, int]] = ()):
        self.allowed: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allowed)
        # (network, port) pairs never reachable by a user route
        self.platform: tuple[tuple[Network, int], ...] = tuple(
            (ipaddress.ip_network(net, strict=False), port) for net, port in platform)

    @classmethod
    def from_settings(cls, settings) -> TargetPolicy:
        return cls(settings.user_target_networks, platform_endpoints(settings))

    def refusal(self, address: str, port: int) -> str | None:
        """Why a user route may not connect to (address, port), or None when it may."""
        ip = plain(address)
        if ip is None:
            return f"{address} is not an IP address"
        for net, denied_port in self.platform:
            if port == denied_port and ip.version == net.version and ip in net:
                return f"{address} port {port} is one of the platform's own listeners"
        inside = [n for n in self.allowed if n.version == ip.version and ip in n]
        if not inside:
            return f"{address} is outside the networks user routes may reach"
        for denied in BUILTIN_DENIED:
            if ip.version == denied.version and ip in denied and not any(
                    n.subnet_of(denied) for n in inside):
                return f"{address} is a loopback, link-local or unspecified address"
        return None

    def url_refusal(self, url: str) -> str | None:
        """Why a target URL is refused: the first denied address its host resolves to.
        A name that does not resolve now passes; the proxy checks again when it connects."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        for address in resolve(host, port):
            reason = self.refusal(address, port)
            if reason is not None:
                return reason if address == host else f"{host} resolves to {reason}"
        return None


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (itself for a literal); [] when it does not."""
    if plain(host) is not None:
        return [host]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(info[4][0] for info in infos))


def platform_endpoints(settings) -> list[tuple[str, int]]:
    """(network, port) of berth's listeners and of Redis. Listeners answer on every local
    address of a wildcard bind; those of other interfaces are not known here (a deployment
    that binds 0.0.0.0 should keep its public address out of BERTH_USER_TARGET_NETWORKS)."""
    endpoints = []
    for port in (settings.web_port, settings.http_port, settings.https_port):
        endpoints += [(str(net), port) for net in _LOCAL]
        if plain(settings.bind_host) is not None:
            endpoints.append((str(plain(settings.bind_host)), port))
    redis_url = urlsplit(settings.redis_url)
    if redis_url.scheme in ("redis", "rediss"):
        port = redis_url.port or 6379
        for address in resolve(redis_url.hostname or "127.0.0.1", port):
            ip = plain(address)
            local = ip is not None and any(ip.version == n.version and ip in n for n in _LOCAL)
            endpoints += [(str(net), port) for net in _LOCAL] if local else [(str(ip), port)]
    return endpoints
