"""The certificate operations (workers/certificates.py) against a real pebble, in process.

Pebble validates HTTP-01 through the real proxy process (tests/acme/conftest.py); the
end-to-end tests (test_certificates_e2e.py) run the real worker and scheduler processes too.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import dramatiq
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from app import redis as keys
from app.certificates import CertificateCommands, private_key_pem
from app.crypto import SecretBox, is_sealed
from app.errors import Conflict
from app.events import Event
from app.jobs import REVOKE_CERTIFICATE
from app.models import Certificate
from harness.pebble import Pebble
from tests.acme.conftest import acme_settings
from tests.acme.pki import verify_chain
from tests.support.procs import free_port, wait_until
from workers.acme_limits import registered_domain
from workers.broker import create_broker
from workers.certificates import CertificateService, backoff_s, lifetime_renewal
from workers.certificates import register as register_certificate_actors
from workers.deps import create_deps

pytestmark = pytest.mark.acme
SECRET = "certificate test secret 0123456789"


class Harness:
    """A CertificateService over the test Redis and pebble, plus the commands side."""

    def __init__(self, settings, redis_client, clock=time.time):
        self.settings = settings
        self.redis = redis_client
        self.deps = create_deps(settings, redis_client)
        self.service = CertificateService.create(self.deps)
        self.service.clock = clock
        self.broker = create_broker(settings)
        self.commands = CertificateCommands(settings, self.service.store, self.broker, clock)

    def create(self, name, *domains, **fields) -> Certificate:
        """Record a certificate the way the API does (its issue message goes unconsumed)."""
        return self.commands.create({"id": name, "domains": domains, **fields}, "alice")

    def get(self, name) -> Certificate:
        return self.service.store.get(name)

    def events(self, subject=None) -> list[Event]:
        self.deps.publisher.flush()
        entries = self.redis.xrange(keys.stream("certificate"))
        found = [Event.from_entry(*e) for e in entries]
        return [e for e in found if subject is None or e.subject == subject]

    def types(self, subject) -> list[str]:
        return [e.type for e in self.events(subject)]

    def close(self):
        self.deps.publisher.close(timeout=2)
        self.broker.close()


@pytest.fixture
def harness(settings, redis_client, pebble, proxy):
    h = Harness(acme_settings(settings, pebble, secret_key=SECRET, acme_backoff_s=60),
                redis_client)
    yield h
    h.close()


def test_issue_stores_an_active_certificate_and_publishes_ready(harness, pebble_root):
    harness.create("web", "web.example.com")
    harness.service.issue("web")
    cert = harness.get("web")
    assert cert.status == "active" and not cert.order_url and not cert.last_error
    verify_chain(cert.cert_pem, pebble_root, "web.example.com")
    assert is_sealed(cert.key_pem) and not cert.order_key_pem
    key = serialization.load_pem_private_key(
        private_key_pem(cert, SecretBox(SECRET)).encode(), password=None)
    leaf = x509.load_pem_x509_certificate(cert.cert_pem.encode())
    assert key.public_key() == leaf.public_key()
    assert cert.renew_after == pytest.approx(lifetime_renewal(cert.not_before, cert.not_after))
    assert cert.renewal_source == "lifetime"
    assert harness.types("web") == ["generation_started", "ready"]


def test_issue_is_idempotent_once_the_certificate_is_stored(harness):
    harness.create("idem", "idem.example.com")
    harness.service.issue("idem")
    first = harness.get("idem")
    harness.service.issue("idem")  # a redelivered message
    harness.service.renew("idem")  # not due
    assert harness.get("idem").serial == first.serial
    assert harness.types("idem") == ["generation_started", "ready"]


def test_multi_name_certificate(harness, pebble_root):
    names = ("shop.example.com", "www.shop.example.com", "shop.example.org")
    harness.create("shop", *names, key_type="rsa2048")
    harness.service.issue("shop")
    cert = harness.get("shop")
    for name in names:
        verify_chain(cert.cert_pem, pebble_root, name)


def test_renewal_replaces_a_due_certificate(harness, pebble_root):
    harness.create("ren", "ren.example.com")
    harness.service.issue("ren")
    old = harness.get("ren")
    harness.service.store.update(old.replace(renew_after=time.time() - 1))
    harness.service.renew("ren")
    new = harness.get("ren")
    assert new.serial != old.serial and new.status == "active"
    assert new.renew_after > time.time()
    verify_chain(new.cert_pem, pebble_root, "ren.example.com")
    assert harness.types("ren") == ["generation_started", "ready", "renewal_started", "renewed"]


def test_revoke_and_delete(harness, pebble):
    harness.create("rev", "rev.example.com")
    harness.service.issue("rev")
    serial = harness.get("rev").serial
    harness.service.revoke("rev", reason=1)
    cert = harness.get("rev")
    assert cert.status == "revoked" and not cert.key_pem
    assert pebble.cert_status(serial)["Status"] == "Revoked"
    harness.service.revoke("rev")  # again: nothing to do
    harness.service.renew("rev")  # a revoked certificate is not renewed
    harness.service.delete("rev")
    harness.service.delete("rev")  # again: nothing to do
    assert harness.service.store.find("rev") is None
    assert harness.types("rev") == ["generation_started", "ready", "revoked", "deleted"]


def test_failed_validation_backs_off(settings, redis_client, tmp_path):
    # A CA that validates against a port where nothing listens: every challenge fails.
    ca = Pebble(tmp_path, http_port=free_port()).start()
    try:
        h = Harness(acme_settings(settings, ca, acme_backoff_s=60), redis_client)
        h.create("bad", "bad.example.com")
        h.service.issue("bad")
        cert = h.get("bad")
        assert cert.status == "failed" and cert.backoff_reason == "validation"
        assert cert.failures == 1 and not cert.order_url
        assert cert.backoff_until == pytest.approx(time.time() + 60, abs=10)
        assert "bad.example.com" in cert.last_error
        failed = h.events("bad")[-1]
        assert failed.type == "generation_failed" and failed.data["reason"] == "validation"
        h.service.issue("bad")  # redelivered / retried during the backoff: no new order
        assert h.get("bad").failures == 1
        assert h.types("bad") == ["generation_started", "generation_failed"]
        # After the backoff, the next failure doubles it.
        h.service.store.update(h.get("bad").replace(backoff_until=time.time() - 1))
        h.service.issue("bad")
        again = h.get("bad")
        assert again.failures == 2
        assert again.backoff_until == pytest.approx(time.time() + 120, abs=10)
        h.close()
    finally:
        ca.stop()


def test_weekly_cap_per_registered_domain(settings, redis_client, pebble, proxy):
    h = Harness(acme_settings(settings, pebble, acme_weekly_orders=2), redis_client)
    for name in ("one", "two"):
        h.create(name, f"{name}.capped.co.uk")
        h.service.issue(name)
        assert h.get(name).status == "active"
    h.create("three", "three.capped.co.uk")
    h.service.issue("three")
    cert = h.get("three")
    assert cert.status == "failed" and cert.backoff_reason == "rate_limited"
    assert cert.backoff_until > time.time() + 6 * 86400
    assert "capped.co.uk" in cert.last_error
    assert h.types("three")[-1] == "rate_limited"
    # Another registered domain is not affected.
    h.create("other", "other.example.co.uk")
    h.service.issue("other")
    assert h.get("other").status == "active"
    # A rate-limit backoff is not lifted by asking again.
    with pytest.raises(Conflict):
        h.commands.renew(cert)
    h.close()


def test_registered_domain():
    assert registered_domain("a.b.example.com") == "example.com"
    assert registered_domain("www.example.co.uk") == "example.co.uk"
    assert registered_domain("example.com") == "example.com"


def test_ca_unreachable_keeps_the_certificate_and_backs_off(settings, redis_client, proxy,
                                                            tmp_path):
    ca = Pebble(tmp_path, http_port=proxy.port).start()  # its own CA, to stop it
    h = Harness(acme_settings(settings, ca, acme_backoff_s=600), redis_client)
    try:
        h.create("down", "down.example.com")
        h.service.issue("down")
        serving = h.get("down")
        ca.stop_ca()
        h.service.store.update(serving.replace(renew_after=time.time() - 1))
        h.service.renew("down")
        cert = h.get("down")
        assert cert.status == "active" and cert.serial == serving.serial
        assert cert.cert_pem == serving.cert_pem and cert.key_pem == serving.key_pem
        assert cert.backoff_reason == "unavailable" and cert.backoff_until > time.time() + 500
        failed = h.events("down")[-1]
        assert failed.type == "renewal_failed" and failed.data["reason"] == "unavailable"
        assert "cannot be reached" in failed.data["error"]
    finally:
        h.close()
        ca.stop()


@pytest.fixture
def closed_ca():
    """The directory URL of a CA that is not there: a loopback port held bound (so nothing
    else takes it) with nothing listening, so every connection is refused."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    yield f"https://127.0.0.1:{held.getsockname()[1]}/dir"
    held.close()


def delayed_messages(h) -> list[dict]:
    return [json.loads(m) for m in h.redis.hvals(keys.dramatiq_messages("certificates.DQ"))]


def test_ca_unreachable_during_revocation_backs_off_and_retries(harness, closed_ca, caplog):
    """Like a renewal (above): the certificate keeps serving, the attempt is recorded with
    the same backoff and logged in one line, no traceback; Dramatiq retries the message after
    that backoff, and `revocation_failed` follows when its retries are exhausted."""
    h = harness
    h.create("gone", "gone.example.com")
    h.service.issue("gone")
    # The CA it came from goes away (its issue message, done above, is dropped with the
    # queue's other messages).
    serving = h.service.store.update(h.get("gone").replace(issuer_directory=closed_ca))
    register_certificate_actors(h.broker, h.deps)
    h.broker.flush_all()
    worker = dramatiq.Worker(h.broker, worker_threads=1, worker_timeout=100)
    caplog.set_level(logging.INFO)
    worker.start()
    try:
        h.commands.revoke(serving, "keyCompromise")
        wait_until(lambda: delayed_messages(h), timeout=20)
        [retry] = delayed_messages(h)
        cert = h.get("gone")
        assert retry["actor_name"] == REVOKE_CERTIFICATE.actor_name
        assert retry["options"]["retries"] == 1
        # Retried after the certificate's backoff (60 s here), not Dramatiq's default 0.5 s.
        assert cert.backoff_until * 1000 <= retry["options"]["eta"]
        assert retry["options"]["eta"] < (cert.backoff_until + backoff_s(h.settings, 1)) * 1000
        assert cert.status == "active" and cert.serial == serving.serial
        assert cert.cert_pem == serving.cert_pem and cert.key_pem == serving.key_pem
        assert cert.failures == 1 and cert.backoff_reason == "unavailable"
        assert "cannot be reached" in cert.last_error
        assert "revoked" not in h.types("gone")

        # The last retry: Dramatiq gives up and the failure is published, on the trace.
        h.redis.delete(keys.dramatiq_messages("certificates.DQ"),
                       keys.dramatiq_queue("certificates.DQ"))
        last = dramatiq.Message(queue_name=REVOKE_CERTIFICATE.queue_name,
                                actor_name=REVOKE_CERTIFICATE.actor_name, args=(),
                                kwargs={"certificate": "gone", "reason": 1},
                                options={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                                         "max_retries": 0})
        h.broker.enqueue(last)
        wait_until(lambda: "revocation_failed" in h.types("gone"), timeout=20)
        failed = h.events("gone")[-1]
        assert failed.type == "revocation_failed" and failed.data["reason"] == "unavailable"
        assert failed.data["failures"] == 2 and "cannot be reached" in failed.data["error"]
        assert failed.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        cert = h.get("gone")
        assert cert.status == "active" and cert.serial == serving.serial
        assert cert.backoff_until > time.time() + backoff_s(h.settings, 2) - 60
        assert not delayed_messages(h)
    finally:
        worker.stop()
    attempts = [r for r in caplog.records if r.getMessage().startswith("revocation of gone:")]
    assert len(attempts) == 2 and all("\n" not in r.getMessage() for r in attempts)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage()
                                                           for r in caplog.records]
    assert "Traceback" not in caplog.text


def test_convert_to_production(settings, redis_client, pebble, proxy, tmp_path,
                               pebble_root):
    production = Pebble(tmp_path, http_port=pebble.http_port).start()
    try:
        # Each test CA has its own listener certificate: trust both.
        bundle = tmp_path / "both.pem"
        bundle.write_text(pebble.ca_bundle.read_text() + production.ca_bundle.read_text())
        h = Harness(acme_settings(settings, pebble, acme_ca_bundle=str(bundle),
                                  acme_production_url=production.directory_url), redis_client)
        h.create("conv", "conv.example.com", directory="staging")
        h.service.issue("conv")
        staging = h.get("conv")
        verify_chain(staging.cert_pem, pebble_root, "conv.example.com")
        h.service.convert_to_production("conv")
        converted = h.get("conv")
        assert converted.directory == "production" and converted.status == "active"
        assert converted.issuer_directory == production.directory_url
        verify_chain(converted.cert_pem, production.root_pem(), "conv.example.com")
        h.service.convert_to_production("conv")  # again: already from production
        assert h.get("conv").serial == converted.serial
        assert h.types("conv")[-2:] == ["renewal_started", "renewed"]
        h.close()
    finally:
        production.stop()
