"""The Reader handlers of the consumer: each records a batch's effects on the Reader's Effects,
which the Reader applies with the batch's XACKs in one script (app/events.py).

- requests (`events:request:stream`): metrics aggregates, see app/metrics/aggregate.py, per
  router named by its route's host pattern (workers/consumers/routes.py);
- lifecycle streams (certificate, service, route, system): event counters, and the alert
  signals of certificate and service events;
- alerts (`events:alert:stream`, its own group): one webhook delivery per alert_fired /
  alert_resolved and configured URL, for the `deliver_webhook` actor. The delivery's message
  is staged on the Effects (workers/broker.py stage_message), so it enters the queue in the
  script that acknowledges the alert entry, only if this consumer still owns it: a consumer
  frozen mid-batch and taken over sends nothing of that batch, and each alert transition is
  queued once per URL. Its delivery id is the alert entry's id, written by the script that
  made the transition (app/alerts/state.py): one transition, one id, sent as X-Berth-Delivery
  so a receiver can still drop the rare second attempt (a worker that died mid-POST).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import redis
from dramatiq.brokers.redis import RedisBroker

from app import jobs
from app.alerts.rules import RuleSet
from app.alerts.state import open_states, queue_signal
from app.events import Event, Handler
from app.metrics.aggregate import RouterOf, aggregate, apply, count_events
from app.tracing import trace_context
from workers.broker import stage_message
from workers.consumers.alerts import lifecycle_signals

WEBHOOK_EVENTS = frozenset({"alert_fired", "alert_resolved"})


def request_handler(router_of: RouterOf | None = None,
                    clock: Callable[[], float] = time.time) -> Handler:
    def handle(events: list[Event], pipe) -> None:
        delta = aggregate(events, now_s=clock(), router_of=router_of)
        count_events(events, "request", delta)
        apply(delta, pipe)
    return handle


def lifecycle_handler(domain: str, client: redis.Redis, rules: Callable[[], RuleSet],
                      clock: Callable[[], float] = time.time) -> Handler:
    def handle(events: list[Event], pipe) -> None:
        apply(count_events(events, domain), pipe)
        signals = lifecycle_signals(domain, events, rules(), lambda: open_states(client))
        now = int(clock() * 1000)
        for signal in signals:
            queue_signal(pipe, signal, now)
    return handle


def webhook_body(event: Event) -> str:
    """What a receiver gets: the alert event, as JSON (signed as these exact bytes)."""
    return json.dumps({"id": event.id, "type": event.type, "ts_ms": event.ts_ms,
                       "trace_id": event.trace_id, "alert": event.data},
                      separators=(",", ":"), sort_keys=True)


def delivery_message_id(delivery: str, url: str) -> str:
    """The Dramatiq message id of one delivery to one URL: derived from both, so the logs of
    every attempt of it name the same message."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"berth-webhook:{delivery}:{url}"))


def webhook_handler(broker: RedisBroker, rules: Callable[[], RuleSet]) -> Handler:
    def handle(events: list[Event], pipe) -> None:
        urls = rules().webhooks
        for event in events:
            if event.type not in WEBHOOK_EVENTS:
                continue
            body = webhook_body(event)
            with trace_context(event.trace_id or None):
                for url in urls:
                    stage_message(pipe, broker, jobs.message(
                        jobs.DELIVER_WEBHOOK, message_id=delivery_message_id(event.id, url),
                        url=url, body=body, delivery=event.id, event_type=event.type))
    return handle
