"""The management API's app factory: every dependency comes in as an argument."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import dramatiq
import falcon
import redis

from app.api import errors
from app.api.auth import AuthMiddleware
from app.api.certificates import add_certificate_routes
from app.api.events import SSE_BLOCK_MS, SSE_PING_S, EventsResource, EventStreamResource
from app.api.health import HealthResource
from app.api.observability import add_observability_routes
from app.api.openapi import OpenApiResource
from app.api.proxies import JobResource, ProxiesResource
from app.api.routes import RouteResource, RoutesResource
from app.api.services import add_service_routes
from app.api.status import StatusResource, TrimStreamsJobResource
from app.api.tenancy import Tenancy
from app.api.tokens import TokenResource, TokensResource
from app.api.trace import TraceMiddleware
from app.certificates import CertificateCommands
from app.events import Publisher
from app.heartbeat import Heartbeat
from app.services import ContainerEngine, NoEngine, ServiceCommands
from app.settings import Settings
from app.stores import hosts
from app.stores.certificates import CertificateStore
from app.stores.health import HealthStore
from app.stores.routes import RouteStore
from app.stores.services import ServiceStore
from app.stores.tokens import TokenStore
from app.target_policy import TargetPolicy

log = logging.getLogger(__name__)


class _StartHeartbeat:
    """Makes sure this process's heartbeat runs (cheap pid check; starts it after a fork)."""

    def __init__(self, heartbeat: Heartbeat):
        self.heartbeat = heartbeat

    def process_request(self, req, resp) -> None:
        self.heartbeat.ensure_started()


class _ClaimStoredRoutes:
    """Once per process, before the first request: the host claims of routes stored before
    berth kept claims (app/stores/hosts.py), so an upgrade leaves no host unclaimed."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self.done = False

    def process_request(self, req, resp) -> None:
        if self.done:
            return
        try:
            hosts.claim_stored_routes(self.client)
        except redis.RedisError as ex:  # the next request tries again; this one goes on
            log.warning("building the host claims of stored routes failed: %s", ex)
            return
        self.done = True


def create_api(settings: Settings, redis_client: redis.Redis, broker: dramatiq.Broker,
               publisher: Publisher | None = None, clock: Callable[[], float] = time.time, *,
               heartbeat: Heartbeat | None = None, engine: ContainerEngine | None = None,
               sse_ping_s: float = SSE_PING_S, sse_block_ms: int = SSE_BLOCK_MS) -> falcon.App:
    """The WSGI app. `broker` only enqueues (it is not made Dramatiq's global broker);
    `publisher` receives token lifecycle events (none when None); `heartbeat`, when given,
    is started lazily in each serving process; `engine` is the container engine service
    commands need (without one they answer 503 and records can still be read)."""
    tokens = TokenStore(redis_client)
    middleware: list = [TraceMiddleware()]
    if heartbeat is not None:
        middleware.append(_StartHeartbeat(heartbeat))
    middleware.append(_ClaimStoredRoutes(redis_client))
    middleware.append(AuthMiddleware(tokens))
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)

    app.add_route("/healthz", HealthResource(redis_client))
    app.add_route("/openapi.json", OpenApiResource())
    app.add_route("/api/v1/tokens", TokensResource(tokens, publisher))
    app.add_route("/api/v1/tokens/{token_id}", TokenResource(tokens, publisher))
    routes = RouteStore(redis_client)
    tenancy = Tenancy(redis_client, settings.base_domain, TargetPolicy.from_settings(settings))
    certificates = CertificateCommands(settings, CertificateStore(redis_client), broker, clock)
    app.add_route("/api/v1/routes", RoutesResource(routes, publisher, certificates, tenancy))
    app.add_route("/api/v1/routes/{route_id}",
                  RouteResource(routes, publisher, certificates, tenancy))
    add_certificate_routes(app, certificates, tenancy, clock)
    engine = NoEngine() if engine is None else engine
    add_service_routes(app, ServiceCommands(settings, ServiceStore(redis_client), routes,
                                            HealthStore(redis_client), broker, engine), tenancy)
    app.add_route("/api/v1/orchestrator/status",
                  StatusResource(settings, redis_client, broker, clock, engine))
    app.add_route("/api/v1/orchestrator/jobs/trim-streams", TrimStreamsJobResource(broker))
    app.add_route("/api/v1/proxies", ProxiesResource(settings, redis_client, clock))
    app.add_route("/api/v1/jobs/{trace_id}", JobResource(redis_client))
    app.add_route("/api/v1/events", EventsResource(redis_client))
    app.add_route("/api/v1/events/stream",
                  EventStreamResource(redis_client, ping_s=sse_ping_s, block_ms=sse_block_ms))
    add_observability_routes(app, settings, redis_client, broker, clock)
    return app
