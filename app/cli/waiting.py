"""`--wait` for commands the API queues: follow the command's events until it is done.

The API answers such a change at once (201/202) with the trace id of the work it queued; the
worker's lifecycle events carry the same id. `follow_command` follows them on the event stream
(app/cli/sse.py), prints each one, and turns the terminal event into the exit status.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Collection

from app.cli.args import positive_float
from app.cli.client import ApiClient
from app.cli.errors import CliError
from app.cli.output import clean, emit_json, say, warn
from app.cli.sse import follow_events

WAIT_TIMEOUT_S = 300.0


def wait_options() -> argparse.ArgumentParser:
    """A parent parser with --wait and --wait-timeout."""
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true",
                         help="follow the command's events until it is done or failed")
    waiting.add_argument("--wait-timeout", type=positive_float, default=WAIT_TIMEOUT_S,
                         metavar="SECONDS",
                         help=f"give up waiting after SECONDS (default: {WAIT_TIMEOUT_S:g})")
    return waiting


def since() -> str:
    """A stream position safely before the command: events are keyed by the server's clock,
    which may be behind ours; the trace id filter keeps older events out."""
    return str(int(time.time() * 1000) - 60_000)


def event_text(event: dict, detail: str = "") -> str:
    """`type: subject detail`, one terminal-safe line."""
    return clean(f"{event.get('type')}: {event.get('subject')} {detail}".rstrip())


def report_accepted(args: argparse.Namespace, data: dict, trace_id: str, summary: str) -> None:
    """What `berth` prints for queued work it does not wait for: the API's answer with
    --json, else `summary` and how to follow the trace."""
    if args.json:
        emit_json(data)
    else:
        say(clean(summary))
        say(f"trace: {trace_id}  (follow: berth events tail --trace {trace_id})")


def follow_command(client: ApiClient, args: argparse.Namespace, trace_id: str, *,
                   stream: str, start: str, done: Collection[str], failed: Collection[str],
                   failure: str, describe: Callable[[dict], str]) -> dict:
    """Print the trace's events (`describe(event)` for people, JSON lines with --json) until
    one of `done` (returned) or `failed` (raised as CliError `failure`: the event's error and
    the trace id). FollowTimeout when neither comes within --wait-timeout."""
    last: dict = {}
    try:
        for event in follow_events(client, trace_id=trace_id, stream=stream, since=start,
                                   until=set(done) | set(failed), timeout=args.wait_timeout):
            last = event
            if args.json:
                emit_json(event, lines=True)
            else:
                say(describe(event))
    except KeyboardInterrupt:
        # Only the waiting stops: the queued work goes on, and this says where to watch it.
        warn(f"stopped waiting; the command goes on (berth events tail --trace {trace_id})")
        raise
    if last.get("type") in done:
        return last
    data = last.get("data") or {}
    reason = data.get("error") if isinstance(data, dict) else None
    raise CliError(failure, f"{reason or last.get('type')} (trace {trace_id})")
