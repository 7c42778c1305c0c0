"""Names of the background jobs the API and scheduler enqueue, and the one way to enqueue them.

The API and scheduler only need an actor's name and queue to send it a message, so they never
import the workers package; `workers/` registers actors under these same names.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq

from app.tracing import get_trace_id


@dataclass(frozen=True)
class Job:
    actor_name: str
    queue_name: str


TRIM_STREAMS = Job("trim_streams", "maintenance")

# Certificate operations (workers/certificates.py); kwargs: certificate (its id), and for
# revoke `reason` (RFC 5280 code). Each is idempotent and safe to redeliver.
ISSUE_CERTIFICATE = Job("issue_certificate", "certificates")
RENEW_CERTIFICATE = Job("renew_certificate", "certificates")
REVOKE_CERTIFICATE = Job("revoke_certificate", "certificates")
DELETE_CERTIFICATE = Job("delete_certificate", "certificates")
CONVERT_CERTIFICATE_TO_PRODUCTION = Job("convert_certificate_to_production", "certificates")
# Dramatiq's on_retry_exhausted callback of revoke (retried while the CA is unreachable): it
# records the final failure.
REVOCATION_EXHAUSTED = Job("revocation_exhausted", "certificates")
CERTIFICATE_JOBS = (ISSUE_CERTIFICATE, RENEW_CERTIFICATE, REVOKE_CERTIFICATE,
                    DELETE_CERTIFICATE, CONVERT_CERTIFICATE_TO_PRODUCTION, REVOCATION_EXHAUSTED)

# Service commands (workers/services.py); kwargs: service (its name). The API writes the
# desired state to the record first; each actor converges the engine to it, idempotently.
CREATE_SERVICE = Job("create_service", "services")
START_SERVICE = Job("start_service", "services")
STOP_SERVICE = Job("stop_service", "services")
RESTART_SERVICE = Job("restart_service", "services")
REDEPLOY_SERVICE = Job("redeploy_service", "services")
SCALE_SERVICE = Job("scale_service", "services")
DELETE_SERVICE = Job("delete_service", "services")
# Reconciliation (workers/reconcile.py): every service (the scheduler, every
# BERTH_RECONCILE_INTERVAL_S and at start-up), or one (kwargs: service; the engine watcher).
RECONCILE_SERVICES = Job("reconcile_services", "services")
RECONCILE_SERVICE = Job("reconcile_service", "services")
SERVICE_JOBS = (CREATE_SERVICE, START_SERVICE, STOP_SERVICE, RESTART_SERVICE,
                REDEPLOY_SERVICE, SCALE_SERVICE, DELETE_SERVICE, RECONCILE_SERVICES,
                RECONCILE_SERVICE)

# Alert webhooks (workers/alerts.py), enqueued by the consumer; kwargs: url, body (the exact
# JSON that is signed and sent), delivery (the alert event's id), event_type. The second job
# is Dramatiq's on_retry_exhausted callback of the first: it records the final failure.
DELIVER_WEBHOOK = Job("deliver_webhook", "alerts")
WEBHOOK_EXHAUSTED = Job("webhook_delivery_exhausted", "alerts")
ALERT_JOBS = (DELIVER_WEBHOOK, WEBHOOK_EXHAUSTED)

# Every job above; the status endpoint reports the depth of each one's queue. Add new jobs here.
ALL_JOBS: tuple[Job, ...] = (TRIM_STREAMS, *CERTIFICATE_JOBS, *SERVICE_JOBS, *ALERT_JOBS)


def message(job: Job, *, message_id: str | None = None, **kwargs) -> dramatiq.Message:
    """The message of `job` with keyword arguments, carrying the current trace id."""
    extra = {"message_id": message_id} if message_id else {}
    return dramatiq.Message(queue_name=job.queue_name, actor_name=job.actor_name, args=(),
                            kwargs=kwargs, options={"trace_id": get_trace_id()}, **extra)


def enqueue(broker: dramatiq.Broker, job: Job, **kwargs) -> dramatiq.Message:
    """Send `job` with keyword arguments, carrying the current trace id."""
    return broker.enqueue(message(job, **kwargs))
