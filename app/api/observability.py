"""Mounts the observability endpoints (metrics, alerts, /metrics, the dashboard) on the API."""

from __future__ import annotations

import time
from collections.abc import Callable

import dramatiq
import falcon
import redis

from app.alerts.rules import RuleStore
from app.alerts.state import AlertStore
from app.api.dashboard import DashboardResource, OverviewResource
from app.api.metrics import (
    AlertAckResource,
    AlertRulesResource,
    AlertsResource,
    MetricsResource,
    MetricsSeriesResource,
)
from app.api.prometheus import PrometheusResource
from app.metrics.query import MetricsQuery
from app.settings import Settings


def add_observability_routes(app: falcon.App, settings: Settings, client: redis.Redis,
                             broker: dramatiq.Broker,
                             clock: Callable[[], float] = time.time) -> None:
    metrics = MetricsQuery(client, clock)
    alerts = AlertStore(client)
    app.add_route("/api/v1/orchestrator/metrics", MetricsResource(client, metrics))
    app.add_route("/api/v1/orchestrator/metrics/series", MetricsSeriesResource(client, metrics))
    app.add_route("/api/v1/orchestrator/alerts", AlertsResource(alerts))
    app.add_route("/api/v1/orchestrator/alerts/{alert_id}/ack", AlertAckResource(alerts))
    app.add_route("/api/v1/orchestrator/alert-rules",
                  AlertRulesResource(RuleStore(client, settings), settings))
    app.add_route("/api/v1/orchestrator/overview",
                  OverviewResource(client, metrics, alerts, clock))
    app.add_route("/metrics", PrometheusResource(settings, client, broker, clock))
    dashboard = DashboardResource()
    app.add_route("/dashboard", dashboard)
    app.add_route("/dashboard/{name}", dashboard)
