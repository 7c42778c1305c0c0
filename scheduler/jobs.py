"""What the scheduler triggers. Each job only reads the store, enqueues and publishes: the
ACME and Docker work itself happens in the workers (workers/certificates.py,
workers/reconcile.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import dramatiq
import redis

from app import redis as keys
from app.events import Publisher
from app.jobs import (
    ISSUE_CERTIFICATE,
    RECONCILE_SERVICES,
    RENEW_CERTIFICATE,
    TRIM_STREAMS,
    Job,
    enqueue,
)
from app.models import Certificate
from app.settings import Settings
from app.stores.certificates import CertificateStore

log = logging.getLogger(__name__)

SOURCE = "scheduler"
PAGE = 500
# A queued renewal is not enqueued again for this long (the actor clears the mark when done).
GUARD_TTL_S = 3600
# A pending certificate younger than this still has the API's own issue message in flight.
PENDING_GRACE_S = 60

# Marks thresholds as sent for a serial; returns those not sent before (atomic, so even two
# leaders during a split never both announce the same threshold).
_MARK_SENT = """
local fresh = {}
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
    table.insert(fresh, ARGV[i])
  end
end
return fresh
"""


def due_job(cert: Certificate, now: float, stale_order_s: float) -> Job | None:
    """The message a certificate needs now, if any. Never during a backoff."""
    if cert.status == "revoked" or cert.backoff_until > now:
        return None
    if cert.order_url:  # an order whose worker died and whose message was lost: resume it
        return ISSUE_CERTIFICATE if cert.updated_at < now - stale_order_s else None
    if cert.status == "active" and cert.cert_pem:
        ari_due = cert.renewal_source == "ari" and 0 < cert.ari_retry_at <= now
        return RENEW_CERTIFICATE if cert.renew_after <= now or ari_due else None
    if cert.status == "pending" and cert.created_at > now - PENDING_GRACE_S:
        return None
    return ISSUE_CERTIFICATE  # pending for long, or failed and out of its backoff


class SchedulerJobs:
    def __init__(self, settings: Settings, client: redis.Redis, broker: dramatiq.Broker,
                 publisher: Publisher, clock: Callable[[], float]):
        self.settings = settings
        self.redis = client
        self.broker = broker
        self.publisher = publisher
        self.clock = clock
        self.store = CertificateStore(client)
        self._mark_sent = client.register_script(_MARK_SENT)

    def certificates(self) -> Iterator[Certificate]:
        offset = 0
        while True:
            page = self.store.list(offset=offset, limit=PAGE)
            yield from page
            if len(page) < PAGE:
                return
            offset += PAGE

    def renewal_scan(self) -> list[str]:
        """Enqueue renew (or issue) for every certificate that needs it; returns their ids."""
        now = self.clock()
        stale_order_s = 2 * self.settings.acme_timeout_s + self.settings.acme_lock_ttl_s
        enqueued = []
        for cert in self.certificates():
            job = due_job(cert, now, stale_order_s)
            if job is None:
                continue
            if not self.redis.set(keys.certificate_job_guard(cert.id), job.actor_name,
                                  nx=True, ex=GUARD_TTL_S):
                continue  # already queued by an earlier scan
            enqueue(self.broker, job, certificate=cert.id)
            enqueued.append(cert.id)
        if enqueued:
            log.info("renewal scan enqueued %d: %s", len(enqueued), ", ".join(enqueued[:20]))
        return enqueued

    def expiry_warnings(self) -> list[tuple[str, int]]:
        """Publish expiring_soon once per threshold per certificate (per serial: a renewed
        certificate starts over). Crossing several thresholds at once sends one event, for
        the nearest. Returns (certificate, threshold) sent."""
        now = self.clock()
        thresholds = self.settings.expiry_warn_days
        sent = []
        for cert in self.certificates():
            if cert.status != "active" or not cert.not_after:
                continue
            days_left = (cert.not_after - now) / 86400
            crossed = [t for t in thresholds if days_left <= t]
            if not crossed:
                continue
            fresh = self._mark_sent(keys=[keys.expiry_warnings(cert.id)],
                                    args=[cert.serial, *crossed])
            if not fresh:
                continue
            threshold = min(int(t) for t in fresh)
            self.publisher.emit("certificate", "expiring_soon", SOURCE, cert.id,
                                {"threshold_days": threshold,
                                 "days_left": round(days_left, 2),
                                 "not_after": cert.not_after, "serial": cert.serial,
                                 "domains": list(cert.domains),
                                 "renew_after": cert.renew_after,
                                 "last_error": cert.last_error})
            sent.append((cert.id, threshold))
        return sent

    def trim_streams(self) -> None:
        enqueue(self.broker, TRIM_STREAMS)

    def reconcile_services(self) -> None:
        """The worker lists every service and container and queues one repair per service."""
        enqueue(self.broker, RECONCILE_SERVICES)
