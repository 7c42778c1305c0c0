"""Alert evaluation: which rule holds for which subject.

Two sources of signals (see app/alerts/state.py for what a signal does):
- lifecycle events (certificate, service), turned into signals inside the Reader's
  transaction, so an event's effect on an alert and its XACK land together;
- a periodic pass (`Evaluator.evaluate`) over the request metrics (error rate and p99 per
  host), consumer-group lag and the publishers' drop counter. It also re-sends the pending
  signals of event rules, so one that arrived during its cooldown fires when the cooldown ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import redis

from app import redis as keys
from app.alerts.rules import RuleSet, RuleStore
from app.alerts.state import OpenState, Signal, apply_signals, open_states
from app.events import Event, consumer_lag
from app.metrics.aggregate import ROUTER
from app.metrics.histogram import quantiles
from app.metrics.query import WINDOWS, MetricsQuery

EVENT_RULES = ("certificate_expiring", "certificate_renewal_failed", "service_failed")

# rate_limited too: the CA refused the order, and no attempt follows before its Retry-After.
CERTIFICATE_FAILED = frozenset({"renewal_failed", "generation_failed", "rate_limited"})
CERTIFICATE_FINE = frozenset({"ready", "renewed", "revoked", "deleted"})
SERVICE_FAILED = frozenset({"service_failed", "service_unhealthy"})
SERVICE_FINE = frozenset({"service_started", "service_redeployed", "service_stopped",
                          "service_deleted"})


# -- lifecycle events ----------------------------------------------------------------------------


def expiring_subject(certificate: str, threshold_days: int) -> str:
    """certificate_expiring fires once per threshold crossed: one subject per threshold."""
    return f"{certificate}@{threshold_days}d"


def _certificate_signals(event: Event, rules: RuleSet, opened: list[OpenState]) -> list[Signal]:
    name, data = event.subject, event.data
    signals = []
    expiring = rules.enabled("certificate_expiring")
    if expiring and event.type == "expiring_soon":
        threshold = int(data.get("threshold_days", data.get("threshold", 0)) or 0)
        days_left = float(data.get("days_left", data.get("days", threshold)) or 0)
        subject = expiring_subject(name, threshold)
        critical = threshold <= expiring["critical_days"]
        signals.append(Signal(
            expiring, subject, True, trace_id=event.trace_id,
            severity="critical" if critical else "",
            message=f"certificate {name} expires in {days_left:.1f} days "
                    f"(threshold {threshold} days)",
            details={"certificate": name, "days_left": days_left, "threshold_days": threshold}))
        # The nearest threshold supersedes the earlier ones: one active alert per certificate.
        signals += [Signal(expiring, s.subject, False, trace_id=event.trace_id)
                    for s in opened if s.rule == expiring.id and s.subject != subject
                    and s.subject.startswith(f"{name}@")]
    if expiring and event.type in CERTIFICATE_FINE:
        signals += [Signal(expiring, s.subject, False, trace_id=event.trace_id)
                    for s in opened if s.rule == expiring.id and s.subject.startswith(f"{name}@")]
    failed = rules.enabled("certificate_renewal_failed")
    if failed and event.type in CERTIFICATE_FAILED:
        error = data.get("error") or data.get("last_error") or ""
        signals.append(Signal(
            failed, name, True, trace_id=event.trace_id,
            message=f"certificate {name}: {event.type.replace('_', ' ')}"
                    + (f": {error}" if error else ""),
            details={"certificate": name, "event": event.type, "error": str(error)[:500]}))
    elif failed and event.type in CERTIFICATE_FINE:
        signals.append(Signal(failed, name, False, trace_id=event.trace_id))
    return signals


def _service_signals(event: Event, rules: RuleSet) -> list[Signal]:
    rule = rules.enabled("service_failed")
    if rule is None:
        return []
    name, data = event.subject, event.data
    if event.type in SERVICE_FAILED:
        reason = data.get("error") or data.get("reason") or ""
        return [Signal(rule, name, True, trace_id=event.trace_id,
                       message=f"service {name}: {event.type.replace('_', ' ')}"
                               + (f": {reason}" if reason else ""),
                       details={"service": name, "event": event.type,
                                "reason": str(reason)[:500]})]
    if event.type in SERVICE_FINE:
        return [Signal(rule, name, False, trace_id=event.trace_id)]
    return []


def lifecycle_signals(domain: str, events: Iterable[Event], rules: RuleSet,
                      opened: Callable[[], list[OpenState]]) -> list[Signal]:
    """The signals of a batch of lifecycle events, in order. `opened` is called at most once,
    and only when a certificate event needs to know which alerts are open."""
    signals: list[Signal] = []
    cache: list[list[OpenState]] = []

    def open_now() -> list[OpenState]:
        if not cache:
            cache.append(opened())
        return cache[0]

    for event in events:
        if domain == "certificate" and (event.type == "expiring_soon"
                                        or event.type in CERTIFICATE_FINE):
            signals += _certificate_signals(event, rules, open_now())
        elif domain == "certificate":
            signals += _certificate_signals(event, rules, [])
        elif domain == "service":
            signals += _service_signals(event, rules)
    return signals


# -- the periodic pass ----------------------------------------------------------------------------


class Evaluator:
    def __init__(self, client: redis.Redis, rules: RuleStore, metrics: MetricsQuery,
                 clock: Callable[[], float] = time.time):
        self.client = client
        self.rules = rules
        self.metrics = metrics
        self.clock = clock

    def evaluate(self) -> list[tuple[Signal, str]]:
        """One pass over every periodic rule; returns each signal sent and its outcome."""
        rules = self.rules.effective()
        opened = open_states(self.client)
        signals = [*self._traffic(rules, opened), *self._lag(rules, opened),
                   *self._dropped(rules, opened), *self._leftovers(rules, opened)]
        outcomes = apply_signals(self.client, signals, int(self.clock() * 1000))
        return list(zip(signals, outcomes, strict=True))

    def _traffic(self, rules: RuleSet, opened: list[OpenState]) -> list[Signal]:
        signals = []
        for rule_id in ("error_rate", "latency_p99"):
            rule = rules.enabled(rule_id)
            if rule is None:
                continue
            window = rule["window"]
            names = set(self.metrics.names(ROUTER, self.metrics.since_ms(window)))
            names |= {s.subject for s in opened if s.rule == rule_id}
            sums = self.metrics.sums(ROUTER, sorted(names), window,
                                     latency=rule_id == "latency_p99")
            for host, s in sums.items():
                busy = s.requests >= rule["min_requests"]
                if rule_id == "error_rate":
                    rate = s.errors / s.requests if s.requests else 0.0
                    on = busy and rate > rule["threshold"]
                    signals.append(Signal(
                        rule, host, on,
                        message=f"{host}: {rate:.1%} of {s.requests} requests failed over "
                                f"{window} (threshold {rule['threshold']:.1%})",
                        details={"host": host, "window": window, "value": round(rate, 6),
                                 "threshold": rule["threshold"], "requests": s.requests,
                                 "errors": s.errors}))
                else:
                    p99_us = quantiles(s.latency, (0.99,))[0.99] if busy else None
                    p99 = p99_us / 1000 if p99_us is not None else 0.0
                    on = busy and p99 > rule["threshold_ms"]
                    signals.append(Signal(
                        rule, host, on,
                        message=f"{host}: p99 latency {p99:.1f} ms over {window} "
                                f"(threshold {rule['threshold_ms']} ms)",
                        details={"host": host, "window": window, "value_ms": round(p99, 3),
                                 "threshold_ms": rule["threshold_ms"],
                                 "requests": s.requests}))
        return signals

    def _lag(self, rules: RuleSet, opened: list[OpenState]) -> list[Signal]:
        rule = rules.enabled("consumer_lag")
        if rule is None:
            return []
        signals = []
        seen = set()
        for group in consumer_lag(self.client):
            subject = f"{group['group']}@{group['stream']}"
            seen.add(subject)
            lag = group["lag_seconds"] or 0.0
            signals.append(Signal(
                rule, subject, lag > rule["threshold_s"],
                message=f"consumer group {group['group']} on {group['stream']} is "
                        f"{lag:.1f} s behind (threshold {rule['threshold_s']} s)",
                details={"group": group["group"], "stream": group["stream"],
                         "value_s": round(lag, 3), "threshold_s": rule["threshold_s"],
                         "lag": group["lag"], "pending": group["pending"]}))
        signals += [Signal(rule, s.subject, False) for s in opened
                    if s.rule == rule.id and s.subject not in seen]  # the group is gone
        return signals

    def _dropped(self, rules: RuleSet, opened: list[OpenState]) -> list[Signal]:
        """On while the publishers' drop counter rose within the rule's window."""
        rule = rules.enabled("events_dropped")
        if rule is None:
            return []
        now_ms = int(self.clock() * 1000)
        total = int(self.client.get(keys.EVENTS_DROPPED) or 0)
        seen = self.client.hgetall(keys.ALERTS_DROPPED_SEEN)
        last_total = int(seen.get("total", 0))
        if total != last_total:  # risen, or reset (then nothing new was dropped)
            seen = {"total": total, "changed_ms": now_ms if total > last_total else 0,
                    "dropped": max(0, total - last_total)}
            self.client.hset(keys.ALERTS_DROPPED_SEEN, mapping=seen)
        recent = now_ms - int(seen.get("changed_ms", 0)) < WINDOWS[rule["window"]] * 60_000
        if not recent:
            return [Signal(rule, s.subject, False) for s in opened if s.rule == rule.id]
        dropped = int(seen.get("dropped", 0))
        return [Signal(rule, "publishers", True,
                       message=f"publishers dropped {dropped} events ({total} in all)",
                       details={"dropped": dropped, "total": total})]

    def _leftovers(self, rules: RuleSet, opened: list[OpenState]) -> list[Signal]:
        """Pending event alerts are re-sent (they fire once their cooldown is over); alerts of
        a rule that was disabled are resolved."""
        signals = []
        for s in opened:
            rule = rules.rules.get(s.rule)
            if rule is None or not rule.enabled:
                if rule is not None:
                    signals.append(Signal(rule, s.subject, False))
            elif s.state == "pending" and s.rule in EVENT_RULES:
                signals.append(Signal(rule, s.subject, True, message=s.message,
                                      details=s.details, trace_id=s.trace_id,
                                      severity=s.severity))
        return signals
