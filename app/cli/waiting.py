"""`--wait` for commands the API queues: follow the command's events until it is done.

The API answers such a change at once (201/202) with the trace id of the work it queued; the
worker's lifecycle events carry the same id. `follow_command` follows them on the event stream
(app/cli/sse.py), prints each one, and turns the terminal event into the exit status.

Done means served: when the command changes what the proxies serve (`served`: a route or
certificate table), its done event is printed only once every live proxy worker has loaded
that change (app/cli/served.py), so a request sent when `--wait` returns finds it. A worker
behind after SERVED_TIMEOUT_S is named, and the exit status is 1.

While no worker runs the command (its message waits in the queue, or sits with a worker that
died until it is redelivered), the events stop; after QUIET_S without any, `--wait` asks the
API whether a worker holds the trace and, when none does, says once on stderr that it waits
for a worker; once one runs it, it says that too (and again that it waits, if that worker
dies with it: its marker expires within seconds, its message is redelivered later).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Collection

from app.cli.args import positive_float
from app.cli.client import ApiClient
from app.cli.errors import CliError
from app.cli.output import clean, emit_json, say, warn
from app.cli.served import SERVED_TIMEOUT_S, wait_served
from app.cli.sse import follow_events

WAIT_TIMEOUT_S = 300.0
QUIET_S = 2.0  # without events this long, ask whether a worker holds the command
JOBS_PATH = "/api/v1/jobs"


def wait_options() -> argparse.ArgumentParser:
    """A parent parser with --wait and --wait-timeout."""
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true",
                         help="follow the command's events until it is done (and served by "
                              "every proxy) or failed")
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
                   failure: str, describe: Callable[[dict], str],
                   served: str | None = None) -> dict:
    """Print the trace's events (`describe(event)` for people, JSON lines with --json) until
    one of `done` (returned, printed once the proxies serve the `served` table, when given)
    or `failed` (raised as CliError `failure`: the event's error and the trace id).
    FollowTimeout when neither comes within --wait-timeout."""
    last: dict = {}
    watch = WorkerWatch(client, trace_id)
    watch.start()
    try:
        for event in follow_events(client, trace_id=trace_id, stream=stream, since=start,
                                   until=set(done) | set(failed), timeout=args.wait_timeout):
            watch.saw_event()
            last = event
            if event.get("type") in done:
                break  # printed below, once served
            _show(args, event, describe)
    except KeyboardInterrupt:
        # Only the waiting stops: the queued work goes on, and this says where to watch it.
        warn(f"stopped waiting; the command goes on (berth events tail --trace {trace_id})")
        raise
    finally:
        watch.stop()
    if last.get("type") in done:
        try:
            if served is not None:
                wait_until_served(client, served)
        finally:
            _show(args, last, describe)  # it is done either way; served or not, see above
        return last
    data = last.get("data") or {}
    reason = data.get("error") if isinstance(data, dict) else None
    raise CliError(failure, f"{reason or last.get('type')} (trace {trace_id})")


def _show(args: argparse.Namespace, event: dict, describe: Callable[[dict], str]) -> None:
    if args.json:
        emit_json(event, lines=True)
    else:
        say(describe(event))


def wait_until_served(client: ApiClient, table: str, *,
                      timeout: float = SERVED_TIMEOUT_S) -> None:
    """Return once every live proxy worker serves the `table` as stored now (NotServed when
    one does not within `timeout`); says so when no proxy worker is alive."""
    version, proxies = wait_served(client, table, timeout=timeout)
    if not proxies:
        warn(f"no proxy worker is running: {table} table version {version} is stored, "
             "and served once a proxy starts")


class WorkerWatch:
    """Says "waiting for a worker" when the events stop and no worker holds the trace."""

    def __init__(self, client: ApiClient, trace_id: str, quiet_s: float = QUIET_S,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.trace_id = trace_id
        self.quiet_s = quiet_s
        self.clock = clock
        self._last = clock()
        self._said = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="berth-worker-watch",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def saw_event(self) -> None:
        self._last = self.clock()

    def _run(self) -> None:
        while not self._stop.wait(self.quiet_s / 2):  # one EXISTS a second while quiet
            if self.clock() - self._last < self.quiet_s:
                continue
            try:
                running = self.client.get(f"{JOBS_PATH}/{self.trace_id}").data["running"]
            except (CliError, KeyError, TypeError):
                return  # an API without the endpoint, or gone: the events still tell
            if self._stop.is_set():
                return
            if running:
                if self._said:  # after the note, that it ended; again if this one is lost
                    self._said = False
                    warn("a worker runs the command now")
            elif not self._said:
                self._said = True
                warn("waiting for a worker: no worker runs this command yet (it waits in "
                     "the queue, or for a stopped worker's messages to be redelivered)")
