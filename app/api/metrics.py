"""/api/v1/orchestrator/metrics, /alerts and /alert-rules: what the consumer computed.

    GET  /api/v1/orchestrator/metrics          ?window=1m|5m|1h|total (default 5m)&host=H
         per router (host) and per service (upstream): requests, rate, errors, error rate,
         status classes, codes, methods, bytes, latency mean/p50/p95/p99 (ms)
    GET  /api/v1/orchestrator/metrics/series   ?host=H&minutes=30 (1-60)
         per minute: requests, errors, rate, p50/p95/p99 (ms), for charts
    GET  /api/v1/orchestrator/alerts           ?state=active|all&limit=100   (admin)
    POST /api/v1/orchestrator/alerts/{id}/ack                                (admin)
    GET  /api/v1/orchestrator/alert-rules      effective rules and each layer (admin)
    PUT  /api/v1/orchestrator/alert-rules      replace the API's override layer (admin)

Metrics visibility: an admin token sees every router and service; a user token sees the
routers whose host matches one of its routes, and the services its routes target.
"""

from __future__ import annotations

import falcon
import redis

from app.alerts.rules import RuleStore, settings_layer
from app.alerts.state import AlertStore
from app.api.auth import caller, require_admin, visible_owner
from app.api.errors import translate_redis_errors
from app.api.params import (
    choice_param,
    host_param,
    int_param,
    json_body,
    no_fields,
    query,
    record_id,
)
from app.metrics.aggregate import ROUTER, SERVICE, UNMATCHED
from app.metrics.query import WINDOW_CHOICES, MetricsQuery
from app.settings import Settings
from app.stores.routes import RouteStore

ALERT_STATES = ("active", "all")


def host_matches(host: str, pattern: str) -> bool:
    """A route's host pattern (exact or `*.domain`, one label) against a request host."""
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return host == pattern


class Visible:
    """Which routers and services a caller may see (None: all)."""

    def __init__(self, routes: RouteStore):
        self.routes = routes

    def filter(self, req: falcon.Request, routers: list[str], services: list[str]
               ) -> tuple[list[str], list[str]]:
        owner = visible_owner(req)
        if owner is None:
            return routers, services
        mine = self.routes.list(owner=owner, limit=10_000)
        patterns = [r.host for r in mine]
        targets = {t for r in mine for t in r.targets}
        return ([h for h in routers if any(host_matches(h, p) for p in patterns)],
                [s for s in services if s in targets])


class MetricsResource:
    def __init__(self, client: redis.Redis, query: MetricsQuery):
        self.query = query
        self.visible = Visible(RouteStore(client))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = query(req, ("window", "host"))
        window = choice_param(params, "window", WINDOW_CHOICES) or "5m"
        host = host_param(params, "host", also=(UNMATCHED,))
        with translate_redis_errors():
            since = self.query.since_ms(window)
            routers = self.query.names(ROUTER, since)
            services = self.query.names(SERVICE, since)
            routers, services = self.visible.filter(req, routers, services)
            if host is not None:
                routers = [r for r in routers if r == host]
                services = []
            router_rows = self.query.summaries(ROUTER, window, routers)
            service_rows = self.query.summaries(SERVICE, window, services)
        resp.media = {
            "window": window, "seconds": self.query.window_seconds(window),
            "requests": sum(r["requests"] for r in router_rows),
            "errors": sum(r["errors"] for r in router_rows),
            "routers": router_rows, "services": service_rows,
        }


class MetricsSeriesResource:
    def __init__(self, client: redis.Redis, query: MetricsQuery):
        self.query = query
        self.visible = Visible(RouteStore(client))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = query(req, ("host", "minutes"))
        host = host_param(params, "host", also=(UNMATCHED,))
        minutes = int_param(params, "minutes", 1, 60, 30)
        with translate_redis_errors():
            routers = self.query.names(ROUTER, self.query.since_ms("1h"))
            routers, _ = self.visible.filter(req, routers, [])
            if host is not None:
                routers = [r for r in routers if r == host]
            points = self.query.series(ROUTER, routers, minutes)
        resp.media = {"host": host, "minutes": minutes, "points": points}


class AlertsResource:
    def __init__(self, alerts: AlertStore):
        self.alerts = alerts

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = query(req, ("state", "limit"))
        require_admin(req, "reading alerts")
        state = choice_param(params, "state", ALERT_STATES) or "active"
        limit = int_param(params, "limit", 1, 1000, 100)
        with translate_redis_errors():
            items = self.alerts.active() if state == "active" else self.alerts.history(limit)
        resp.media = {"state": state, "items": items}


class AlertAckResource:
    def __init__(self, alerts: AlertStore):
        self.alerts = alerts

    def on_post(self, req: falcon.Request, resp: falcon.Response, alert_id: str) -> None:
        query(req)
        require_admin(req, "acknowledging alerts")
        no_fields(json_body(req, required=False))
        alert_id = record_id(alert_id, "alert_id")
        with translate_redis_errors():
            resp.media = self.alerts.acknowledge(alert_id, caller(req).id,
                                                 req.context.trace_id or "")


class AlertRulesResource:
    def __init__(self, rules: RuleStore, settings: Settings):
        self.rules = rules
        self.settings = settings

    def _body(self) -> dict:
        return {"effective": self.rules.effective().public(),
                "settings": settings_layer(self.settings), "overrides": self.rules.stored()}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        require_admin(req, "reading alert rules")
        with translate_redis_errors():
            resp.media = self._body()

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        require_admin(req, "changing alert rules")
        payload = json_body(req)
        with translate_redis_errors():
            self.rules.save(payload)
            resp.media = self._body()
