"""/api/v1/orchestrator: the platform's status, and admin-triggered maintenance jobs.

Dramatiq's Redis broker (dramatiq/brokers/redis/dispatch.lua) keeps, per queue Q under the
namespace N ("dramatiq"; key names from app/redis.py):

    N:Q            list  ids of messages waiting to be fetched by a worker
    N:Q.msgs       hash  id -> message, for every message not yet acknowledged
                         (waiting + fetched by a worker and not yet acked)
    N:Q.DQ         list  ids of delayed messages (retries with backoff, `delay=`) not yet
                         fetched; a worker fetches them at once and holds them until their eta
    N:Q.DQ.msgs    hash  id -> message, every delayed message not yet moved to Q
    N:Q.XQ         zset  ids of dead-lettered messages, scored by when they died

`queues` reports per queue "Q": HLEN N:Q.msgs and per delay queue "Q.DQ": HLEN N:Q.DQ.msgs,
i.e. messages enqueued and not yet acknowledged; `queue_details` splits that up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dramatiq
import falcon
import redis
from dramatiq.common import dq_name

from app import jobs
from app import redis as keys
from app.api.auth import require_admin
from app.api.errors import translate_redis_errors
from app.api.params import json_body, no_fields, query
from app.errors import Unavailable
from app.events import consumer_lag, stream_lengths
from app.heartbeat import forget_dead, read_heartbeats
from app.redis_errors import refusal
from app.services import ContainerEngine, NoEngine
from app.settings import Settings


def queue_names(broker: dramatiq.Broker) -> list[str]:
    """The queues of every known job plus any this broker declared."""
    names = {job.queue_name for job in jobs.ALL_JOBS} | set(broker.get_declared_queues())
    return sorted(n for n in names if not n.endswith((".DQ", ".XQ")))


def _check_namespace(broker) -> None:
    if getattr(broker, "namespace", keys.DRAMATIQ_NAMESPACE) != keys.DRAMATIQ_NAMESPACE:
        raise RuntimeError(f"the broker's namespace {broker.namespace!r} is not "
                           f"{keys.DRAMATIQ_NAMESPACE!r} (app/redis.py)")


def queue_depths(broker, names: list[str]) -> tuple[dict[str, int], dict[str, dict]]:
    """(depths, details) read in one MULTI through the broker's own (bytes) client; empty
    for a broker that does not keep its queues in Redis (e.g. Dramatiq's StubBroker)."""
    client = getattr(broker, "client", None)
    if not isinstance(client, redis.Redis):
        return {}, {}
    pipe = client.pipeline(transaction=True)
    for name in names:
        pipe.llen(keys.dramatiq_queue(name))
        pipe.hlen(keys.dramatiq_messages(name))
        pipe.hlen(keys.dramatiq_messages(dq_name(name)))
        pipe.zcard(keys.dramatiq_dead(name))
    results = pipe.execute()
    depths, details = {}, {}
    for i, name in enumerate(names):
        waiting, unacked, delayed, dead = (int(v) for v in results[4 * i:4 * i + 4])
        depths[name] = unacked
        depths[dq_name(name)] = delayed
        details[name] = {"ready": waiting, "in_progress": max(0, unacked - waiting),
                         "delayed": delayed, "dead": dead}
    return depths, details


def redis_state(client: redis.Redis) -> dict:
    """Whether Redis answers and accepts writes: PING, which Redis refuses too while it
    refuses writes (MISCONF, and the like); reads still work then."""
    started = time.perf_counter()
    try:
        client.ping()
    except redis.RedisError as ex:
        reason = refusal(ex) or str(ex)
        reachable = not isinstance(ex, redis.ConnectionError | redis.TimeoutError)
        return {"ok": False, "reachable": reachable, "latency_ms": None, "error": reason}
    return {"ok": True, "reachable": True,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3), "error": None}


def scheduler_leader(client: redis.Redis) -> dict | None:
    """The scheduler replica holding the leader lease (app/locks.py FencedLease: the value is
    "<fencing token>:<instance>"), None when no replica leads."""
    pipe = client.pipeline(transaction=True)
    value, ttl_ms = pipe.get(keys.scheduler_leader()).pttl(keys.scheduler_leader()).execute()
    if not value:
        return None
    token, _, instance = value.partition(":")
    return {"instance": instance, "term": int(token) if token.isdigit() else None,
            "expires_in_ms": max(0, int(ttl_ms))}


def engine_state(engine: ContainerEngine) -> dict:
    try:
        engine.ping()
    except Unavailable as ex:
        return {"reachable": False, "url": engine.base_url, "error": ex.description}
    return {"reachable": True, "url": engine.base_url, "error": None}


class StatusResource:
    def __init__(self, settings: Settings, client: redis.Redis, broker: dramatiq.Broker,
                 clock: Callable[[], float] = time.time, engine: ContainerEngine | None = None):
        self.settings = settings
        self.client = client
        self.broker = broker
        self.clock = clock
        self.engine = NoEngine() if engine is None else engine
        _check_namespace(broker)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        state = redis_state(self.client)
        engine = engine_state(self.engine)
        if not state["reachable"]:
            resp.media = {"redis": state, "components": [], "streams": {},
                          "consumer_groups": [], "queues": {}, "queue_details": {},
                          "scheduler_leader": None, "engine": engine}
            return
        if state["ok"]:  # writes refused: the dead are forgotten once they are not
            try:
                forget_dead(self.client, self.clock())
            except redis.RedisError as ex:  # housekeeping: never what fails a status read
                if refusal(ex) is None:
                    raise
        with translate_redis_errors():
            components = read_heartbeats(self.client, self.clock(),
                                         self.settings.heartbeat_stale_s)
            streams = stream_lengths(self.client)
            groups = consumer_lag(self.client)
            queues, details = queue_depths(self.broker, queue_names(self.broker))
            leader = scheduler_leader(self.client)
        resp.media = {"redis": state, "components": components, "streams": streams,
                      "consumer_groups": groups, "queues": queues, "queue_details": details,
                      "scheduler_leader": leader, "engine": engine}


class TrimStreamsJobResource:
    def __init__(self, broker: dramatiq.Broker):
        self.broker = broker

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        require_admin(req, "starting a maintenance job")
        no_fields(json_body(req, required=False))
        with translate_redis_errors("the job queue"):
            message = jobs.enqueue(self.broker, jobs.TRIM_STREAMS)
        resp.status = falcon.HTTP_202
        resp.media = {"job": jobs.TRIM_STREAMS.actor_name, "trace_id": req.context.trace_id,
                      "message_id": message.message_id}
