"""Services on a Docker engine for the fault tests: the commands the API runs, the real worker
process that carries them out (SIGKILLed and started again by the tests), and what to check."""

from __future__ import annotations

from collections.abc import Callable

from app import redis as keys
from app.events import Event
from app.services import ServiceCommands
from app.settings import Settings
from app.stores.health import HealthStore
from app.stores.routes import RouteStore
from app.stores.services import ServiceStore
from app.tracing import trace_context
from harness.docker import TEST_LABEL
from harness.procs import wait_until
from tests.acme.conftest import start_worker
from tests.acme.test_certificates_e2e import _requeue_messages_of_dead_workers
from tests.docker.conftest import HEALTH
from tests.e2e.conftest import request
from workers.broker import create_broker
from workers.containers import Engine
from workers.rollout import route_id

SLOW_START = ["sh", "-c", "sleep 2; exec sh /start.sh"]  # serving starts 2 s late


class Services:
    """The commands the API runs, the worker that carries them out, and what to check."""

    def __init__(self, redis_client, redis_url: str, docker_url: str, image: str, proxy,
                 log_dir, drain_ms: int):
        self.redis = redis_client
        self.settings = Settings.from_env({}, redis_url=redis_url, docker_host=docker_url)
        self.broker = create_broker(self.settings)
        self.engine = Engine(docker_url, pull="never")
        self.store = ServiceStore(redis_client)
        self.commands = ServiceCommands(self.settings, self.store, RouteStore(redis_client),
                                        HealthStore(redis_client), self.broker, self.engine)
        self.image = image
        self.proxy = proxy
        self.log_dir = log_dir
        # Short waits so a redelivered command is not held up by the dead worker's lock.
        self.env = {"REDIS_URL": redis_url, "DOCKER_HOST": docker_url,
                    "BERTH_IMAGE_PULL": "never", "BERTH_SERVICE_DRAIN_MS": str(drain_ms),
                    "BERTH_SERVICE_START_TIMEOUT_S": "20", "BERTH_SERVICE_STOP_TIMEOUT_S": "5",
                    "BERTH_SERVICE_LOCK_TTL_S": "3", "BERTH_LOG_FORMAT": "text"}
        self.workers = 0
        self.worker = self.start_worker()

    def start_worker(self, **env: str):
        """A worker process; `env` overrides this suite's (e.g. its REDIS_URL)."""
        self.workers += 1
        return start_worker({**self.env, **env}, self.log_dir / f"worker-{self.workers}.log")

    def create(self, name: str = "web", **fields) -> None:
        """Create a service as the API would, and wait until the proxy serves it."""
        with trace_context(None) as trace:
            self.commands.create({"id": name, "image": self.image, "port": 8080,
                                  "health": HEALTH, "labels": {TEST_LABEL: "1"}, **fields},
                                 "alice")
        self.finished(trace, "service_started")
        wait_until(lambda: self.serving(name), what=f"{name} served")

    def send(self, action: str, *args, name: str = "web") -> str:
        """Run a command on a service as the API would; returns its trace id."""
        with trace_context(None) as trace:
            getattr(self.commands, action)(self.store.get(name), *args)
        return trace

    def events(self, trace: str) -> list[Event]:
        return [e for e in (Event.from_entry(*x)
                            for x in self.redis.xrange(keys.stream("service")))
                if e.trace_id == trace]

    def finished(self, trace: str, event_type: str) -> Event:
        """The command's last event, once it is there; it must be `event_type`."""
        def last():
            return next((e for e in self.events(trace)
                         if e.type in (event_type, "service_failed")), None)
        done = wait_until(last, timeout=60, interval=0.1, what=f"{event_type} of {trace}")
        assert done.type == event_type, done.data
        return done

    def events_of(self, event_type: str) -> list[Event]:
        return [e for e in (Event.from_entry(*x)
                            for x in self.redis.xrange(keys.stream("service")))
                if e.type == event_type]

    def count(self, trace: str, event_type: str) -> int:
        return sum(1 for e in self.events(trace) if e.type == event_type)

    def serving(self, name: str = "web") -> bool:
        """Both proxy workers route the service (new connections land on either)."""
        return all(request(self.proxy.port, "GET", "/id.txt", f"{name}.localhost")[0] == 200
                   for _ in range(4))

    def containers(self, name: str = "web", running_only: bool = False) -> list[str]:
        return sorted(c.name for c in self.engine.list({"berth.service": name})
                      if c.running or not running_only)

    def ports(self) -> list[str]:
        return sorted(self.redis.hgetall(keys.ports_allocated()).values())

    def routed(self, name: str = "web") -> bool:
        return self.redis.exists(keys.record("route", route_id(name))) == 1

    def kill_and_redeliver(self, then: Callable[[], None] = lambda: None) -> None:
        """SIGKILL the worker; run `then` (what happens to a request it left held); requeue
        what it held, as Dramatiq would a minute later; start a new one."""
        self.worker.kill()
        then()
        _requeue_messages_of_dead_workers(self.settings, "services")
        self.worker = self.start_worker()

    def redelivery_done(self) -> None:
        """Every service command acknowledged: any event it would publish is published."""
        wait_until(lambda: self.redis.hlen("dramatiq:services.msgs") == 0, timeout=60,
                   what="the service commands done")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-6000:]
                         for p in sorted(self.log_dir.glob("worker-*.log")))

    def close(self) -> None:
        self.worker.stop()
        for container in self.engine.list({"berth.service": None, TEST_LABEL: "1"}):
            self.engine.remove(container.id)
        self.engine.close()
        self.broker.close()
