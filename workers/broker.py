"""The one place that builds the Dramatiq broker, its middleware, and sets it globally."""

from __future__ import annotations

import logging
import threading

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries, default_middleware

from app.heartbeat import Heartbeat
from app.settings import Settings
from app.tracing import current_trace_id, get_trace_id, new_trace_id

log = logging.getLogger(__name__)


class TraceMiddleware(Middleware):
    """Carries the enqueuer's trace id in the message options into the actor's context, so the
    events an actor publishes share the trace id of the command that caused them."""

    def __init__(self):
        self._tokens = threading.local()

    def before_enqueue(self, broker, message, delay):
        if not message.options.get("trace_id"):
            message.options["trace_id"] = get_trace_id() or new_trace_id()

    def before_process_message(self, broker, message):
        self._tokens.token = current_trace_id.set(message.options.get("trace_id"))

    def after_process_message(self, broker, message, *, result=None, exception=None):
        token = getattr(self._tokens, "token", None)
        if token is not None:
            current_trace_id.reset(token)
            self._tokens.token = None

    after_skip_message = after_process_message


class HeartbeatMiddleware(Middleware):
    """Records the worker process as alive in Redis every few seconds while it runs."""

    def __init__(self, client: redis.Redis, component: str = "worker", every_s: float = 5.0):
        self.heartbeat = Heartbeat(client, component, every_s)

    def after_worker_boot(self, broker, worker):
        self.heartbeat.ensure_started()

    def before_worker_shutdown(self, broker, worker):
        self.heartbeat.stop()


def create_broker(settings: Settings, client: redis.Redis | None = None) -> RedisBroker:
    """A Redis broker with berth's middleware. It opens no connection until first used."""
    middleware = [m() for m in default_middleware if m is not Retries]
    middleware += [
        Retries(max_retries=settings.worker_max_retries, min_backoff=500, max_backoff=60_000),
        TraceMiddleware(),
    ]
    if client is None:
        return RedisBroker(url=settings.redis_url, middleware=middleware)
    return RedisBroker(client=client, middleware=middleware)


def setup_broker(settings: Settings, client: redis.Redis | None = None) -> RedisBroker:
    """Build the broker and make it Dramatiq's global one (what `dramatiq` workers consume)."""
    broker = create_broker(settings, client)
    dramatiq.set_broker(broker)
    return broker
