"""Bringing a service's containers in line with its record: the steps shared by the service
commands (workers/services.py) and reconciliation (workers/reconcile.py).

Slots. Replica i of revision r of service s runs in the container named `berth-s.r.i`, and
that container's host port is allocated in Redis to the same name. The engine refuses a
second container of a name, and a port is found again by its owner, so a command redelivered
after its worker died mid-way finds the container or the port the first attempt made and
reuses it: never a second container for a slot, never a leaked port. Everything runs under
the service's lock, so two commands never interleave on one service.

Rollout order (zero downtime): start the wanted containers, wait until every one answers its
health check, point the service's route at them, wait for the drain period, and only then
stop and remove the containers the route no longer targets.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis

from app import redis as keys
from app.errors import BerthError, Conflict, NotFound, Unavailable
from app.events import Event, Publisher
from app.locks import KeptLock
from app.models import (
    LABEL_INSTANCE,
    LABEL_OWNER,
    LABEL_PORT,
    LABEL_REPLICA,
    LABEL_REVISION,
    LABEL_SERVICE,
    Route,
    Service,
    fresh_fields,
    now_s,
)
from app.settings import Settings
from app.stores.base import Extra
from app.stores.health import Health, HealthStore
from app.stores.ports import PortStore
from app.stores.routes import RouteStore
from app.stores.services import ServiceStore
from workers.containers import Container, ContainerSpec, Engine
from workers.health import probe, wait_healthy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceContext:
    """What service commands and reconciliation need, built once per worker process."""

    settings: Settings
    redis: redis.Redis
    publisher: Publisher
    engine: Engine
    services: ServiceStore
    routes: RouteStore
    ports: PortStore
    health: HealthStore
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def create(cls, settings: Settings, client: redis.Redis, publisher: Publisher,
               engine: Engine | None = None) -> ServiceContext:
        first, last = settings.service_ports
        return cls(settings=settings, redis=client, publisher=publisher,
                   engine=engine or Engine(settings.docker_host, pull=settings.image_pull),
                   services=ServiceStore(client), routes=RouteStore(client),
                   ports=PortStore(client, first, last, settings.blocked_ports),
                   health=HealthStore(client))

    @property
    def instance(self) -> str:
        """This installation's id, created by the first worker that asks (read each time:
        it is one GET, and a process must not keep an id the store no longer has)."""
        current = self.redis.get(keys.INSTANCE_ID)
        if current is None:
            self.redis.set(keys.INSTANCE_ID, secrets.token_hex(8), nx=True)
            current = self.redis.get(keys.INSTANCE_ID)
        return current

    def labels(self, service: str | None = None) -> dict[str, str | None]:
        """Label selector of this installation's containers (of one service, or all)."""
        return {LABEL_INSTANCE: self.instance, LABEL_SERVICE: service}

    def emit(self, event_type: str, svc: Service | str, **data) -> None:
        """An event on the service stream; `data.owner` lets the owner's tokens see it."""
        self.publisher.publish("service", _service_event(event_type, svc, data))

    def emit_on_commit(self, event_type: str, svc: Service | str, **data) -> Extra:
        """The same event as a store write's `extra` (app/stores/base.py): written in the
        write's own transaction, so it is stored exactly when the change it reports is."""
        event = _service_event(event_type, svc, data)
        return lambda pipe, _record: self.publisher.stage(pipe, "service", event)


def _service_event(event_type: str, svc: Service | str, data: dict) -> Event:
    if isinstance(svc, Service):
        svc, data = svc.id, {"owner": svc.owner, **data}
    return Event.create(event_type, "worker", svc, data)


# -- names ----------------------------------------------------------------------------------


def container_name(service: str, revision: int, replica: int) -> str:
    return f"berth-{service}.{revision}.{replica}"


def slot_prefix(service: str) -> str:
    # '.' never occurs in a service name, so no service's prefix is another one's.
    return f"berth-{service}."


def wanted_names(svc: Service) -> list[str]:
    return [container_name(svc.id, svc.revision, i) for i in range(svc.replicas)]


def route_id(service: str) -> str:
    return f"rt_svc_{service}"


def host_port(container: Container) -> int:
    return int(container.labels.get(LABEL_PORT, 0))


def local_host(bind: str) -> str:
    """Where the worker and the proxy reach a port published on `bind`."""
    if bind == "0.0.0.0":
        return "127.0.0.1"
    return "::1" if bind == "::" else bind


def target_url(svc: Service, port: int) -> str:
    host = local_host(svc.bind)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# -- the per-service lock ---------------------------------------------------------------------


def service_lock(ctx: ServiceContext, name: str, *, wait: bool = True) -> KeptLock:
    """The service's lock; LockBusy when another command keeps it (longer than the wait)."""
    return KeptLock(ctx.redis, keys.service_lock(name), ttl_s=ctx.settings.service_lock_ttl_s,
                    wait_s=ctx.settings.service_lock_wait_s if wait else 0)


# -- the record -----------------------------------------------------------------------------


def update_record(ctx: ServiceContext, name: str, **changes) -> Service | None:
    """Apply `changes` to the latest record (re-read on a concurrent API update); None when
    the record is gone. A record being deleted keeps its status."""
    for _ in range(10):
        svc = ctx.services.find(name)
        if svc is None:
            return None
        if svc.status == "deleting":
            changes.pop("status", None)
        if all(getattr(svc, k) == v for k, v in changes.items()):
            return svc
        try:
            return ctx.services.update(svc.replace(**changes))
        except Conflict:
            continue
    raise Conflict(f"service {name!r} keeps changing; retrying later")


# -- containers -----------------------------------------------------------------------------


def containers_of(ctx: ServiceContext, name: str) -> dict[str, Container]:
    """Every container of a service, by name, whatever its revision or state."""
    return {c.name: c for c in ctx.engine.list(ctx.labels(name))}


def port_is_bindable(port: int, host: str) -> bool:
    """Whether docker-proxy can listen on the port: nothing listens there. It binds with
    SO_REUSEADDR, so connections still in TIME_WAIT (say, from our own health checks of a
    container just removed) do not count, as they would for a plain bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def slot_port(ctx: ServiceContext, svc: Service, name: str) -> int:
    """The host port of a slot whose container does not exist: the one an earlier attempt
    allocated to it if that port is still free on the host, else a new one."""
    host = svc.bind
    owned = ctx.ports.owned_by(name)
    if owned and port_is_bindable(owned[0], host):
        return owned[0]
    if owned:
        ctx.ports.release_all(name)
    return ctx.ports.allocate(name, is_free=lambda port: port_is_bindable(port, host))


def create_slot(ctx: ServiceContext, svc: Service, replica: int) -> Container:
    name = container_name(svc.id, svc.revision, replica)
    port = slot_port(ctx, svc, name)
    labels = {**svc.labels, LABEL_INSTANCE: ctx.instance, LABEL_SERVICE: svc.id,
              LABEL_OWNER: svc.owner,
              LABEL_REVISION: str(svc.revision), LABEL_REPLICA: str(replica),
              LABEL_PORT: str(port)}
    spec = ContainerSpec(name=name, image=svc.image, internal_port=svc.port, host_port=port,
                         labels=labels, bind=svc.bind, command=svc.command, env=svc.env,
                         memory_mb=svc.memory_mb, cpus=svc.cpus)
    try:
        return ctx.engine.create(spec)
    except Conflict:
        existing = ctx.engine.find(name)  # created since we listed (another attempt)
        if existing is None or existing.labels.get(LABEL_INSTANCE) != ctx.instance:
            raise
        return existing


def ensure_running(ctx: ServiceContext, svc: Service, replica: int,
                   container: Container | None) -> Container:
    """The slot's container, running: created when missing, started when stopped. One that
    the engine refuses to start (its port was taken meanwhile, say) is replaced once."""
    fresh = container is None
    if container is None:
        container = create_slot(ctx, svc, replica)
    if container.running:
        return container
    try:
        ctx.engine.start(container.id)
    except Unavailable:
        raise
    except BerthError:
        if fresh:
            raise
        remove_containers(ctx, svc.id, [container])
        container = create_slot(ctx, svc, replica)
        ctx.engine.start(container.id)
    return ctx.engine.inspect(container.id)


def exit_reason(container: Container) -> str:
    if container.oom_killed:
        return "killed: out of memory"
    if container.error:
        return f"could not start: {container.error}"
    return f"{container.state} with code {container.exit_code}"


def stop_all(ctx: ServiceContext, containers: Iterable[Container]) -> None:
    """Stop the running ones gracefully, all at once (each may take the grace period)."""
    running = [c for c in containers if c.running]
    if running:
        with ThreadPoolExecutor(max_workers=min(len(running), 8)) as pool:
            list(pool.map(lambda c: ctx.engine.stop(c.id, ctx.settings.service_stop_timeout_s),
                          running))


def remove_containers(ctx: ServiceContext, service: str,
                      containers: Iterable[Container]) -> list[str]:
    """Stop, then remove, free the ports of, and forget the health of `containers`."""
    containers = list(containers)
    stop_all(ctx, containers)
    for container in containers:
        ctx.engine.remove(container.id)
        ctx.ports.release_all(container.name)
    ctx.health.forget(service, [c.name for c in containers])
    return [c.name for c in containers]


def release_leaked_ports(ctx: ServiceContext, service: str, live: Iterable[str]) -> list[int]:
    """Free ports allocated to slots of `service` that have no container (an attempt died
    between allocating and creating)."""
    live = set(live)
    prefix = slot_prefix(service)
    allocated = ctx.redis.hgetall(keys.ports_allocated())
    leaked = {owner for owner in allocated.values()
              if owner.startswith(prefix) and owner not in live}
    freed = [int(port) for port, owner in allocated.items() if owner in leaked]
    for owner in leaked:
        ctx.ports.release_all(owner)
    return sorted(freed)


# -- health and routing -----------------------------------------------------------------------


@dataclass
class BringUp:
    """The outcome of starting a service's wanted containers."""

    healthy: dict[str, Container] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # name -> why
    started: dict[str, Container] = field(default_factory=dict)  # every container we touched

    @property
    def complete(self) -> bool:
        return not self.failed


def start_wanted(ctx: ServiceContext, svc: Service, existing: dict[str, Container], *,
                 revive: Callable[[Container | None], bool] = lambda c: True) -> BringUp:
    """Make the record's revision run `replicas` containers (not yet health-checked).

    `revive(container)` decides whether a missing (None) or stopped slot is brought back
    (reconciliation applies the restart policy through it); one it declines counts as failed.
    """
    result = BringUp()
    for replica, name in enumerate(wanted_names(svc)):
        container = existing.get(name)
        if (container is None or not container.running) and not revive(container):
            result.failed[name] = exit_reason(container) if container else "removed"
            continue
        try:
            result.started[name] = ensure_running(ctx, svc, replica, container)
        except Unavailable:
            raise
        except BerthError as ex:
            result.failed[name] = ex.description
    return result


def await_health(ctx: ServiceContext, svc: Service, up: BringUp) -> BringUp:
    """Wait until each started container passes its health check, or fails to in time."""
    host = local_host(svc.bind)
    checks = wait_healthy(
        {name: (host, host_port(c)) for name, c in up.started.items()},
        svc.health["path"], svc.health["timeout_s"], ctx.settings.service_start_timeout_s,
        still_running=lambda name: _not_running(ctx, up.started[name]))
    for name, check in checks.items():
        if check.healthy:
            up.healthy[name] = up.started[name]
        else:
            up.failed[name] = check.error
    ctx.health.record(svc.id, {**checks, **{name: Health(False, why, now_s())
                                            for name, why in up.failed.items()
                                            if name not in checks}})
    return up


def _not_running(ctx: ServiceContext, container: Container) -> str | None:
    current = ctx.engine.find(container.id)
    if current is None:
        return "removed"
    return None if current.running else exit_reason(current)


def check_health(ctx: ServiceContext, svc: Service, containers: Iterable[Container]
                 ) -> dict[str, Health]:
    """One probe of each of `containers` (reconciliation's check of those that run)."""
    host = local_host(svc.bind)
    results = {c.name: probe(host, host_port(c), svc.health["path"], svc.health["timeout_s"])
               for c in containers}
    ctx.health.record(svc.id, results)
    return results


def routed_targets(ctx: ServiceContext, name: str) -> tuple[str, ...]:
    route = ctx.routes.find(route_id(name))
    return route.targets if route is not None else ()


def switch_route(ctx: ServiceContext, svc: Service, containers: Iterable[Container]) -> bool:
    """Point the service's route at `containers` (delete it when there are none, so a
    stopped service is not routed at all); True when the targets changed."""
    by_replica = sorted(containers, key=lambda c: int(c.labels.get(LABEL_REPLICA, 0)))
    targets = tuple(target_url(svc, host_port(c)) for c in by_replica)
    for _ in range(10):
        route = ctx.routes.find(route_id(svc.id))
        try:
            if route is None and not targets:
                return False
            if route is None:
                ctx.routes.create(Route(id=route_id(svc.id), host=svc.hostname,
                                        targets=targets, owner=svc.owner, service=svc.id,
                                        **fresh_fields()))
            elif not targets:
                ctx.routes.delete(route.id)
            elif set(route.targets) == set(targets):
                return False
            else:
                # The worker's own container targets: no longer a user's to vouch for.
                ctx.routes.update(route.replace(targets=targets, restricted=False))
            return True
        except NotFound:
            continue  # deleted under us: read again
        except Conflict:
            if route is None and ctx.routes.find(route_id(svc.id)) is None:
                raise Conflict(f"hostname {svc.hostname} is already routed by another "
                               "route; delete that route or choose another hostname") from None
            continue  # changed under us (an edit of the route's other fields): read again
    raise Conflict(f"the route of service {svc.id!r} keeps changing; retrying later")


def retire(ctx: ServiceContext, svc: Service, containers: Iterable[Container],
           routed_before: Iterable[str]) -> list[str]:
    """Remove containers the route no longer targets, after the drain period when any of
    them was still routed a moment ago (proxies refresh, in-flight requests finish)."""
    containers = list(containers)
    if not containers:
        return []
    routed = set(routed_before)
    if any(target_url(svc, host_port(c)) in routed for c in containers):
        ctx.sleep(ctx.settings.service_drain_ms / 1000)
    return remove_containers(ctx, svc.id, containers)
