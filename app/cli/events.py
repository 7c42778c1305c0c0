"""`berth events tail|list`: what happened, to which subject, under which trace id."""

from __future__ import annotations

import argparse
import json

from app.cli.args import positive_int
from app.cli.client import ApiClient
from app.cli.output import clean, emit_json, say, short, stamp, warn
from app.cli.sse import RETRIES, follow_events
from app.tracing import valid_trace_id

EVENTS_PATH = "/api/v1/events"


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    events = commands.add_parser("events", help="follow or list events",
                                 description="Events of every stream: requests, routes, "
                                             "services, certificates, alerts.")
    verbs = events.add_subparsers(dest="verb", metavar="VERB", required=True)

    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--trace", metavar="ID", type=_trace_id,
                         help="only events of this trace id (32 hex digits)")
    filters.add_argument("--type", metavar="T", help="only events of this type, e.g. ready")
    filters.add_argument("--stream", metavar="S", type=short_stream,
                         help="only this stream: request, route, service, certificate, alert")
    filters.add_argument("--subject", metavar="X", help="only events about this subject")

    tail = verbs.add_parser(
        "tail", parents=[common, filters], help="follow events as they happen (Ctrl-C stops)",
        description="Print events as they happen, one line each (--json: one JSON object "
                    "a line). Reconnects by itself when the connection drops.")
    tail.add_argument("--since", metavar="ID", help="start after this event id "
                                                    "(default: from now)")
    tail.set_defaults(func=tail_events)

    listing = verbs.add_parser("list", parents=[common, filters],
                               help="one page of past events, newest first")
    listing.add_argument("--limit", type=positive_int, default=50,
                         help="events on the page (default: 50)")
    listing.add_argument("--before", metavar="ID", help="the page older than this event id")
    listing.set_defaults(func=list_events)


def _trace_id(value: str) -> str:
    value = value.strip().lower()
    if not valid_trace_id(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a trace id (32 hex digits)")
    return value


def short_stream(name: object) -> str:
    """`events:service:stream` -> `service`."""
    return str(name or "-").removeprefix("events:").removesuffix(":stream")


def event_line(item: dict, *, date: bool = False) -> str:
    """One event for people: time, stream, type, subject, trace id, the start of its data."""
    data = item.get("data")
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False) if data else ""
    return "  ".join([
        stamp(item.get("ts_ms"), date=date),
        clean(short_stream(item.get("stream"))).ljust(11),
        clean(item.get("type")).ljust(24),
        clean(item.get("subject") or "-").ljust(20),
        clean(item.get("trace_id") or "-").ljust(32),
        clean(short(text, 100)),
    ]).rstrip()


def tail_events(args: argparse.Namespace, client: ApiClient) -> int:
    def note(reason: str, attempt: int, delay: float) -> None:
        warn(f"{reason}; reconnecting in {delay:g}s (attempt {attempt} of {RETRIES})")

    for item in follow_events(client, trace_id=args.trace, event_type=args.type,
                              stream=args.stream, subject=args.subject, since=args.since,
                              on_retry=note):
        if args.json:
            emit_json(item, lines=True)
        else:
            say(event_line(item))
    return 0


def list_events(args: argparse.Namespace, client: ApiClient) -> int:
    page = client.get(EVENTS_PATH, {
        "stream": args.stream, "type": args.type, "subject": args.subject,
        "trace_id": args.trace, "limit": args.limit, "before": args.before}).data
    if args.json:
        emit_json(page)
        return 0
    items = page["items"]
    if not items:
        say("no events")
    for item in items:
        say(event_line(item, date=True))
    if page.get("next"):
        say(clean(f"(older events: add --before {page['next']})"))
    return 0
