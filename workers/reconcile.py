"""Reconciliation: the engine's containers compared with the service records, and repaired.

`reconcile_service(name)` runs under the service's lock, and only when no command holds it
(a command converges the service anyway). For a service whose record says running:

  - a wanted container that exited or was removed behind berth's back is reported
    (service_unhealthy) and brought back when the restart policy says so: `always` after any
    exit, `on-failure` after a non-zero exit code, an OOM kill or a removal, `no` never;
    once healthy it is routed again (service_started, reason "restarted");
  - a running container failing its health check is reported (service_unhealthy, once per
    change) and left out of the route until it passes again; when none passes, the route
    keeps every running container (failing open beats answering nothing);
  - containers of other revisions, or beyond the replica count, are retired.
Containers labelled for a service without a record are orphans: removed, ports freed
(service_orphan_removed). Ports allocated to slots without a container are freed.

`reconcile_services` enqueues reconcile_service for every record and every labelled
container; the scheduler sends it every BERTH_RECONCILE_INTERVAL_S and at start-up.

The engine watcher and the health monitor (workers/watcher.py) enqueue reconcile_service as
soon as a container dies or a health check changes, rather than at the next scheduler tick.
"""

from __future__ import annotations

import logging

import dramatiq

from app.jobs import RECONCILE_SERVICE, RECONCILE_SERVICES, Job, enqueue
from app.locks import LockBusy
from app.models import LABEL_OWNER, LABEL_SERVICE, Service, now_s
from app.stores.health import Health
from workers.containers import Container, EngineUnavailable
from workers.deps import WorkerDeps
from workers.rollout import (
    ServiceContext,
    await_health,
    check_health,
    containers_of,
    exit_reason,
    host_port,
    release_leaked_ports,
    remove_containers,
    retire,
    routed_targets,
    service_lock,
    start_wanted,
    switch_route,
    wanted_names,
)
from workers.watcher import EngineWatcher, WatcherMiddleware

log = logging.getLogger(__name__)


def should_revive(policy: str, container: Container | None) -> bool:
    if policy == "no":
        return False
    if container is None or container.state == "created" or policy == "always":
        return True
    return container.exit_code != 0 or container.oom_killed


def reconcile_service(ctx: ServiceContext, name: str) -> str:
    """Repair one service; returns what was done (for logs and tests)."""
    try:
        with service_lock(ctx, name, wait=False):
            svc = ctx.services.find(name)
            containers = containers_of(ctx, name)
            if svc is None:
                return _remove_orphans(ctx, name, list(containers.values()))
            if svc.status != "running":
                return f"skipped: status {svc.status}"  # the command in flight owns it
            return _repair(ctx, svc, containers)
    except LockBusy:
        return "skipped: a command holds the service"


def _remove_orphans(ctx: ServiceContext, name: str, containers: list[Container]) -> str:
    removed = remove_containers(ctx, name, containers)
    freed = release_leaked_ports(ctx, name, ())
    ctx.health.clear(name)
    if removed:
        owners = sorted({c.labels.get(LABEL_OWNER, "") for c in containers} - {""})
        ctx.emit("service_orphan_removed", name, removed=removed,
                 owner=owners[0] if len(owners) == 1 else "")
    return f"orphans removed: {removed}, ports freed: {freed}"


def _repair(ctx: ServiceContext, svc: Service, containers: dict[str, Container]) -> str:
    wanted = wanted_names(svc)
    known = ctx.health.read(svc.id)
    # A paused container (an operator's doing) is not dead: it only fails its health check.
    down = {n: containers.get(n) for n in wanted
            if n not in containers or containers[n].state not in ("running", "paused")}
    for name, container in down.items():
        reason = exit_reason(container) if container else "removed"
        _report(ctx, svc, known, name, reason, container=container,
                restart=should_revive(svc.restart, container))
    routed = routed_targets(ctx, svc.id)
    running = {n: containers[n] for n in wanted if n not in down}
    checks = check_health(ctx, svc, running.values())
    for name, check in checks.items():
        if not check.healthy:
            _report(ctx, svc, known, name, check.error, container=running[name])
    healthy = {n: c for n, c in running.items() if checks[n].healthy}
    revived: list[str] = []
    started: set[str] = set()
    if down:
        up = start_wanted(ctx, svc, containers, revive=lambda c: should_revive(svc.restart, c))
        up.started = {n: c for n, c in up.started.items() if n in down}
        await_health(ctx, svc, up)
        healthy.update(up.healthy)
        revived, started = sorted(up.healthy), set(up.started)
    serving = healthy or running  # all failing: keep routing to what runs
    switch_route(ctx, svc, [c for _, c in sorted(serving.items())])
    extras = [c for n, c in containers.items() if n not in wanted]
    removed = retire(ctx, svc, extras, routed) if len(healthy) == len(wanted) else []
    release_leaked_ports(ctx, svc.id, (set(containers) | started) - set(removed))
    if revived:
        ctx.emit("service_started", svc, reason="restarted", revision=svc.revision,
                 containers=[{"name": n, "port": host_port(healthy[n])} for n in revived])
    return f"healthy {len(healthy)}/{len(wanted)}, revived {revived}"


def _report(ctx: ServiceContext, svc: Service, known: dict[str, Health], name: str,
            reason: str, *, container: Container | None, restart: bool | None = None) -> None:
    """service_unhealthy, once per change: not again while the stored state says the same."""
    previous = known.get(name)
    if previous is not None and not previous.healthy and previous.error == reason:
        return
    data = {"container": name, "reason": reason, "revision": svc.revision}
    if container is not None:
        data.update(exit_code=container.exit_code, state=container.state)
    if restart is not None:
        data["restart"] = restart
    ctx.emit("service_unhealthy", svc, **data)
    ctx.health.record(svc.id, {name: Health(False, reason, now_s())})


def service_names(ctx: ServiceContext) -> set[str]:
    """Every service with a record or a container of this installation."""
    names, offset = set(), 0
    while True:
        page = ctx.services.list(offset=offset, limit=1000)
        names.update(s.id for s in page)
        if len(page) < 1000:
            break
        offset += 1000
    names.update(c.labels[LABEL_SERVICE] for c in ctx.engine.list(ctx.labels()))
    return names


# -- actors ---------------------------------------------------------------------------------


def register(broker: dramatiq.Broker, deps: WorkerDeps) -> EngineWatcher:
    """The reconcile actors, and the watcher in worker processes."""
    ctx = ServiceContext.create(deps.settings, deps.redis, deps.publisher)

    def send(job: Job, **kwargs) -> None:
        enqueue(broker, job, **kwargs)

    def reconcile_services() -> None:
        try:
            names = service_names(ctx)
        except EngineUnavailable as ex:
            # No retry: the scheduler sends the next one within BERTH_RECONCILE_INTERVAL_S.
            log.warning("reconcile_services skipped: %s", ex.description)
            return
        for name in sorted(names):
            send(RECONCILE_SERVICE, service=name)
        log.info("reconcile_services: %d services queued", len(names))

    def reconcile_one(service: str) -> None:
        log.info("reconcile %s: %s", service, reconcile_service(ctx, service))

    dramatiq.actor(reconcile_services, broker=broker, actor_name=RECONCILE_SERVICES.actor_name,
                   queue_name=RECONCILE_SERVICES.queue_name)
    dramatiq.actor(reconcile_one, broker=broker, actor_name=RECONCILE_SERVICE.actor_name,
                   queue_name=RECONCILE_SERVICE.queue_name)
    watcher = EngineWatcher(ctx, send)
    broker.add_middleware(WatcherMiddleware(watcher))
    return watcher
