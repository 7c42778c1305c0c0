"""The one place that builds the Dramatiq broker, its middleware, and sets it globally."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import uuid

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware, Retries, default_middleware

from app import redis as keys
from app.heartbeat import Heartbeat
from app.redis_errors import is_refusal
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


class StopWithParentMiddleware(Middleware):
    """A worker process stops when the `dramatiq` main process that forked it dies.

    The main process stops its worker processes when it is asked to; when it is SIGKILLed
    (or crashes) they live on, orphaned, and keep consuming beside the ones the supervisor's
    restart forks: seen as workers that outlived their platform by most of an hour and
    consumed the messages of a later Redis on the same port. Linux's PR_SET_PDEATHSIG sends
    the worker process SIGTERM when its parent dies, which Dramatiq answers by finishing
    the messages in hand (the Procfile's --worker-shutdown-timeout bounds that) and exiting.
    """

    PR_SET_PDEATHSIG = 1

    def after_process_boot(self, broker):
        parent = multiprocessing.parent_process()
        if parent is None or not sys.platform.startswith("linux"):
            return  # not a forked worker process, or no such call here
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(self.PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("cannot ask to be stopped with the main process: %s",
                        os.strerror(ctypes.get_errno()))
            return
        if os.getppid() != parent.pid:  # it died before the call above took effect
            os.kill(os.getpid(), signal.SIGTERM)


class WakeMiddleware(Middleware):
    """After each message is sent, leaves one token on its queue's wake list, on which idle
    consumers of that queue block (WakingConsumer). Without it an idle worker notices a new
    message only after its poll pause: up to dramatiq_worker_timeout, 100 ms in the Procfile,
    on every command a user waits for."""

    def after_enqueue(self, broker, message, delay):
        wake = keys.dramatiq_wake(message.queue_name)  # `<queue>.DQ` when delayed
        try:
            pipe = broker.client.pipeline(transaction=False)
            pipe.lpush(wake, 1).ltrim(wake, 0, 0).expire(wake, 60).execute()
        except redis.RedisError as ex:
            # The message is stored; consumers find it at their next poll all the same.
            log.debug("no wake token for queue %s: %s", message.queue_name, ex)


class WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer (2.2, private class), which sleeps up to its timeout after a
    fetch that found nothing; this one blocks that long on the queue's wake list instead, so
    a message sent to an idle worker is fetched within a round trip. A token left while no
    consumer waited only makes the next wait return at once."""

    def __next__(self):
        if not self.message_cache and self.outstanding_message_count < self.prefetch:
            try:
                self.message_cache = self.broker.do_fetch(
                    self.queue_name, self.prefetch - self.outstanding_message_count)
                if not self.message_cache:
                    # At least 1 ms: a timeout of 0 would make BLPOP wait for ever.
                    self.broker.client.blpop([keys.dramatiq_wake(self.queue_name)],
                                             timeout=max(self.timeout, 1) / 1000)
                    return None
            except redis.RedisError as ex:
                _closed_if_refused(ex)
                raise
        # Messages in the cache, or as many outstanding as prefetch allows: Dramatiq's own path.
        return _refusals_as_closed(super().__next__)

    def ack(self, message):
        return _refusals_as_closed(super().ack, message)

    def nack(self, message):
        return _refusals_as_closed(super().nack, message)


def _closed_if_refused(ex: redis.RedisError) -> None:
    """Dramatiq waits out a ConnectionClosed (its consumer restarts after a pause, an ack is
    retried) but logs anything else as an unexpected error with its traceback: Redis
    refusing writes (MISCONF, OOM, READONLY...) is an outage like a lost connection."""
    if is_refusal(ex):
        raise ConnectionClosed(ex) from None


def _refusals_as_closed(fn, *args):
    try:
        return fn(*args)
    except redis.RedisError as ex:
        _closed_if_refused(ex)
        raise


class WakingRedisBroker(RedisBroker):
    @property
    def consumer_class(self):
        return WakingConsumer


def stage_message(pipe, broker: RedisBroker, message: dramatiq.Message) -> dramatiq.Message:
    """Queue `message` on `pipe` (a MULTI/EXEC pipeline, or a Reader's Effects) so it is
    enqueued when, and only when, that transaction commits: for a message that must be sent
    exactly once with a state change, e.g. a webhook delivery with the XACK of the alert entry
    it delivers (workers/consumers/handlers.py).

    Private layout, Dramatiq 2.2 (brokers/redis/dispatch.lua, command "enqueue"): the message
    data in the hash `<namespace>:<queue>.msgs` under a fresh `redis_message_id`, that id
    pushed on the list `<namespace>:<queue>`. tests/test_broker.py has a real worker run a
    staged message and compares the keys with RedisBroker.enqueue's, so a change fails there.
    No broker middleware runs (the trace id is set here; the wake token is staged too)."""
    if broker.namespace != keys.DRAMATIQ_NAMESPACE:
        raise ValueError(f"broker namespace {broker.namespace!r} is not berth's")
    options = {"redis_message_id": str(uuid.uuid4())}
    if not message.options.get("trace_id"):
        options["trace_id"] = get_trace_id() or new_trace_id()
    message = message.copy(options=options)
    rid = message.options["redis_message_id"]
    pipe.hset(keys.dramatiq_messages(message.queue_name), rid, message.encode())
    pipe.rpush(keys.dramatiq_queue(message.queue_name), rid)
    wake = keys.dramatiq_wake(message.queue_name)
    pipe.lpush(wake, 1)
    pipe.ltrim(wake, 0, 0)
    pipe.expire(wake, 60)
    return message


def create_broker(settings: Settings, client: redis.Redis | None = None) -> RedisBroker:
    """A Redis broker with berth's middleware whose idle consumers wake as soon as a message
    is sent. It opens no connection until first used."""
    middleware = [m() for m in default_middleware if m is not Retries]
    middleware += [
        Retries(max_retries=settings.worker_max_retries, min_backoff=500, max_backoff=60_000),
        TraceMiddleware(),
        WakeMiddleware(),
    ]
    # Redelivery: a dead worker's unacknowledged messages are requeued by the broker's
    # maintenance step, for workers whose last call to Redis is older than heartbeat_timeout,
    # on maintenance_chance per million calls. Dramatiq's defaults (60 s, 1 in 1000) took
    # 94-163 s after a SIGKILL; berth's (10 s, 1 in 4 fetches) take about 10 s.
    options = {"middleware": middleware,
               "heartbeat_timeout": settings.worker_heartbeat_timeout_ms,
               "maintenance_chance": settings.worker_maintenance_chance}
    if client is None:
        return WakingRedisBroker(url=settings.redis_url, **options)
    return WakingRedisBroker(client=client, **options)


def setup_broker(settings: Settings, client: redis.Redis | None = None) -> RedisBroker:
    """Build the broker and make it Dramatiq's global one (what `dramatiq` workers consume)."""
    broker = create_broker(settings, client)
    dramatiq.set_broker(broker)
    return broker
