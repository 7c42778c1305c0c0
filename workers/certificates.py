"""Certificate actors: issue, renew, revoke, delete, convert_to_production.

Every operation runs under the certificate's Redis lock and is idempotent, so a message that is
redelivered (a worker SIGKILLed half-way, a retry, a duplicate from the scheduler) converges:

- An ACME order is recorded in the certificate (URL and key, sealed) before any challenge is
  answered; a later run resumes that order instead of placing another.
- No order is placed while the stored certificate is valid, covers the names, comes from the
  wanted directory and is not due (`renew_after` in the future), nor during a backoff.
- Failures are recorded, not retried by Dramatiq: `backoff_until` (doubling with each failure
  in a row, or the CA's Retry-After for rateLimited) keeps restarts, retries and the scheduler
  from hammering the CA. Lock contention and Redis errors do raise, for Dramatiq to retry.
- The certificate being renewed keeps serving until the new one is stored.
- The event that reports a stored outcome (ready, renewed, generation_failed, renewal_failed,
  rate_limited, revoked, deleted) is written in the same MULTI/EXEC as the record change: a
  redelivered message finds the outcome stored and stops, so an event written apart from the
  change would be lost if the worker died between the two.

Lifecycle events (domain "certificate", subject the certificate's name, on the trace id of the
message): generation_started, ready, generation_failed (first certificate);
renewal_started, renewed, renewal_failed (replacing a serving one); rate_limited; revoked,
revocation_failed (the CA stayed unreachable through every retry); deleted.

An unreachable CA during revocation backs off like a failed order (`backoff_s`, recorded on
the certificate, one log line) and the revoke message is retried by Dramatiq after that delay;
when its retries are exhausted, `revocation_failed` is published.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import dramatiq
import redis

from app import redis as keys
from app.certificates import key_purpose
from app.crypto import SecretBox
from app.errors import AcmeError, ChallengeFailed, Conflict, RateLimited, Unavailable
from app.events import Event
from app.jobs import (
    CONVERT_CERTIFICATE_TO_PRODUCTION,
    DELETE_CERTIFICATE,
    ISSUE_CERTIFICATE,
    RENEW_CERTIFICATE,
    REVOCATION_EXHAUSTED,
    REVOKE_CERTIFICATE,
)
from app.locks import KeptLock, LockBusy
from app.models import Certificate
from app.settings import Settings
from app.stores.base import Extra
from app.stores.certificates import CertificateStore
from app.stores.challenges import ChallengeStore
from app.tracing import trace_context
from workers.acme_client import (
    AcmeAccounts,
    AcmeClient,
    Issued,
    RenewalWindow,
    describe,
    generate_key_pem,
)
from workers.acme_limits import WeeklyOrderCap
from workers.deps import WorkerDeps

log = logging.getLogger(__name__)

SOURCE = "worker"
DOMAIN = "certificate"
LOCK_WAIT_S = 5.0
EVENT_FLUSH_S = 2.0
RATE_LIMIT_MIN_BACKOFF_S = 3600  # when the CA gives no Retry-After


def directory_url(settings: Settings, directory: str) -> str:
    """The URL meant by a certificate's directory: production, staging, or itself."""
    return {"production": settings.acme_production_url,
            "staging": settings.acme_staging_url}.get(directory, directory)


def lifetime_renewal(not_before: float, not_after: float) -> float:
    """When a third of the lifetime remains (the policy without renewal information)."""
    return not_after - (not_after - not_before) / 3


def renewal_plan(not_before: float, not_after: float,
                 window: RenewalWindow | None) -> tuple[float, str]:
    """(renew_after, source): inside the CA's suggested window when it offers renewal
    information (RFC 9773), else when a third of the lifetime remains."""
    if window is not None and window.renew_at is not None:
        return window.renew_at, "ari"
    return lifetime_renewal(not_before, not_after), "lifetime"


def backoff_s(settings: Settings, failures: int) -> float:
    """Wait after the `failures`-th failure in a row: base, doubling, capped."""
    return min(settings.acme_backoff_max_s, settings.acme_backoff_s * 2 ** max(0, failures - 1))


@dataclass
class CertificateService:
    """The operations behind the actors; runs without Dramatiq in tests."""

    settings: Settings
    store: CertificateStore
    challenges: ChallengeStore
    accounts: AcmeAccounts
    box: SecretBox
    publisher: object  # app.events.Publisher
    cap: WeeklyOrderCap
    clock: Callable[[], float] = time.time

    @classmethod
    def create(cls, deps: WorkerDeps) -> CertificateService:
        settings = deps.settings
        box = SecretBox.from_settings(settings)
        return cls(settings=settings, store=CertificateStore(deps.redis),
                   challenges=ChallengeStore(deps.redis),
                   accounts=AcmeAccounts(deps.redis, box, ca_bundle=settings.acme_ca_bundle,
                                         timeout_s=min(30, settings.acme_timeout_s)),
                   box=box, publisher=deps.publisher,
                   cap=WeeklyOrderCap(deps.redis, settings.acme_weekly_orders))

    # -- the actors' entry points ----------------------------------------------------------

    def issue(self, certificate_id: str) -> None:
        try:
            with self._locked(certificate_id):
                cert = self.store.find(certificate_id)
                if cert is None:
                    log.info("certificate %s is gone; nothing to issue", certificate_id)
                    return
                self._obtain(cert)
        finally:
            self._clear_guard(certificate_id)

    def renew(self, certificate_id: str) -> None:
        try:
            with self._locked(certificate_id):
                cert = self.store.find(certificate_id)
                if cert is None or cert.status == "revoked":
                    return
                if not cert.order_url and cert.status == "active":
                    cert = self._refresh_renewal_info(cert)
                self._obtain(cert)
        finally:
            self._clear_guard(certificate_id)

    def convert_to_production(self, certificate_id: str) -> None:
        with self._locked(certificate_id):
            cert = self.store.find(certificate_id)
            if cert is None or cert.status == "revoked":
                return
            if cert.directory != "production":
                cert = self._save(cert.id, directory="production")
            self._obtain(cert)  # the staging certificate serves until this one is stored

    def revoke(self, certificate_id: str, reason: int = 0) -> None:
        with self._locked(certificate_id):
            cert = self.store.find(certificate_id)
            if cert is None or cert.status == "revoked":
                return
            if cert.cert_pem:
                try:
                    acme = self._client(cert.issuer_directory or cert.directory)
                    acme.revoke(cert.cert_pem, reason)
                except (AcmeError, Unavailable) as ex:
                    if _unreachable(ex):
                        self._revocation_deferred(cert, ex)  # raises Retry
                    # refused: say so, retrying will not help
                    self._save(cert.id, last_error=ex.description, last_error_at=self.clock())
                    log.warning("revocation of %s refused: %s", cert.id, ex.description)
                    return
            self._save(cert.id, status="revoked", revoked_at=self.clock(), key_pem="",
                       renew_after=0.0, failures=0, backoff_until=0.0, backoff_reason="",
                       **_NO_ORDER,
                       extra=self._emit_on_commit(
                           "revoked", lambda c: {"reason": reason, "serial": c.serial}))

    def revocation_exhausted(self, certificate_id: str, retries: int) -> None:
        """The revoke message ran out of retries: record it with `revocation_failed`."""
        with self._locked(certificate_id):
            cert = self.store.find(certificate_id)
            if cert is None or cert.status == "revoked":
                return
            self._save(cert.id, extra=self._emit_on_commit("revocation_failed", lambda c: {
                "error": c.last_error, "reason": c.backoff_reason or "unavailable",
                "failures": c.failures, "retries": retries, "backoff_until": c.backoff_until}))
            log.error("revocation of %s abandoned after %d retries: %s", cert.id, retries,
                      cert.last_error)

    def delete(self, certificate_id: str) -> None:
        with self._locked(certificate_id):
            cert = self.store.find(certificate_id)
            if cert is None:
                return
            emit = self._emit_on_commit("deleted", lambda c: {"serial": c.serial})

            def extra(pipe, removed: Certificate) -> None:
                pipe.delete(keys.expiry_warnings(removed.id),
                            keys.certificate_job_guard(removed.id))
                emit(pipe, removed)

            self.store.delete(cert.id, extra=extra)

    # -- obtaining a certificate -----------------------------------------------------------

    def _obtain(self, cert: Certificate) -> None:
        """Resume the recorded order, or place one if needed and allowed, then store the
        result. Failures are recorded on the certificate and published, not raised."""
        now = self.clock()
        renewing = (cert.order_purpose == "renew" if cert.order_url
                    else bool(cert.cert_pem) and cert.status == "active")
        if cert.backoff_until > now:  # also for a kept order: the CA was unreachable
            log.info("certificate %s is in backoff until %s (%s); not contacting the CA",
                     cert.id, time.strftime("%FT%TZ", time.gmtime(cert.backoff_until)),
                     cert.backoff_reason)
            return
        reason = ""
        if not cert.order_url:
            reason = self._why_order(cert, now)
            if reason is None:
                log.info("certificate %s is valid and not due; no order", cert.id)
                return
        try:
            if not cert.order_url:
                cert = self._place_order(cert, renewing, reason)
            acme = self._client(cert.order_directory)
            key_pem = self.box.open(cert.order_key_pem, key_purpose(cert.id))
            issued = acme.complete_order(cert.order_url, key_pem, self.challenges,
                                         self.clock() + self.settings.acme_timeout_s)
            self._store_issued(cert, acme, issued)
        except RateLimited as ex:
            self._rate_limited(cert, ex)
        except (AcmeError, Unavailable) as ex:
            self._failed(cert, ex, renewing)

    def _why_order(self, cert: Certificate, now: float) -> str | None:
        """Why a new order is needed, or None when the stored certificate will do."""
        if not cert.cert_pem or cert.status != "active" or cert.not_after <= now:
            return "new"
        if not set(cert.domains) <= set(_names_of(cert)):
            return "names_changed"
        if cert.issuer_directory != directory_url(self.settings, cert.directory):
            return "directory_changed"
        if cert.renew_after <= now:
            return "due"
        return None

    def _place_order(self, cert: Certificate, renewing: bool, reason: str) -> Certificate:
        url = directory_url(self.settings, cert.directory)
        reservation = self.cap.reserve(cert.domains, self.clock())
        try:
            acme = self._client(url)
            self._emit("renewal_started" if renewing else "generation_started", cert,
                       {"domains": list(cert.domains), "directory": cert.directory,
                        "reason": reason})
            key_pem = generate_key_pem(cert.key_type)
            order_url = acme.place_order(cert.domains)
        except Exception:
            self.cap.release(cert.domains, reservation)
            raise
        # Recorded before any challenge is answered: a redelivered message resumes it.
        return self._save(cert.id, order_url=order_url, order_directory=url,
                          order_key_pem=self.box.seal(key_pem, key_purpose(cert.id)),
                          order_purpose="renew" if renewing else "issue",
                          status=cert.status if renewing else "issuing")

    def _store_issued(self, cert: Certificate, acme: AcmeClient, issued: Issued) -> None:
        window = acme.renewal_window(issued.cert_pem) if acme.supports_renewal_info else None
        renew_after, source = renewal_plan(issued.not_before, issued.not_after, window)
        renewed = cert.order_purpose == "renew"
        self._save(
            cert.id, status="active", cert_pem=issued.cert_pem, key_pem=cert.order_key_pem,
            not_before=issued.not_before, not_after=issued.not_after, serial=issued.serial,
            issued_at=self.clock(), renew_after=renew_after, renewal_source=source,
            ari_retry_at=window.retry_at if window is not None else 0.0,
            failures=0, backoff_until=0.0, backoff_reason="", last_error="",
            issuer_directory=cert.order_directory, **_NO_ORDER,
            extra=self._emit_on_commit(
                "renewed" if renewed else "ready",
                lambda saved: {"domains": list(saved.domains), "serial": saved.serial,
                               "not_after": saved.not_after, "renew_after": saved.renew_after,
                               "renewal_source": source, "directory": saved.directory}))

    def _rate_limited(self, cert: Certificate, ex: RateLimited) -> None:
        now = self.clock()
        failures = cert.failures + 1
        until = ex.retry_after or now + max(RATE_LIMIT_MIN_BACKOFF_S,
                                            backoff_s(self.settings, failures))
        self._save(cert.id, failures=failures, backoff_until=until,
                   backoff_reason="rate_limited", last_error=ex.description,
                   last_error_at=now, **_NO_ORDER, status=self._status_after_failure(cert),
                   extra=self._emit_on_commit("rate_limited", lambda _: {
                       "error": ex.description, "code": ex.code, "backoff_until": until}))
        log.warning("certificate %s rate-limited until %s: %s", cert.id,
                    time.strftime("%FT%TZ", time.gmtime(until)), ex.description)

    def _failed(self, cert: Certificate, ex: AcmeError | Unavailable, renewing: bool) -> None:
        now = self.clock()
        failures = cert.failures + 1
        until = now + backoff_s(self.settings, failures)
        unreachable = _unreachable(ex)
        reason = ("unavailable" if unreachable else
                  "validation" if isinstance(ex, ChallengeFailed) else "error")
        # An unreachable CA may still complete the order later: keep it to resume then.
        changes = {} if unreachable else dict(_NO_ORDER)
        if not unreachable:
            changes["status"] = self._status_after_failure(cert)
        self._save(cert.id, failures=failures, backoff_until=until, backoff_reason=reason,
                   last_error=ex.description, last_error_at=now, **changes,
                   extra=self._emit_on_commit(
                       "renewal_failed" if renewing else "generation_failed", lambda _: {
                           "error": ex.description, "reason": reason,
                           "code": getattr(ex, "code", ""), "failures": failures,
                           "backoff_until": until}))
        log.warning("certificate %s: %s (attempt %d; next not before %s)", cert.id,
                    ex.description, failures, time.strftime("%FT%TZ", time.gmtime(until)))

    def _revocation_deferred(self, cert: Certificate, ex: AcmeError | Unavailable) -> None:
        """The CA cannot be reached: back off as a failed order does, and have Dramatiq
        retry the message after that long (dramatiq.Retry: no traceback in the log)."""
        now = self.clock()
        failures = cert.failures + 1
        delay_s = backoff_s(self.settings, failures)
        until = now + delay_s
        self._save(cert.id, failures=failures, backoff_until=until,
                   backoff_reason="unavailable", last_error=ex.description, last_error_at=now)
        log.warning("revocation of %s: %s (attempt %d; retrying at %s)", cert.id,
                    ex.description, failures, time.strftime("%FT%TZ", time.gmtime(until)))
        raise dramatiq.Retry(f"the CA is unreachable; revocation of {cert.id} retried later",
                             delay=int(delay_s * 1000))

    def _refresh_renewal_info(self, cert: Certificate) -> Certificate:
        """Ask the CA's renewal information again when it is time to (ARI directories)."""
        if cert.renewal_source != "ari" or cert.ari_retry_at > self.clock():
            return cert
        try:
            window = self._client(cert.issuer_directory).renewal_window(cert.cert_pem)
        except (AcmeError, Unavailable) as ex:
            log.warning("renewal information for %s unavailable: %s", cert.id, ex)
            return cert
        if window.renew_at is None:
            return self._save(cert.id, ari_retry_at=window.retry_at)
        return self._save(cert.id, renew_after=window.renew_at, ari_retry_at=window.retry_at)

    # -- plumbing --------------------------------------------------------------------------

    def _clear_guard(self, certificate_id: str) -> None:
        """Let the scheduler enqueue this certificate again (see scheduler/jobs.py)."""
        try:
            self.store.client.delete(keys.certificate_job_guard(certificate_id))
        except redis.RedisError as ex:  # it expires by itself
            log.warning("could not clear the queued mark of %s: %s", certificate_id, ex)

    def _client(self, url: str) -> AcmeClient:
        return self.accounts.client(directory_url(self.settings, url), self.settings.acme_email)

    def _locked(self, certificate_id: str) -> KeptLock:
        return _Held(self.store.client, keys.certificate_lock(certificate_id),
                     ttl_s=self.settings.acme_lock_ttl_s, wait_s=LOCK_WAIT_S)

    def _save(self, certificate_id: str, *, extra: Extra | None = None,
              **changes) -> Certificate:
        """Apply field changes to the current record (re-read on a concurrent update); `extra`
        adds commands to the update's transaction (see app/stores/base.py)."""
        for _ in range(5):
            current = self.store.get(certificate_id)
            try:
                return self.store.update(current.replace(**changes), extra=extra)
            except Conflict:
                continue
        raise Conflict(f"certificate {certificate_id!r} keeps changing; try again")

    def _status_after_failure(self, cert: Certificate) -> str:
        """A serving certificate stays active (it keeps serving); else the attempt failed."""
        return "active" if cert.cert_pem and cert.not_after > self.clock() else "failed"

    def _emit(self, event_type: str, cert: Certificate, data: dict) -> None:
        """Publish and wait for the write: a lifecycle event must not sit in the buffer of a
        worker that may be killed before the next flush (a few ms, once per step). For an
        event reporting a record change, `_emit_on_commit` instead."""
        self.publisher.emit(DOMAIN, event_type, SOURCE, cert.id, data)
        self.publisher.flush(timeout=EVENT_FLUSH_S)

    def _emit_on_commit(self, event_type: str, data: Callable[[Certificate], dict]) -> Extra:
        """A store write's `extra` that adds the event reporting the change to the write's own
        transaction, its data taken from the record as written: the event is stored exactly
        when the change is, on the message's trace id. Events published before it were
        flushed already (`_emit`), so the stream keeps their order."""
        def stage(pipe, cert: Certificate) -> None:
            self.publisher.stage(pipe, DOMAIN,
                                 Event.create(event_type, SOURCE, cert.id, data(cert)))
        return stage


_NO_ORDER = {"order_url": "", "order_key_pem": "", "order_purpose": "", "order_directory": ""}


def _unreachable(ex: AcmeError | Unavailable) -> bool:
    """The CA could not be reached or did not answer in time (retrying may help)."""
    return isinstance(ex, Unavailable) or getattr(ex, "code", "") == "timeout"


def _names_of(cert: Certificate) -> tuple[str, ...]:
    """The names in the stored certificate itself (its SANs)."""
    return describe(cert.cert_pem).domains


class _Held(KeptLock):
    """The certificate lock; contention becomes Conflict so Dramatiq retries the message."""

    def __enter__(self):
        try:
            return super().__enter__()
        except LockBusy:
            raise Conflict(f"another operation holds {self.name}; retrying later") from None


def register(broker: dramatiq.Broker, deps: WorkerDeps) -> CertificateService:
    service = CertificateService.create(deps)

    def actor(job, fn, **options):
        dramatiq.actor(fn, broker=broker, actor_name=job.actor_name, queue_name=job.queue_name,
                       **options)

    def revocation_exhausted(message: dict, retries: dict) -> None:
        # A message of its own: on the trace of the revoke command.
        with trace_context((message.get("options") or {}).get("trace_id")):
            service.revocation_exhausted((message.get("kwargs") or {}).get("certificate", ""),
                                         retries.get("retries", 0))

    actor(ISSUE_CERTIFICATE, lambda certificate: service.issue(certificate))
    actor(RENEW_CERTIFICATE, lambda certificate: service.renew(certificate))
    actor(REVOKE_CERTIFICATE, lambda certificate, reason=0: service.revoke(certificate, reason),
          on_retry_exhausted=REVOCATION_EXHAUSTED.actor_name)
    actor(REVOCATION_EXHAUSTED, revocation_exhausted, max_retries=3)
    actor(DELETE_CERTIFICATE, lambda certificate: service.delete(certificate))
    actor(CONVERT_CERTIFICATE_TO_PRODUCTION,
          lambda certificate: service.convert_to_production(certificate))
    return service

