"""`berth metrics [--host H] [--window 5m]`: requests, errors and latency per router (host)
and per service (upstream), as the consumer aggregated them."""

from __future__ import annotations

import argparse

from app.cli.client import ApiClient
from app.cli.output import clean, emit_json, number, say, table

METRICS_PATH = "/api/v1/orchestrator/metrics"
WINDOWS = ("1m", "5m", "1h", "total")


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "metrics", parents=[common], help="requests, error rate and latency per host",
        description="Show request metrics per router (host) and per service (upstream) over a "
                    "rolling window: requests, rate, error rate, p50/p95/p99 latency.")
    parser.add_argument("--host", help="only this host")
    parser.add_argument("--window", choices=WINDOWS, default="5m",
                        help="rolling window, or total since the start (default: 5m)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, client: ApiClient) -> int:
    params = {"window": args.window}
    if args.host:
        params["host"] = args.host
    metrics = client.get(METRICS_PATH, params).data
    if args.json:
        emit_json(metrics)
    else:
        say(render(metrics))
    return 0


def _rows(items: list[dict]) -> list[list]:
    return [[m.get("name"), number(m.get("rate"), "", 2) or "-", m.get("requests"),
             m.get("errors"), number((m.get("error_rate") or 0) * 100, "%"),
             number(m["latency_ms"].get("p50")) or "-", number(m["latency_ms"].get("p95")) or "-",
             number(m["latency_ms"].get("p99")) or "-"] for m in items]


def render(metrics: dict) -> str:
    window = metrics.get("window")
    seconds = metrics.get("seconds")
    span = ("since the start" if window == "total" else f"over the last {window}"
            + (f" ({seconds:.0f} s)" if seconds is not None else ""))
    lines = [clean(f"{metrics.get('requests', 0)} requests, {metrics.get('errors', 0)} errors "
                   f"{span}")]
    headers = ["REQ/S", "REQUESTS", "ERRORS", "ERROR%", "P50 MS", "P95 MS", "P99 MS"]
    for title, key, first in (("Routers", "routers", "HOST"), ("Services", "services",
                                                              "UPSTREAM")):
        items = metrics.get(key) or []
        lines += ["", f"{title}:",
                  table([first, *headers], _rows(items), indent="  ") if items else "  (none)"]
    return "\n".join(lines)
