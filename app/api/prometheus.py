"""GET /metrics: Prometheus text exposition (format 0.0.4), read from Redis on each scrape.

Every figure is cluster-wide (what all proxies, consumers and workers wrote to Redis), so one
web process answers for the whole installation. Labels are bounded: router (a host with a
route; requests no route matched are router="_unmatched"), service (an upstream), code,
method (unknown ones are OTHER), certificate and queue names; never a path or a client.

Authentication: an admin token, like the API; with BERTH_METRICS_PUBLIC=true no token is
needed (for a scraper on a trusted network). Families:

    berth_router_requests_total{router,code,method}              counter
    berth_router_request_errors_total{router}                    counter (5xx and failures)
    berth_router_request_duration_seconds{router}                histogram
    berth_router_request_bytes_total{router}                     counter (request bodies)
    berth_router_response_bytes_total{router}                    counter (response bodies)
    berth_service_...                                            the same per service
    berth_certificate_not_after_seconds{name}                    gauge (unix time)
    berth_certificate_renew_after_seconds{name}                  gauge (unix time)
    berth_stream_length{stream}                                  gauge
    berth_stream_consumer_lag{stream,group}                      gauge (entries not delivered)
    berth_stream_consumer_lag_seconds{stream,group}              gauge (age of the oldest)
    berth_stream_consumer_pending{stream,group}                  gauge (delivered, not acked)
    berth_events_dropped_total                                   counter
    berth_events_consumed_total{domain,type}                     counter
    berth_alerts_active{rule,severity}                           gauge
    berth_alert_webhook_failures_total                           counter
    berth_alert_webhooks_abandoned_total                         counter
    berth_dramatiq_queue_messages{queue,state}                   gauge (ready, in_progress,
                                                                 delayed, dead)
    berth_components_alive{component}                            gauge (fresh heartbeats)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import dramatiq
import falcon
import redis

from app import redis as keys
from app.alerts.state import AlertStore
from app.api.auth import require_admin
from app.api.errors import translate_redis_errors
from app.api.params import query
from app.api.status import queue_depths, queue_names
from app.events import consumer_lag, stream_lengths
from app.heartbeat import read_heartbeats
from app.metrics.aggregate import DIMENSIONS
from app.metrics.histogram import PROMETHEUS_BOUNDS_S
from app.metrics.query import MetricsQuery, Sums
from app.settings import Settings
from app.stores.certificates import CertificateStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class Exposition:
    """Metric families in the text format: HELP and TYPE once, then the samples."""

    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict, float]], suffix: str = "") -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        self.samples(name + suffix, samples)

    def samples(self, name: str, samples: Iterable[tuple[dict, float]]) -> None:
        for labels, value in samples:
            if labels:
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                self.lines.append(f"{name}{{{rendered}}} {_number(value)}")
            else:
                self.lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _requests(out: Exposition, dimension: str, sums: dict[str, Sums]) -> None:
    prefix = f"berth_{dimension}"
    out.family(f"{prefix}_requests_total", "counter",
               f"Requests answered, per {dimension}, status code and method.",
               (({dimension: name, "code": code, "method": method}, n)
                for name, s in sums.items() for (code, method), n in sorted(s.codes.items())))
    out.family(f"{prefix}_request_errors_total", "counter",
               f"Requests answered 5xx or failed, per {dimension}.",
               (({dimension: name}, s.errors) for name, s in sums.items()))
    out.family(f"{prefix}_request_bytes_total", "counter",
               f"Request body bytes received, per {dimension}.",
               (({dimension: name}, s.bytes_in) for name, s in sums.items()))
    out.family(f"{prefix}_response_bytes_total", "counter",
               f"Response body bytes sent, per {dimension}.",
               (({dimension: name}, s.bytes_out) for name, s in sums.items()))
    name = f"{prefix}_request_duration_seconds"
    out.lines.append(f"# HELP {name} Request duration, per {dimension}.")
    out.lines.append(f"# TYPE {name} histogram")
    for label, s in sums.items():
        cumulative = 0
        bounds = [*(repr(b) for b in PROMETHEUS_BOUNDS_S), "+Inf"]
        for index, bound in enumerate(bounds):
            cumulative += s.buckets.get(index, 0)
            out.samples(f"{name}_bucket", [({dimension: label, "le": bound}, cumulative)])
        out.samples(f"{name}_sum", [({dimension: label}, s.duration_us / 1_000_000)])
        out.samples(f"{name}_count", [({dimension: label}, s.requests)])


class PrometheusResource:
    def __init__(self, settings: Settings, client: redis.Redis, broker: dramatiq.Broker,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.client = client
        self.broker = broker
        self.clock = clock
        self.metrics = MetricsQuery(client, clock)
        self.certificates = CertificateStore(client)
        self.alerts = AlertStore(client)
        # Read by the auth middleware: anonymous scrapes only when the setting allows them.
        self.auth_required = not settings.metrics_public

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        if self.auth_required:
            require_admin(req, "reading /metrics")
        with translate_redis_errors():
            text = self.render()
        resp.content_type = CONTENT_TYPE
        resp.set_header("Cache-Control", "no-store")
        resp.text = text

    def render(self) -> str:
        out = Exposition()
        for dimension in DIMENSIONS:
            names = self.metrics.names(dimension)
            _requests(out, dimension, self.metrics.sums(dimension, names, "total",
                                                        latency=False))
        self._certificates(out)
        self._streams(out)
        self._alerts(out)
        self._queues(out)
        components: dict[str, int] = {}
        for c in read_heartbeats(self.client, self.clock(), self.settings.heartbeat_stale_s):
            components[c["component"]] = components.get(c["component"], 0) + c["alive"]
        out.family("berth_components_alive", "gauge",
                   "Processes of each component with a fresh heartbeat.",
                   (({"component": k}, v) for k, v in sorted(components.items())))
        return out.text()

    def _certificates(self, out: Exposition) -> None:
        certs = [c for c in self.certificates.list(limit=100_000) if c.not_after]
        out.family("berth_certificate_not_after_seconds", "gauge",
                   "Expiry of each issued certificate, unix time.",
                   (({"name": c.id}, c.not_after) for c in certs))
        out.family("berth_certificate_renew_after_seconds", "gauge",
                   "When each certificate is due for renewal, unix time.",
                   (({"name": c.id}, c.renew_after) for c in certs if c.renew_after))

    def _streams(self, out: Exposition) -> None:
        lengths = stream_lengths(self.client)
        out.family("berth_stream_length", "gauge", "Entries in each event stream.",
                   (({"stream": k}, v) for k, v in lengths.items()))
        groups = consumer_lag(self.client)
        for metric, field, help_text in (
                ("berth_stream_consumer_lag", "lag", "Entries not yet delivered to the group."),
                ("berth_stream_consumer_lag_seconds", "lag_seconds",
                 "Age of the oldest entry not yet delivered to the group."),
                ("berth_stream_consumer_pending", "pending",
                 "Entries delivered to the group and not yet acknowledged.")):
            out.family(metric, "gauge", help_text,
                       (({"stream": g["stream"], "group": g["group"]}, g[field] or 0)
                        for g in groups))
        dropped = int(self.client.get(keys.EVENTS_DROPPED) or 0)
        out.family("berth_events_dropped_total", "counter",
                   "Events publishers dropped because their buffer was full.", [({}, dropped)])
        consumed = self.client.hgetall(keys.METRICS_EVENTS)
        out.family("berth_events_consumed_total", "counter",
                   "Events applied by the consumer, per stream domain and type.",
                   (({"domain": k.partition(":")[0], "type": k.partition(":")[2]}, int(v))
                    for k, v in sorted(consumed.items())))

    def _alerts(self, out: Exposition) -> None:
        active: dict[tuple[str, str], int] = {}
        for alert in self.alerts.active():
            key = (alert["rule"], alert["severity"])
            active[key] = active.get(key, 0) + 1
        out.family("berth_alerts_active", "gauge", "Alerts firing, per rule and severity.",
                   (({"rule": r, "severity": s}, n) for (r, s), n in sorted(active.items())))
        for metric, key, help_text in (
                ("berth_alert_webhook_failures_total", keys.WEBHOOK_FAILURES,
                 "Webhook delivery attempts that failed."),
                ("berth_alert_webhooks_abandoned_total", keys.WEBHOOKS_ABANDONED,
                 "Webhook deliveries abandoned after their last retry.")):
            out.family(metric, "counter", help_text, [({}, int(self.client.get(key) or 0))])

    def _queues(self, out: Exposition) -> None:
        _depths, details = queue_depths(self.broker, queue_names(self.broker))
        out.family("berth_dramatiq_queue_messages", "gauge",
                   "Dramatiq messages per queue and state.",
                   (({"queue": queue, "state": state}, n)
                    for queue, states in sorted(details.items())
                    for state, n in states.items()))
