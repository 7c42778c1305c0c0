"""The certificate index: which active certificate serves a hostname (exact name, then the
wildcard one label up), held in worker memory like the route table."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from app.models import Certificate
from app.stores.base import Repository
from proxy.route_cache import TableCache
from proxy.routing import wildcard_of


class CertIndex:
    __slots__ = ("version", "_by_name")

    def __init__(self, certificates: Iterable[Certificate], version: int = 0,
                 now: float | None = None):
        self.version = version
        now = time.time() if now is None else now
        by_name: dict[str, Certificate] = {}
        usable = [c for c in certificates
                  if c.status == "active" and c.cert_pem and c.key_pem and c.not_after > now]
        # Where names overlap, the certificate valid for longest wins.
        for cert in sorted(usable, key=lambda c: c.not_after):
            for name in cert.domains:
                by_name[name] = cert
        self._by_name = by_name

    def find(self, host: str | None) -> Certificate | None:
        if not host:
            return None
        cert = self._by_name.get(host)
        if cert is None and (wildcard := wildcard_of(host)) is not None:
            cert = self._by_name.get(wildcard)
        return cert

    def covers(self, host: str | None) -> bool:
        return self.find(host) is not None

    def misdirected(self, server_name: str | None, host: str) -> bool:
        """True when a TLS connection whose handshake named `server_name` (SNI) carries a
        request for `host` that its certificate does not cover (RFC 9110 15.5.20): the
        certificate served is not the one `host` would have got, and does not name `host`.
        Without SNI the default certificate was served; that is misdirected only for a host
        that has a certificate of its own."""
        served = self.find(server_name)
        if served is None:
            return self.find(host) is not None
        return host not in served.domains and wildcard_of(host) not in served.domains


def certificate_cache(store: Repository, interval_s: float = 2.0,
                      clock: Callable[[], float] = time.time) -> TableCache[CertIndex]:
    return TableCache(store, lambda certs, version: CertIndex(certs, version, clock()),
                      interval_s=interval_s)
