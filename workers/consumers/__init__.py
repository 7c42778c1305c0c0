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
dead, so it cannot apply it too). Once a dead consumer holds nothing and has been idle longer
than BERTH_HEARTBEAT_STALE_S it is deleted from the group (at each alert evaluation), so
XINFO CONSUMERS lists live processes only.

No Redis error stops a reader or the evaluation: each backs off and recovers by itself, and
while failing it is reported in the process's heartbeat as degraded (app/background.py).
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
from app.background import Backoff
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

# Deletes a group's consumer when it has nothing pending, in one step: a consumer deleted
# with pending entries would take them out of the group's PEL (never delivered again).
# KEYS[1] the stream; ARGV: group, consumer. 1 when deleted.
_FORGET = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


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
        self._evaluation = Backoff("alert evaluation", log)
        self._forgetting = Backoff("forgetting dead consumers", log)
        self._forget = client.register_script(_FORGET)

    def run(self, stop: threading.Event) -> int:
        """Consume until `stop` is set; the exit status (1 when a reader died)."""
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
        """One periodic alert evaluation, by whichever consumer holds the lock this interval,
        and the removal of dead consumers."""
        ttl_ms = max(50, int(self.settings.alert_eval_s * 900))
        try:
            if self.client.set(keys.lock("alert-evaluation"), self.name, nx=True, px=ttl_ms):
                for signal, outcome in self.evaluator.evaluate():
                    if outcome in ("fired", "resolved"):
                        log.info("alert %s %s: %s", signal.rule.id, outcome, signal.subject)
            self._evaluation.succeeded()
        except redis.RedisError as ex:  # skipped this interval; the next one tries again
            self._evaluation.failed(ex)
        except Exception:
            # A bug in one rule must not stop the metrics threads; it is logged every interval.
            log.exception("alert evaluation failed")
        try:
            self.forget_dead_consumers()
            self._forgetting.succeeded()
        except redis.RedisError as ex:
            self._forgetting.failed(ex)

    def forget_dead_consumers(self) -> list[str]:
        """Delete the consumers, of every group read here, that hold nothing and were idle
        longer than the heartbeat stale limit (a live one reads every BLOCK_MS: its idle time
        stays under that). Returns "stream/group/consumer" of each one deleted."""
        idle_ms = self.settings.heartbeat_stale_s * 1000
        deleted = []
        for reader in self.readers:
            try:
                consumers = self.client.xinfo_consumers(reader.stream, reader.group)
            except redis.ResponseError as ex:
                if "NOGROUP" in str(ex) or "no such key" in str(ex):
                    continue  # no stream or group yet
                raise
            for consumer in consumers:
                name = consumer["name"]
                if (name != self.name and consumer["pending"] == 0
                        and consumer["idle"] > idle_ms
                        and self._forget(keys=[reader.stream], args=[reader.group, name])):
                    deleted.append(f"{reader.stream}/{reader.group}/{name}")
        if deleted:
            log.info("removed %d dead consumers: %s", len(deleted), ", ".join(deleted))
        return deleted


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
