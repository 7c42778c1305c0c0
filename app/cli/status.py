"""`berth status`: is Redis answering, which components are alive, how long the streams are,
how far behind the consumer groups are and how deep the work queues are."""

from __future__ import annotations

import argparse

from app.cli.client import ApiClient
from app.cli.output import ago, clean, emit_json, number, say, table

STATUS_PATH = "/api/v1/orchestrator/status"


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "status", parents=[common], help="health of Redis, components, streams and queues",
        description="Show the platform's health. Exits 0 when the API reports it, even with "
                    "a component down (shown as DOWN); --json prints the API's document.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, client: ApiClient) -> int:
    status = client.get(STATUS_PATH).data
    if args.json:
        emit_json(status)
    else:
        say(render(status, client.base_url))
    return 0


def _components(count: int) -> str:
    return f"{count} component{'' if count == 1 else 's'}"


def _tenths(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def render(status: dict, url: str) -> str:
    components = status.get("components") or []
    down = [c for c in components if not c.get("alive")]
    redis = status.get("redis") or {}
    if down:
        names = ", ".join(f"{c.get('component')} ({c.get('instance')})" for c in down)
        summary = f"{len(down)} of {_components(len(components))} DOWN: {names}"
    elif components:
        summary = f"{'all ' if len(components) > 1 else ''}{_components(len(components))} alive"
    else:
        summary = "no component has reported yet"
    latency = number(redis.get("latency_ms"), " ms", 2)
    lines = [clean(f"berth at {url}: {summary}"), "",
             f"Redis: {'ok' if redis.get('ok') else 'DOWN'}" + (f", {latency}" if latency else "")]

    def section(title: str, headers: list[str], rows: list[list]) -> None:
        lines.extend(["", f"{title}:", table(headers, rows, indent="  ") if rows else "  (none)"])

    section("Components", ["COMPONENT", "INSTANCE", "STATE", "LAST SEEN"],
            [[c.get("component"), c.get("instance"), "alive" if c.get("alive") else "DOWN",
              ago(c.get("age_s"))] for c in components])
    section("Streams", ["STREAM", "LENGTH"],
            [[name, length] for name, length in (status.get("streams") or {}).items()])
    section("Consumer groups", ["STREAM", "GROUP", "CONSUMERS", "PENDING", "LAG", "LAG (S)"],
            [[g.get("stream"), g.get("group"), g.get("consumers"), g.get("pending"),
              g.get("lag"), _tenths(g.get("lag_seconds"))]
             for g in status.get("consumer_groups") or []])
    section("Queues", ["QUEUE", "DEPTH"],
            [[name, depth] for name, depth in (status.get("queues") or {}).items()])
    return "\n".join(lines)
