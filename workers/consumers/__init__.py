"""The consumer process: stream consumer groups that aggregate metrics and evaluate alerts.

One thread per stream, each a Reader (app/events.py) applying batches together with their XACK:

    events:request:stream                 group "consumer"   request metrics
    events:{certificate,service,route,system}:stream
                                          group "consumer"   event counters, alert signals
    events:alert:stream                   group "webhooks"   webhook deliveries

The main thread beats the heartbeat (component "consumer") and, every BERTH_ALERT_EVAL_S, runs
the periodic alert rules; a short Redis lock lets one consumer do that per interval.

Any number of processes share the groups. The consumer name is "<host>:<pid>", so a restarted
process is a new consumer; what its predecessor read and never acknowledged is claimed by a
live one after BERTH_CONSUMER_CLAIM_IDLE_MS, and applied exactly once (the predecessor is
dead, so it cannot apply it too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import dramatiq
import redis

from app import redis as keys
from app.alerts.rules import RuleStore
from app.events import Reader
from app.heartbeat import Heartbeat, instance_name
from app.metrics.query import MetricsQuery
from app.settings import Settings
from app.stores.routes import RouteStore
from workers.consumers.alerts import Evaluator
from workers.consumers.handlers import lifecycle_handler, request_handler, webhook_handler
from workers.consumers.routes import RouteHosts

log = logging.getLogger(__name__)

GROUP = "consumer"
WEBHOOK_GROUP = "webhooks"
LIFECYCLE_DOMAINS = ("certificate", "service", "route", "system")
BLOCK_MS = 1000
FORGET_IDLE_MS = 3_600_000  # consumers idle this long with nothing pending are removed


class Consumer:
    def __init__(self, client: redis.Redis, settings: Settings, name: str,
                 readers: list[Reader], evaluator: Evaluator, heartbeat: Heartbeat):
        self.client = client
        self.settings = settings
        self.name = name
        self.readers = readers
        self.evaluator = evaluator
        self.heartbeat = heartbeat
        self.failed = False

    def run(self, stop: threading.Event) -> int:
        """Consume until `stop` is set; the exit status (1 when a reader died)."""
        forget_idle_consumers(self.client, self.readers, self.name)
        self.heartbeat.ensure_started()
        threads = [threading.Thread(target=self._read, args=(reader, stop), daemon=True,
                                    name=f"reader-{reader.stream}") for reader in self.readers]
        for thread in threads:
            thread.start()
        log.info("consumer %s reading %s", self.name, ", ".join(r.stream for r in self.readers))
        while not stop.is_set():
            self.tick()
            stop.wait(self.settings.alert_eval_s)
        for thread in threads:
            thread.join(timeout=BLOCK_MS / 1000 + 10)
        self.heartbeat.stop()
        log.info("consumer %s stopping; applied %s", self.name,
                 ", ".join(f"{r.stream}: {r.stats.applied}" for r in self.readers))
        return 1 if self.failed else 0

    def _read(self, reader: Reader, stop: threading.Event) -> None:
        try:
            reader.run(stop)
        except Exception:
            # Not swallowed: the process stops with status 1 and its supervisor restarts it.
            log.exception("reader of %s stopped", reader.stream)
            self.failed = True
            stop.set()

    def tick(self) -> None:
        """One periodic alert evaluation, by whichever consumer holds the lock this interval."""
        ttl_ms = max(50, int(self.settings.alert_eval_s * 900))
        try:
            if self.client.set(keys.lock("alert-evaluation"), self.name, nx=True, px=ttl_ms):
                for signal, outcome in self.evaluator.evaluate():
                    if outcome in ("fired", "resolved"):
                        log.info("alert %s %s: %s", signal.rule.id, outcome, signal.subject)
        except redis.RedisError as ex:
            log.warning("alert evaluation skipped: Redis unreachable (%s)", ex)
        except Exception:
            # A bug in one rule must not stop the metrics threads; it is logged every interval.
            log.exception("alert evaluation failed")


def forget_idle_consumers(client: redis.Redis, readers: list[Reader], me: str) -> None:
    """Remove consumers of dead processes that hold nothing (XINFO CONSUMERS stays short)."""
    for reader in readers:
        try:
            consumers = client.xinfo_consumers(reader.stream, reader.group)
        except redis.ResponseError:  # no stream or group yet
            continue
        for consumer in consumers:
            if (consumer["name"] != me and consumer["pending"] == 0
                    and consumer["idle"] > FORGET_IDLE_MS):
                client.xgroup_delconsumer(reader.stream, reader.group, consumer["name"])


def create_consumer(settings: Settings, client: redis.Redis, broker: dramatiq.Broker, *,
                    name: str | None = None, clock: Callable[[], float] = time.time
                    ) -> Consumer:
    """The consumer with a Reader per stream; `broker` only enqueues webhook deliveries."""
    name = name or instance_name()
    rules = RuleStore(client, settings)

    def reader(domain: str, group: str, handler) -> Reader:
        return Reader(client, keys.stream(domain), group, name, handler,
                      batch=settings.consumer_batch, block_ms=BLOCK_MS,
                      claim_idle_ms=settings.consumer_claim_idle_ms)

    router_of = RouteHosts(RouteStore(client))
    readers = [reader("request", GROUP, request_handler(router_of, clock))]
    readers += [reader(domain, GROUP, lifecycle_handler(domain, client, rules.effective, clock))
                for domain in LIFECYCLE_DOMAINS]
    readers.append(reader("alert", WEBHOOK_GROUP, webhook_handler(broker, rules.effective)))
    evaluator = Evaluator(client, rules, MetricsQuery(client, clock), clock)
    return Consumer(client, settings, name, readers, evaluator, Heartbeat(client, "consumer"))
