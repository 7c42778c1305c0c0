"""Service commands: record the desired state, enqueue the work, return at once.

The API (/api/v1/services) calls these; workers/services.py converges the engine to the
record. Every command first asks the container engine whether it answers, so while it is
down commands fail at once with a clear 503 instead of queueing work that cannot run, and
nothing else in berth notices. Reads (show, logs) go to the engine directly.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

import dramatiq

from app import redis as keys
from app.errors import Conflict, Unavailable, ValidationError
from app.jobs import (
    CREATE_SERVICE,
    DELETE_SERVICE,
    REDEPLOY_SERVICE,
    RESTART_SERVICE,
    SCALE_SERVICE,
    START_SERVICE,
    STOP_SERVICE,
    Job,
    enqueue,
)
from app.models import (
    LABEL_INSTANCE,
    LABEL_PORT,
    LABEL_REPLICA,
    LABEL_REVISION,
    LABEL_SERVICE,
    Service,
    check_hostname,
    check_int,
    fresh_fields,
)
from app.settings import Settings
from app.stores.health import HealthStore
from app.stores.routes import RouteStore
from app.stores.services import ServiceStore


class ContainerInfo(Protocol):
    id: str
    name: str
    state: str
    labels: Mapping[str, str]

    def public(self) -> dict: ...


class ContainerEngine(Protocol):
    """What the API needs of workers.containers.Engine (injected by the web process)."""

    base_url: str

    def ping(self) -> None: ...

    def list(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]: ...

    def logs(self, container_id: str, *, tail: int | None = 100,
             follow: bool = False) -> Iterator[bytes]: ...


class NoEngine:
    """The engine of an API built without one (in-process tests, tools): every engine call
    is Unavailable (503), so records can still be listed and shown."""

    base_url = "(none)"

    def ping(self) -> None:
        raise Unavailable("no container engine is configured in this API process")

    def list(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]:
        self.ping()
        return []

    def logs(self, container_id: str, *, tail: int | None = 100,
             follow: bool = False) -> Iterator[bytes]:
        self.ping()
        return iter(())


class ServiceCommands:
    def __init__(self, settings: Settings, services: ServiceStore, routes: RouteStore,
                 health: HealthStore, broker: dramatiq.Broker, engine: ContainerEngine):
        self.settings = settings
        self.store = services
        self.routes = routes
        self.health = health
        self.broker = broker
        self.engine = engine

    # -- commands -----------------------------------------------------------------------

    def create(self, fields: dict, owner: str) -> Service:
        """Store a new service (fields from Service.clean) and enqueue its deployment."""
        hostname = fields.pop("hostname", None) or check_hostname(
            f"{fields['id']}.{self.settings.base_domain}", "hostname")
        self._check_host_free(fields["id"], hostname)
        self._engine_answers()
        svc = Service(owner=owner, hostname=hostname, status="pending", revision=1,
                      **fields, **fresh_fields())
        svc = self.store.create(svc)
        return self._send(CREATE_SERVICE, svc)

    def start(self, svc: Service) -> Service:
        self._not_deleting(svc)
        self._engine_answers()
        return self._send(START_SERVICE, svc)

    def stop(self, svc: Service) -> Service:
        self._not_deleting(svc)
        self._engine_answers()
        return self._send(STOP_SERVICE, svc)

    def restart(self, svc: Service) -> Service:
        self._running(svc, "restarted")
        self._engine_answers()
        return self._send(RESTART_SERVICE, svc)

    def scale(self, svc: Service, replicas: int) -> Service:
        self._running(svc, "scaled")
        replicas = check_int(replicas, "replicas", 1, Service.MAX_REPLICAS)
        self._engine_answers()
        svc = self.store.update(svc.replace(replicas=replicas))
        return self._send(SCALE_SERVICE, svc)

    def redeploy(self, svc: Service, changes: dict) -> Service:
        """A new revision (with `changes` from Service.clean(REDEPLOY_FIELDS, partial))."""
        self._running(svc, "redeployed")
        self._engine_answers()
        svc = self.store.update(svc.replace(revision=svc.revision + 1, **changes))
        return self._send(REDEPLOY_SERVICE, svc)

    def delete(self, svc: Service) -> Service:
        self._engine_answers()
        if svc.status != "deleting":
            svc = self.store.update(svc.replace(status="deleting"))
        return self._send(DELETE_SERVICE, svc)

    def _send(self, job: Job, svc: Service) -> Service:
        enqueue(self.broker, job, service=svc.id)
        return svc

    def _engine_answers(self) -> None:
        try:
            self.engine.ping()
        except Unavailable as ex:
            raise Unavailable(f"{ex.description}; service commands are unavailable until it "
                              "answers (routes, certificates and events are unaffected)") from ex

    def _check_host_free(self, name: str, hostname: str) -> None:
        route_id = self.routes.lookup("host_path", f"{hostname} /")
        route = self.routes.find(route_id) if route_id else None
        if route is not None and route.service != name:
            # Not naming the route: it may be another owner's.
            raise Conflict(f"hostname {hostname} is already routed; choose another hostname",
                           field="hostname")

    @staticmethod
    def _not_deleting(svc: Service) -> None:
        if svc.status == "deleting":
            raise Conflict(f"service {svc.id!r} is being deleted")

    def _running(self, svc: Service, what: str) -> None:
        self._not_deleting(svc)
        if svc.status in ("stopped", "pending"):
            raise Conflict(f"service {svc.id!r} is {svc.status}; it can be {what} once "
                           "it runs (start it first)")

    # -- reads --------------------------------------------------------------------------

    def containers(self, svc: Service) -> list[dict]:
        """The service's containers as the engine reports them, with their last health."""
        health = self.health.read(svc.id)
        shown = []
        for container in self._containers(svc.id):
            labels = container.labels
            check = health.get(container.name)
            shown.append({**container.public(), "revision": int(labels.get(LABEL_REVISION, 0)),
                          "replica": int(labels.get(LABEL_REPLICA, 0)),
                          "port": int(labels.get(LABEL_PORT, 0)),
                          "current": int(labels.get(LABEL_REVISION, 0)) == svc.revision,
                          "health": check.public() if check else None})
        return shown

    def _containers(self, name: str) -> list[ContainerInfo]:
        instance = self.store.client.get(keys.INSTANCE_ID)
        if instance is None:  # no worker has run a container yet
            return []
        return self.engine.list({LABEL_INSTANCE: instance, LABEL_SERVICE: name})

    def logs(self, svc: Service, *, tail: int | None, follow: bool,
             container: str | None = None) -> LogLines:
        """Log lines of the current revision's containers (or of one named container),
        each prefixed with its container's name when there are several."""
        found = self._containers(svc.id)
        if container is not None:
            chosen = [c for c in found if c.name == container]
            if not chosen:
                raise ValidationError(f"service {svc.id!r} has no container {container!r}",
                                      field="container")
        else:
            chosen = [c for c in found
                      if int(c.labels.get(LABEL_REVISION, 0)) == svc.revision] or found
        streams = {c.name: self.engine.logs(c.id, tail=tail, follow=follow) for c in chosen}
        return LogLines(streams, prefix=len(streams) > 1)


class LogLines:
    """Lines from several log streams, interleaved as they arrive; iterate once, then (or
    to stop early, e.g. when the client went away) call close()."""

    _DONE = object()

    def __init__(self, streams: Mapping[str, Iterable[bytes]], *, prefix: bool):
        self.streams = dict(streams)
        self.prefix = prefix
        self._queue: queue.Queue = queue.Queue(maxsize=1000)  # a slow client slows the readers
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for name, stream in self.streams.items():
            threading.Thread(target=self._pump, args=(name, stream), daemon=True,
                             name=f"logs {name}").start()
        remaining = len(self.streams)
        while remaining:
            item = self._queue.get()
            if item is self._DONE:
                remaining -= 1
            else:
                yield item

    def _pump(self, name: str, stream: Iterable[bytes]) -> None:
        label = f"{name} | ".encode() if self.prefix else b""
        pending = b""
        try:
            for chunk in stream:
                if self._closed.is_set():
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._put(label + line + b"\n")
            if pending:
                self._put(label + pending + b"\n")
        except Exception:  # a stream closed under us (client gone) ends this reader
            if not self._closed.is_set():
                self._put(label + b"[berth: the log stream broke off]\n")
        finally:
            self._put(self._DONE)

    def _put(self, item) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self._closed.set()
        for stream in self.streams.values():
            close = getattr(stream, "close", None)
            if close is not None:
                close()
