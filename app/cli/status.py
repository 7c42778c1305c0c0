"""`berth status`: is Redis answering and accepting writes, which components are alive, which
scheduler leads, whether the container engine answers, how long the streams are, how far
behind the consumer groups are and how deep the work queues are. Its exit status says whether
all is well, so a script or a monitor can run it."""

from __future__ import annotations

import argparse

from app.cli.client import ApiClient
from app.cli.output import ago, clean, emit_json, number, say, table

STATUS_PATH = "/api/v1/orchestrator/status"

HEALTHY = 0
REDIS_DOWN = 3  # unreachable, or refusing writes (MISCONF, OOM, READONLY...)
COMPONENT_STALE = 4  # a component stopped beating, or reports a failing loop

EXIT_STATUS = (
    "Exit status: 0 healthy; 1 the API could not be asked (one line on stderr); 2 bad "
    f"usage; {REDIS_DOWN} Redis is unreachable or refusing writes; {COMPONENT_STALE} a "
    "component is stale (no heartbeat for BERTH_HEARTBEAT_STALE_S) or degraded (beating, "
    "with a loop failing). The container engine and the scheduler leader are shown, not "
    "counted. --json prints the API's document and exits the same way.")


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "status", parents=[common], help="health of Redis, components, streams and queues",
        description="Show the platform's health: Redis, each component's heartbeat (alive, "
                    "degraded, stale; removed 10 minutes after its last beat), the scheduler "
                    "leader, the container engine, stream lengths, consumer-group lag and "
                    "pending, queue depths.",
        epilog=EXIT_STATUS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, client: ApiClient) -> int:
    status = client.get(STATUS_PATH).data
    if args.json:
        emit_json(status)
    else:
        say(render(status, client.base_url))
    return exit_status(status)


def exit_status(status: dict) -> int:
    if not (status.get("redis") or {}).get("ok"):
        return REDIS_DOWN
    if any(_state(c) != "alive" for c in status.get("components") or []):
        return COMPONENT_STALE
    return HEALTHY


def _state(component: dict) -> str:
    """alive, degraded or stale (an API without states: from `alive`)."""
    return component.get("state") or ("alive" if component.get("alive") else "stale")


def _components(count: int) -> str:
    return f"{count} component{'' if count == 1 else 's'}"


def _tenths(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _redis_line(redis: dict) -> str:
    latency = number(redis.get("latency_ms"), " ms", 2)
    if redis.get("ok"):
        return "Redis: ok" + (f", {latency}" if latency else "")
    if redis.get("reachable"):
        return f"Redis: REFUSING WRITES: {redis.get('error') or 'unknown reason'}"
    return "Redis: DOWN" + (f": {redis['error']}" if redis.get("error") else "")


def _leader_line(status: dict) -> str | None:
    if "scheduler_leader" not in status:
        return None  # an API that does not say
    leader = status["scheduler_leader"]
    if not leader:
        return "Scheduler leader: NONE"
    term = f" (term {leader['term']})" if leader.get("term") is not None else ""
    return f"Scheduler leader: {leader.get('instance')}{term}"


def _engine_line(status: dict) -> str | None:
    engine = status.get("engine")
    if not engine:
        return None
    if engine.get("reachable"):
        return f"Container engine: reachable at {engine.get('url')}"
    return f"Container engine: UNREACHABLE: {engine.get('error') or engine.get('url')}"


def _lag(group: dict):
    lag = group.get("lag")
    return f"{lag}+" if lag is not None and group.get("lag_capped") else lag


def render(status: dict, url: str) -> str:
    components = status.get("components") or []
    stale = [c for c in components if _state(c) == "stale"]
    degraded = [c for c in components if _state(c) == "degraded"]
    redis = status.get("redis") or {}

    def named(found: list[dict]) -> str:
        return ", ".join(f"{c.get('component')} ({c.get('instance')})" for c in found)

    parts = []
    if stale:
        parts.append(f"{len(stale)} of {_components(len(components))} DOWN: {named(stale)}")
    if degraded:
        parts.append(f"{len(degraded)} degraded: {named(degraded)}")
    if parts:
        summary = "; ".join(parts)
    elif components:
        summary = f"{'all ' if len(components) > 1 else ''}{_components(len(components))} alive"
    else:
        summary = "no component has reported yet"
    lines = [clean(f"berth at {url}: {summary}"), "", clean(_redis_line(redis))]
    lines += [clean(line) for line in (_leader_line(status), _engine_line(status)) if line]

    def section(title: str, headers: list[str], rows: list[list]) -> None:
        lines.extend(["", f"{title}:", table(headers, rows, indent="  ") if rows else "  (none)"])

    state_names = {"alive": "alive", "degraded": "DEGRADED", "stale": "DOWN"}
    section("Components", ["COMPONENT", "INSTANCE", "STATE", "LAST SEEN"],
            [[c.get("component"), c.get("instance"), state_names.get(_state(c), _state(c)),
              ago(c.get("age_s"))] for c in components])
    for c in degraded:
        lines.append(clean(f"  {c.get('component')} ({c.get('instance')}): {c.get('reason')}"))
    section("Streams", ["STREAM", "LENGTH"],
            [[name, length] for name, length in (status.get("streams") or {}).items()])
    section("Consumer groups", ["STREAM", "GROUP", "CONSUMERS", "PENDING", "LAG", "LAG (S)"],
            [[g.get("stream"), g.get("group"), g.get("consumers"), g.get("pending"),
              _lag(g), _tenths(g.get("lag_seconds"))]
             for g in status.get("consumer_groups") or []])
    section("Queues", ["QUEUE", "DEPTH"],
            [[name, depth] for name, depth in (status.get("queues") or {}).items()])
    return "\n".join(lines)
