"""Alert webhooks: POST an alert event to a receiver, signed, retried by Dramatiq.

The consumer enqueues one `deliver_webhook` per alert_fired / alert_resolved and URL, with the
exact JSON body to send. Headers:

    Content-Type: application/json
    X-Berth-Event: alert_fired | alert_resolved
    X-Berth-Delivery: <the alert event's id>   the same on every retry; dedupe on it
    X-Berth-Signature: sha256=<hex HMAC-SHA256 of the raw body, key BERTH_ALERT_WEBHOOK_SECRET>

Anything but a 2xx answer (redirects are not followed) is a failed attempt: it is counted
(WEBHOOK_FAILURES), published as `webhook_failed` on the alert stream, and retried with
exponential backoff. When the retries are exhausted Dramatiq calls
`webhook_delivery_exhausted`, which publishes `webhook_abandoned` and counts it. A webhook URL
may carry a secret in its path or query, so events and logs only ever show scheme://host:port.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from urllib.parse import urlsplit

import dramatiq
import requests

from app import redis as keys
from app.errors import Unavailable
from app.jobs import DELIVER_WEBHOOK, WEBHOOK_EXHAUSTED
from workers.deps import WorkerDeps

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Berth-Signature"
SOURCE = "worker"
MAX_BACKOFF_MS = 15 * 60 * 1000


class WebhookFailed(Unavailable):
    title = "Webhook delivery failed"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: what may be shown of it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def deliver_webhook(deps: WorkerDeps, session: requests.Session, url: str, body: str,
                    delivery: str, event_type: str) -> None:
    """One attempt; raises WebhookFailed for Dramatiq to retry."""
    raw = body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": "berth-webhook",
               "X-Berth-Event": event_type, "X-Berth-Delivery": delivery}
    if deps.settings.alert_webhook_secret:
        headers[SIGNATURE_HEADER] = sign(deps.settings.alert_webhook_secret, raw)
    try:
        response = session.post(url, data=raw, headers=headers, allow_redirects=False,
                                timeout=deps.settings.alert_webhook_timeout_s)
        response.close()
    except requests.RequestException as ex:
        error = type(ex).__name__
        _failed(deps, url, delivery, event_type, error)
        raise WebhookFailed(f"webhook {origin(url)}: {error}") from None
    if not 200 <= response.status_code < 300:
        _failed(deps, url, delivery, event_type, f"HTTP {response.status_code}")
        raise WebhookFailed(f"webhook {origin(url)} answered {response.status_code}")
    deps.publisher.emit("alert", "webhook_delivered", SOURCE, delivery,
                        {"url": origin(url), "event_type": event_type,
                         "status": response.status_code})


def _failed(deps: WorkerDeps, url: str, delivery: str, event_type: str, error: str) -> None:
    log.warning("webhook delivery %s to %s failed: %s", delivery, origin(url), error)
    deps.redis.incr(keys.WEBHOOK_FAILURES)
    deps.publisher.emit("alert", "webhook_failed", SOURCE, delivery,
                        {"url": origin(url), "event_type": event_type, "error": error})


def webhook_exhausted(deps: WorkerDeps, message: dict, retries: dict) -> None:
    """Dramatiq's on_retry_exhausted callback of deliver_webhook."""
    kwargs = message.get("kwargs") or {}
    url, delivery = kwargs.get("url", ""), kwargs.get("delivery", "")
    log.error("webhook delivery %s to %s abandoned after %s retries", delivery, origin(url),
              retries.get("retries"))
    deps.redis.incr(keys.WEBHOOKS_ABANDONED)
    # On the trace of the failed delivery (this callback is a message of its own).
    trace_id = (message.get("options") or {}).get("trace_id")
    deps.publisher.emit("alert", "webhook_abandoned", SOURCE, delivery,
                        {"url": origin(url), "event_type": kwargs.get("event_type", ""),
                         "retries": retries.get("retries")}, trace_id=trace_id)


def register(broker: dramatiq.Broker, deps: WorkerDeps) -> None:
    session = requests.Session()
    settings = deps.settings

    def deliver(url: str, body: str, delivery: str, event_type: str) -> None:
        deliver_webhook(deps, session, url, body, delivery, event_type)

    def exhausted(message: dict, retries: dict) -> None:
        webhook_exhausted(deps, message, retries)

    dramatiq.actor(deliver, broker=broker, actor_name=DELIVER_WEBHOOK.actor_name,
                   queue_name=DELIVER_WEBHOOK.queue_name,
                   max_retries=settings.alert_webhook_retries,
                   min_backoff=settings.alert_webhook_backoff_ms, max_backoff=MAX_BACKOFF_MS,
                   on_retry_exhausted=WEBHOOK_EXHAUSTED.actor_name)
    dramatiq.actor(exhausted, broker=broker, actor_name=WEBHOOK_EXHAUSTED.actor_name,
                   queue_name=WEBHOOK_EXHAUSTED.queue_name, max_retries=3)
