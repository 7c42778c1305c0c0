"""Service commands as Dramatiq actors: create, start, stop, restart, redeploy, scale, delete.

The API writes the desired state to the service record (a new record, more replicas, a bumped
revision with a new image...) and sends the command; its actor converges the engine to the
record under the service's lock (see workers/rollout.py for why that is idempotent).

Events, domain "service", each on the trace id of the command that caused it:

    service_created     create: the containers exist (not yet healthy)
    service_started     create/start/restart: healthy and routable
    service_redeployed  redeploy: the new revision serves, the old one is gone
    service_scaled      scale: the route targets the new number of healthy replicas
    service_stopped     stop: unrouted, containers stopped (kept, with their ports)
    service_deleted     delete: no container, no port, no route, no record
    service_failed      any command that could not finish; what served before still serves

A command that fails on the service itself (image missing, health check failing, hostname
taken, engine down) sets the record's status to failed and publishes service_failed; it is not
retried. A busy lock or an unreachable Redis raises, so Dramatiq retries the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import dramatiq

from app.errors import BerthError, Unavailable
from app.jobs import (
    CREATE_SERVICE,
    DELETE_SERVICE,
    REDEPLOY_SERVICE,
    RESTART_SERVICE,
    SCALE_SERVICE,
    START_SERVICE,
    STOP_SERVICE,
    Job,
)
from app.models import Service
from workers.containers import EngineUnavailable
from workers.deps import WorkerDeps
from workers.rollout import (
    BringUp,
    ServiceContext,
    await_health,
    containers_of,
    host_port,
    release_leaked_ports,
    remove_containers,
    retire,
    route_id,
    routed_targets,
    service_lock,
    start_wanted,
    stop_all,
    switch_route,
    target_url,
    update_record,
    wanted_names,
)

log = logging.getLogger(__name__)


class CommandFailed(Exception):
    """Raised inside a command when the service cannot reach the state asked for."""

    def __init__(self, description: str, **data):
        super().__init__(description)
        self.description = description
        self.data = data


def run_command(ctx: ServiceContext, name: str, command: str,
                body: Callable[[Service], None]) -> None:
    """Run `body` on the service under its lock; a failure of the service (not of Redis)
    marks it failed and publishes service_failed."""
    with service_lock(ctx, name):
        svc = ctx.services.find(name)
        if svc is None or (svc.status == "deleting" and command != "delete"):
            log.info("%s %s: nothing to do (status %s)", command, name,
                     svc.status if svc else "deleted")
            return
        try:
            body(svc)
            log.info("%s %s: done", command, name)
        except CommandFailed as ex:
            _mark_failed(ctx, name, command, ex.description, **ex.data)
        except EngineUnavailable as ex:
            _mark_failed(ctx, name, command, ex.description)
        except Unavailable:
            raise  # Redis: nothing can be recorded; Dramatiq retries
        except BerthError as ex:
            _mark_failed(ctx, name, command, ex.description)
        finally:
            # A command's last event is what `--wait` waits for: write it now rather than
            # with the Publisher's next batch (lifecycle events are few).
            ctx.publisher.flush(timeout=2.0)


def _mark_failed(ctx: ServiceContext, name: str, command: str, error: str, **data) -> None:
    log.warning("%s %s failed: %s", command, name, error)
    svc = update_record(ctx, name, status="failed", error=error[:2000])
    ctx.emit("service_failed", svc or name, command=command, error=error, **data)


# -- deploying (create, start, redeploy, scale) --------------------------------------------------


def converge(ctx: ServiceContext, svc: Service, *, on_started: Callable[[BringUp], None]
             = lambda up: None) -> dict:
    """Run and route the record's wanted containers, then retire every other one.

    Raises CommandFailed when a wanted container does not become healthy: the containers
    that serve no traffic are stopped (kept for their logs), and the route keeps what it
    targeted, so a failed redeploy or scale leaves the previous containers serving."""
    svc = update_record(ctx, svc.id, status="deploying", error="") or svc
    existing = containers_of(ctx, svc.id)
    routed = routed_targets(ctx, svc.id)
    up = start_wanted(ctx, svc, existing)
    on_started(up)
    await_health(ctx, svc, up)
    if not up.complete:
        stop_all(ctx, [c for c in up.started.values()
                       if target_url(svc, host_port(c)) not in routed])
        release_leaked_ports(ctx, svc.id, set(existing) | set(up.started))
        raise CommandFailed("; ".join(f"{n}: {why}" for n, why in sorted(up.failed.items())),
                            revision=svc.revision, failed=up.failed)
    switch_route(ctx, svc, up.healthy.values())
    extras = [c for name, c in existing.items() if name not in up.healthy]
    removed = retire(ctx, svc, extras, routed)
    release_leaked_ports(ctx, svc.id, up.healthy)
    update_record(ctx, svc.id, status="running", error="")
    return {"revision": svc.revision, "replicas": svc.replicas, "image": svc.image,
            "containers": _describe(up.healthy.values()), "removed": removed,
            "route": route_id(svc.id), "hostname": svc.hostname}


def _describe(containers) -> list[dict]:
    return [{"name": c.name, "id": c.id[:12], "port": host_port(c)} for c in containers]


def create(ctx: ServiceContext, name: str) -> None:
    def body(svc: Service) -> None:
        def created(up: BringUp) -> None:
            if up.started:
                ctx.emit("service_created", svc, revision=svc.revision, image=svc.image,
                         containers=_describe(up.started.values()))

        ctx.emit("service_started", svc, **converge(ctx, svc, on_started=created))

    run_command(ctx, name, "create", body)


def start(ctx: ServiceContext, name: str) -> None:
    run_command(ctx, name, "start",
                lambda svc: ctx.emit("service_started", svc, **converge(ctx, svc)))


def redeploy(ctx: ServiceContext, name: str) -> None:
    run_command(ctx, name, "redeploy",
                lambda svc: ctx.emit("service_redeployed", svc, **converge(ctx, svc)))


def scale(ctx: ServiceContext, name: str) -> None:
    def body(svc: Service) -> None:
        before = len([c for c in containers_of(ctx, name).values() if c.running])
        ctx.emit("service_scaled", svc, previous=before, **converge(ctx, svc))

    run_command(ctx, name, "scale", body)


# -- restart, stop, delete ---------------------------------------------------------------------


def restart(ctx: ServiceContext, name: str) -> None:
    """Restart the wanted containers one at a time, each out of the route while it restarts
    (so with several replicas the service keeps serving), then converge."""

    def body(svc: Service) -> None:
        existing = containers_of(ctx, name)
        current = [existing[n] for n in wanted_names(svc) if n in existing]
        for container in current:
            others = [c for c in current if c.name != container.name and c.running]
            if others:
                routed = routed_targets(ctx, name)
                switch_route(ctx, svc, others)
                if target_url(svc, host_port(container)) in routed:
                    ctx.sleep(ctx.settings.service_drain_ms / 1000)
            ctx.engine.restart(container.id, ctx.settings.service_stop_timeout_s)
            up = BringUp(started={container.name: ctx.engine.inspect(container.id)})
            if not await_health(ctx, svc, up).complete:
                raise CommandFailed(f"{container.name}: {up.failed[container.name]}",
                                    failed=up.failed)
        ctx.emit("service_started", svc, restarted=[c.name for c in current],
                 **converge(ctx, svc))

    run_command(ctx, name, "restart", body)


def stop(ctx: ServiceContext, name: str) -> None:
    """Unroute, drain, then stop every container of the service (kept, with its port, so a
    start reuses it)."""

    def body(svc: Service) -> None:
        routed = routed_targets(ctx, name)
        switch_route(ctx, svc, [])
        running = [c for c in containers_of(ctx, name).values() if c.running]
        if routed and running:
            ctx.sleep(ctx.settings.service_drain_ms / 1000)
        stop_all(ctx, running)
        ctx.health.clear(name)
        update_record(ctx, name, status="stopped", error="")
        ctx.emit("service_stopped", svc, containers=_describe(running))

    run_command(ctx, name, "stop", body)


def delete(ctx: ServiceContext, name: str) -> None:
    """Remove the route, the containers, their ports and health, then the record (last, so a
    redelivered delete still finds what is left to do) together with service_deleted, in one
    transaction: a redelivery that finds no record has nothing left to report either."""

    def body(svc: Service) -> None:
        routed = routed_targets(ctx, name)
        switch_route(ctx, svc, [])
        containers = list(containers_of(ctx, name).values())
        if routed and any(c.running for c in containers):
            ctx.sleep(ctx.settings.service_drain_ms / 1000)
        removed = remove_containers(ctx, name, containers)
        freed = release_leaked_ports(ctx, name, ())
        ctx.health.clear(name)
        ctx.services.delete(name, extra=ctx.emit_on_commit(
            "service_deleted", svc, removed=removed, leaked_ports_freed=freed))

    run_command(ctx, name, "delete", body)


COMMANDS: dict[Job, Callable[[ServiceContext, str], None]] = {
    CREATE_SERVICE: create, START_SERVICE: start, STOP_SERVICE: stop,
    RESTART_SERVICE: restart, REDEPLOY_SERVICE: redeploy, SCALE_SERVICE: scale,
    DELETE_SERVICE: delete,
}


def register(broker: dramatiq.Broker, deps: WorkerDeps) -> ServiceContext:
    ctx = ServiceContext.create(deps.settings, deps.redis, deps.publisher)
    for job, command in COMMANDS.items():
        dramatiq.actor(_bind(ctx, command), broker=broker, actor_name=job.actor_name,
                       queue_name=job.queue_name)
    return ctx


def _bind(ctx: ServiceContext, command: Callable[[ServiceContext, str], None]):
    def run(service: str) -> None:
        command(ctx, service)

    run.__name__ = command.__name__
    return run
