"""Noticing trouble between reconciliation passes: the engine's event stream and health checks.

Both run as threads of a worker process (middleware starts them after the worker boots: the
worker is where engine clients live), and only in the one process that holds the watcher
lease in Redis, so N worker processes do not report everything N times. Neither repairs
anything: each enqueues reconcile_service for the service concerned, which repairs, routes
and reports under the service's lock (workers/reconcile.py).

  - EngineWatcher follows the engine's die/destroy/oom events of berth's containers. Each
    (re)subscription also enqueues reconcile_services, covering whatever happened while
    nobody was watching.
  - HealthMonitor probes the containers of every running service each `health.interval_s`,
    and asks for a reconciliation when a result disagrees with the stored one (a container
    stopped answering, or answers again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from dramatiq.middleware import Middleware

from app import redis as keys
from app.background import Backoff
from app.errors import Unavailable
from app.jobs import RECONCILE_SERVICE, RECONCILE_SERVICES
from app.locks import KeptLock, LockBusy
from app.models import LABEL_SERVICE
from workers.health import probe
from workers.rollout import ServiceContext, local_host, wanted_names

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(self, ctx: ServiceContext, send: Callable[..., object],
                 clock: Callable[[], float] = time.monotonic):
        self.ctx = ctx
        self.send = send  # send(job, **kwargs)
        self.clock = clock
        self._next: dict[str, float] = {}  # service -> when its next check is due

    def tick(self) -> list[str]:
        """Check the services that are due; returns those sent for reconciliation."""
        now = self.clock()
        ports = {owner: int(port) for port, owner in
                 self.ctx.redis.hgetall(keys.ports_allocated()).items()}
        running = [s for s in self.ctx.services.list(limit=10_000) if s.status == "running"]
        self._next = {s.id: self._next.get(s.id, 0.0) for s in running}
        sent = []
        for svc in running:
            if self._next[svc.id] > now:
                continue
            self._next[svc.id] = now + svc.health["interval_s"]
            known = self.ctx.health.read(svc.id)
            for name in wanted_names(svc):
                if name not in ports:
                    continue
                result = probe(local_host(svc.bind), ports[name], svc.health["path"],
                               svc.health["timeout_s"])
                previous = known.get(name)
                if previous is None or previous.healthy != result.healthy:
                    log.info("health of %s changed: %s", name, result.error or "healthy")
                    self.send(RECONCILE_SERVICE, service=svc.id)
                    sent.append(svc.id)
                    break
        return sent

    def run(self, until: threading.Event, every_s: float = 1.0) -> None:
        backoff = Backoff("health monitor", log, first_s=every_s, max_s=10.0)
        wait = every_s
        while not until.wait(wait):
            try:
                self.tick()
                backoff.succeeded()
                wait = every_s
            except (Unavailable, redis.RedisError) as ex:
                wait = backoff.failed(ex)


class EngineWatcher:
    """Holds the watcher lease, then follows the engine's events and runs the monitor."""

    def __init__(self, ctx: ServiceContext, send: Callable[..., object], *,
                 lease_s: float = 15.0, retry_s: float = 2.0):
        self.ctx = ctx
        self.send = send
        self.lease_s = lease_s
        self.retry_s = retry_s
        self.monitor = HealthMonitor(ctx, send)
        self.stop_event = threading.Event()
        self.following = threading.Event()  # set while this process follows the stream
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="berth-engine-watcher",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        # Redis (the lease) and the engine fail independently: one state each.
        redis_state = Backoff("engine watcher (Redis)", log, first_s=self.retry_s, max_s=10.0)
        engine_state = Backoff("engine watcher (engine)", log, first_s=self.retry_s,
                               max_s=10.0, report=False)  # the engine's outage is not ours
        while not self.stop_event.is_set():
            wait = 0.5  # the engine ended the stream (restarting?): subscribe again
            try:
                with KeptLock(self.ctx.redis, keys.engine_watcher_lease(),
                              ttl_s=self.lease_s) as lease:
                    redis_state.succeeded()
                    self._follow(lease.lost)
                    engine_state.succeeded()
            except LockBusy:
                redis_state.succeeded()
                wait = self.lease_s / 3  # another process follows the stream
            except Unavailable as ex:
                wait = engine_state.failed(ex)
            except redis.RedisError as ex:  # the lease lives in Redis: wait the outage out
                wait = redis_state.failed(ex)
            except Exception:
                log.exception("engine watcher failed; restarting it")
                wait = self.retry_s
            self.stop_event.wait(wait)

    def _follow(self, lost: threading.Event) -> None:
        stream = self.ctx.engine.events(self.ctx.labels())
        done = threading.Event()

        def close_when_stopped() -> None:
            while not done.is_set():
                if self.stop_event.wait(0.5) or lost.is_set():
                    done.set()
                    stream.close()

        threading.Thread(target=close_when_stopped, name="berth-watcher-closer",
                         daemon=True).start()
        threading.Thread(target=self.monitor.run, args=(done,), name="berth-health-monitor",
                         daemon=True).start()
        try:
            self.following.set()
            self.send(RECONCILE_SERVICES)  # what happened while nobody was watching
            for event in stream:
                name = event.labels.get(LABEL_SERVICE)
                if name:
                    log.info("engine: %s %s of service %s", event.action,
                             event.container_id[:12], name)
                    self.send(RECONCILE_SERVICE, service=name)
        except Exception:  # reading a stream closed under us fails in assorted ways
            if not done.is_set():
                raise
        finally:
            done.set()
            self.following.clear()
            stream.close()


class WatcherMiddleware(Middleware):
    """Runs the watcher in worker processes (not in processes that only enqueue)."""

    def __init__(self, watcher: EngineWatcher):
        self.watcher = watcher

    def after_worker_boot(self, broker, worker):
        self.watcher.start()

    def before_worker_shutdown(self, broker, worker):
        self.watcher.stop()
