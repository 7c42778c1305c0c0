"""/dashboard: the web dashboard, static files shipped in app/web/ (no CDN, no build step).

The files hold no data and need no token; the page asks for a token, keeps it in
sessionStorage and calls the API with it. The Content-Security-Policy allows nothing but this
origin, so the page runs no script and loads no style from anywhere else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import falcon
import redis

from app.alerts.state import AlertStore
from app.api.auth import visible_owner
from app.api.errors import translate_redis_errors
from app.api.metrics import Visible
from app.api.params import choice_param, query, record_id
from app.metrics.aggregate import ROUTER
from app.metrics.query import WINDOWS, MetricsQuery
from app.models import Certificate, Service
from app.stores.certificates import CertificateStore
from app.stores.health import HealthStore
from app.stores.routes import RouteStore
from app.stores.services import ServiceStore

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
FILES = {"index.html": "text/html; charset=utf-8",
         "app.js": "text/javascript; charset=utf-8",
         "app.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
OVERVIEW_WINDOWS = tuple(WINDOWS)  # rolling windows only: the dashboard shows rates


class DashboardResource:
    auth_required = False

    def __init__(self, web_dir: Path = WEB_DIR):
        self.files = {name: (web_dir / name).read_bytes() for name in FILES}

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str = "index.html"
               ) -> None:
        query(req)
        if record_id(name, "name") not in self.files:
            raise falcon.HTTPNotFound()
        resp.content_type = FILES[name]
        resp.set_headers(SECURITY_HEADERS)
        resp.data = self.files[name]


class OverviewResource:
    """GET /api/v1/orchestrator/overview?window=1m: everything the dashboard shows, in one
    request: routers with rate, error rate and p99, certificates with days left and next
    renewal, services with health, and (admin tokens) the active alerts."""

    def __init__(self, client: redis.Redis, metrics: MetricsQuery, alerts: AlertStore,
                 clock: Callable[[], float] = time.time):
        self.metrics = metrics
        self.alerts = alerts
        self.clock = clock
        self.visible = Visible(RouteStore(client))
        self.certificates = CertificateStore(client)
        self.services = ServiceStore(client)
        self.health = HealthStore(client)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = query(req, ("window",))
        window = choice_param(params, "window", OVERVIEW_WINDOWS) or "1m"
        owner = visible_owner(req)
        now = self.clock()
        with translate_redis_errors():
            routers, _ = self.visible.filter(
                req, self.metrics.names(ROUTER, self.metrics.since_ms(window)), [])
            rows = self.metrics.summaries(ROUTER, window, routers)
            certificates = [self._certificate(c, now)
                            for c in self.certificates.list(owner=owner, limit=10_000)]
            services = [self._service(s) for s in self.services.list(owner=owner, limit=10_000)]
            alerts = self.alerts.active() if owner is None else None
        requests = sum(r["requests"] for r in rows)
        seconds = self.metrics.window_seconds(window)
        resp.media = {
            "now": now, "window": window, "seconds": seconds,
            "totals": {"requests": requests, "errors": sum(r["errors"] for r in rows),
                       "rate": round(requests / seconds, 4) if seconds else None},
            "routers": rows, "certificates": certificates, "services": services,
            "alerts": alerts,
        }

    @staticmethod
    def _certificate(cert: Certificate, now: float) -> dict:
        return {"name": cert.id, "domains": list(cert.domains), "status": cert.status,
                "not_after": cert.not_after or None,
                "days_left": round((cert.not_after - now) / 86400, 2) if cert.not_after
                else None,
                "renew_after": cert.renew_after or None, "last_error": cert.last_error}

    def _service(self, svc: Service) -> dict:
        health = self.health.read(svc.id)
        return {"name": svc.id, "status": svc.status, "hostname": svc.hostname,
                "replicas": svc.replicas,
                "healthy": sum(1 for h in health.values() if h.healthy),
                "containers": [{"name": name, **h.public()} for name, h in sorted(health.items())]}
