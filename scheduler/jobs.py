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
from app.locks import FENCE_CHECK, Fence, LeaseLost, Unfenced
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
# leaders during a split never both announce the same threshold), or false, marking nothing,
# when the run's leadership term is over. KEYS: lease, warnings hash; ARGV: fence value,
# serial, thresholds.
_MARK_SENT = FENCE_CHECK + """
local fresh = {}
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[2] then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[2])
    table.insert(fresh, ARGV[i])
  end
end
return fresh
"""
# The queued-renewal guard, set only while the run's term lasts: 1 set, 0 already set, false
# when the term is over. KEYS: lease, guard; ARGV: fence value, actor name, ttl s.
_GUARD = FENCE_CHECK + """
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[3]) then return 1 end
return 0
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
        self._guard = client.register_script(_GUARD)

    def certificates(self) -> Iterator[Certificate]:
        offset = 0
        while True:
            page = self.store.list(offset=offset, limit=PAGE)
            yield from page
            if len(page) < PAGE:
                return
            offset += PAGE

    # Each job runs under `fence`, its leadership term (scheduler/app.py), and raises
    # LeaseLost, doing nothing more, once the term is over. Unfenced: called outside a lease.

    def renewal_scan(self, fence: Fence | None = None) -> list[str]:
        """Enqueue renew (or issue) for every certificate that needs it; returns their ids."""
        fence = fence or Unfenced()
        now = self.clock()
        stale_order_s = 2 * self.settings.acme_timeout_s + self.settings.acme_lock_ttl_s
        enqueued = []
        for cert in self.certificates():
            job = due_job(cert, now, stale_order_s)
            if job is None:
                continue
            guarded = self._guard(keys=[fence.key, keys.certificate_job_guard(cert.id)],
                                  args=[fence.value, job.actor_name, GUARD_TTL_S])
            if guarded is None:
                raise LeaseLost(f"renewal scan: the term of token {fence.token} is over")
            if not guarded:
                continue  # already queued by an earlier scan
            enqueue(self.broker, job, certificate=cert.id)
            enqueued.append(cert.id)
        if enqueued:
            log.info("renewal scan enqueued %d: %s", len(enqueued), ", ".join(enqueued[:20]))
        return enqueued

    def expiry_warnings(self, fence: Fence | None = None) -> list[tuple[str, int]]:
        """Publish expiring_soon once per threshold per certificate (per serial: a renewed
        certificate starts over). Crossing several thresholds at once sends one event, for
        the nearest. Returns (certificate, threshold) sent."""
        fence = fence or Unfenced()
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
            fresh = self._mark_sent(keys=[fence.key, keys.expiry_warnings(cert.id)],
                                    args=[fence.value, cert.serial, *crossed])
            if fresh is None:
                raise LeaseLost(f"expiry warnings: the term of token {fence.token} is over")
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

    def trim_streams(self, fence: Fence | None = None) -> None:
        (fence or Unfenced()).check()  # a Dramatiq enqueue cannot join a script: just before
        enqueue(self.broker, TRIM_STREAMS)

    def reconcile_services(self, fence: Fence | None = None) -> None:
        """The worker lists every service and container and queues one repair per service."""
        (fence or Unfenced()).check()
        enqueue(self.broker, RECONCILE_SERVICES)
