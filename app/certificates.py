"""Certificate commands: record the wish, enqueue the work, return at once.

Shared by the API (/api/v1/certificates) and by anything else that needs a certificate,
such as a route created with `auto_certificate`. The ACME work happens in
workers/certificates.py; the message carries the caller's trace id (app.jobs.enqueue).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable

import dramatiq

from app.crypto import SecretBox
from app.errors import Conflict, ValidationError
from app.jobs import (
    CONVERT_CERTIFICATE_TO_PRODUCTION,
    DELETE_CERTIFICATE,
    ISSUE_CERTIFICATE,
    RENEW_CERTIFICATE,
    REVOKE_CERTIFICATE,
    enqueue,
)
from app.models import Certificate, check_directory, check_hostname, fresh_fields
from app.settings import Settings
from app.stores.certificates import CertificateStore

# RFC 5280 CRLReason codes ACME accepts (RFC 8555 7.6).
REVOCATION_REASONS = {"unspecified": 0, "keyCompromise": 1, "affiliationChanged": 3,
                      "superseded": 4, "cessationOfOperation": 5}


class CertificateCommands:
    def __init__(self, settings: Settings, store: CertificateStore, broker: dramatiq.Broker,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = store
        self.broker = broker
        self.clock = clock

    def create(self, fields: dict, owner: str) -> Certificate:
        """Store a new certificate (fields from Certificate.clean) and enqueue its issuance."""
        cert = Certificate(
            id=fields["id"], domains=fields["domains"], owner=owner,
            directory=fields.get("directory") or check_directory(
                self.settings.acme_directory, "BERTH_ACME_DIRECTORY"),
            key_type=fields.get("key_type") or self.settings.acme_key_type,
            status="pending", **fresh_fields())
        cert = self.store.create(cert)
        enqueue(self.broker, ISSUE_CERTIFICATE, certificate=cert.id)
        return cert

    def renew(self, cert: Certificate) -> Certificate:
        """Make the certificate due now and enqueue its renewal (or its issuance, when it has
        none yet). A rate-limit backoff is kept; any other backoff is lifted, since the user
        asks for this attempt."""
        if cert.status == "revoked":
            raise Conflict(f"certificate {cert.id!r} is revoked; create a new one")
        if cert.backoff_reason == "rate_limited" and cert.backoff_until > self.clock():
            raise Conflict(f"certificate {cert.id!r} is rate-limited until "
                           f"{_iso(cert.backoff_until)}: {cert.last_error}")
        cert = self.store.update(cert.replace(renew_after=min(cert.renew_after, self.clock()),
                                              backoff_until=0.0, backoff_reason=""))
        job = RENEW_CERTIFICATE if cert.status == "active" else ISSUE_CERTIFICATE
        enqueue(self.broker, job, certificate=cert.id)
        return cert

    def revoke(self, cert: Certificate, reason: str = "unspecified") -> Certificate:
        if reason not in REVOCATION_REASONS:
            raise ValidationError(f"reason must be one of {', '.join(REVOCATION_REASONS)}",
                                  field="reason")
        if not cert.cert_pem:
            raise Conflict(f"certificate {cert.id!r} has not been issued; delete it instead")
        enqueue(self.broker, REVOKE_CERTIFICATE, certificate=cert.id,
                reason=REVOCATION_REASONS[reason])
        return cert

    def delete(self, cert: Certificate) -> Certificate:
        enqueue(self.broker, DELETE_CERTIFICATE, certificate=cert.id)
        return cert

    def convert_to_production(self, cert: Certificate) -> Certificate:
        if cert.status == "revoked":
            raise Conflict(f"certificate {cert.id!r} is revoked; create a new one")
        enqueue(self.broker, CONVERT_CERTIFICATE_TO_PRODUCTION, certificate=cert.id)
        return cert

    def for_route_host(self, host: str, owner: str) -> Certificate:
        """The certificate a route with `auto_certificate` serves its host with: one of the
        owner's that covers it already, else a new one named after the host."""
        host = check_hostname(host, "host")
        for cert in self.store.list(owner=owner):
            if host in cert.domains and cert.status != "revoked":
                return cert
        name = auto_name(host)
        existing = self.store.find(name)
        if existing is not None:
            if existing.owner != owner or host not in existing.domains:
                raise Conflict(f"a certificate named {name!r} exists for other names")
            return existing
        return self.create({"id": name, "domains": (host,)}, owner)


def key_purpose(certificate_id: str) -> str:
    """What a certificate's private key is sealed to (app.crypto associated data), so a key
    copied onto another certificate's record does not decrypt."""
    return f"certificate-key:{certificate_id}"


def private_key_pem(cert: Certificate, box: SecretBox) -> str:
    """The PEM private key of a stored certificate, decrypted (for the TLS proxy)."""
    return box.open(cert.key_pem, key_purpose(cert.id))


def auto_name(host: str) -> str:
    """A certificate name for a host: `auto-` and the host with dots as dashes, fitted to
    63 characters (the host itself is unique among a route's certificates)."""
    slug = re.sub(r"[^a-z0-9-]", "-", host.lower())
    name = f"auto-{slug}"
    if len(name) > 63:
        name = name[:54].rstrip("-") + "-" + hashlib.sha256(host.encode()).hexdigest()[:8]
    return name


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
