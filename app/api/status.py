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
from app.events import consumer_lag, stream_lengths
from app.heartbeat import read_heartbeats
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


class StatusResource:
    def __init__(self, settings: Settings, client: redis.Redis, broker: dramatiq.Broker,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.client = client
        self.broker = broker
        self.clock = clock
        _check_namespace(broker)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        started = time.perf_counter()
        try:
            self.client.ping()
        except redis.RedisError:
            resp.media = {"redis": {"ok": False, "latency_ms": None}, "components": [],
                          "streams": {}, "consumer_groups": [], "queues": {},
                          "queue_details": {}}
            return
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        with translate_redis_errors():
            components = read_heartbeats(self.client, self.clock(),
                                         self.settings.heartbeat_stale_s)
            streams = stream_lengths(self.client)
            groups = consumer_lag(self.client)
            queues, details = queue_depths(self.broker, queue_names(self.broker))
        resp.media = {"redis": {"ok": True, "latency_ms": latency_ms},
                      "components": components, "streams": streams,
                      "consumer_groups": groups, "queues": queues, "queue_details": details}


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
