"""The worker process factory: broker, dependencies and every actor, wired together."""

from __future__ import annotations

import redis

from app.redis import create_client
from app.settings import Settings
from workers import alerts, certificates, maintenance, reconcile, services
from workers.broker import HeartbeatMiddleware, StopWithParentMiddleware, setup_broker
from workers.deps import WorkerDeps, create_deps
from workers.held import HeldMiddleware


def create_worker(settings: Settings, client: redis.Redis | None = None) -> WorkerDeps:
    """Set the global broker and register every actor on it; returns the actors' deps."""
    client = client or create_client(settings.redis_url)
    broker = setup_broker(settings)
    broker.add_middleware(HeartbeatMiddleware(client))
    broker.add_middleware(StopWithParentMiddleware())
    broker.add_middleware(HeldMiddleware(client))
    deps = create_deps(settings, client)
    maintenance.register(broker, deps)
    certificates.register(broker, deps)
    services.register(broker, deps)
    reconcile.register(broker, deps)
    alerts.register(broker, deps)
    return deps
