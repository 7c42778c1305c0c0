"""Server-Sent Events: split a byte stream into lines, parse them into messages, and follow
the API's event stream across disconnects.

`SseParser` implements the parts of the WHATWG event-stream rules a client needs: `data`
lines joined with "\\n", `event`, comment lines (`: ping` heartbeats) ignored, a message
dispatched at a blank line and dropped when it has no data. Like EventSource, it keeps `id`
and `retry` across reconnections: they become the Last-Event-ID header and the reconnection
delay.
"""

from __future__ import annotations

import codecs
import json
import re
import time
from collections import namedtuple
from collections.abc import Callable, Collection, Iterable, Iterator

from app.cli.client import ApiClient
from app.cli.errors import ApiError, ConnectionFailed, FollowTimeout

EVENTS_STREAM_PATH = "/api/v1/events/stream"
HEARTBEAT_GRACE_S = 45.0  # the API sends `: ping` every 15 s; three missed pings = lost
HEALTHY_S = 30.0  # a connection open this long counts as good even without events
BACKOFF_S = 0.5  # first reconnect delay; doubles per consecutive failure
BACKOFF_MAX_S = 8.0
RETRIES = 5

_EOL = re.compile(r"\r\n|\r|\n")


# `id`: the last event id in effect when the message was dispatched. A named tuple rather
# than a dataclass, which would slow every command's start.
SseMessage = namedtuple("SseMessage", "event data id", defaults=("message", "", None))


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 lines of a byte stream, split on CRLF, LF or CR, even across chunk boundaries.
    A last line without an end-of-line is dropped (an event stream ends with a blank line)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        start = 0
        for match in _EOL.finditer(pending):
            if match.group() == "\r" and match.end() == len(pending):
                break  # maybe the first half of a CRLF split between chunks
            yield pending[start:match.start()]
            start = match.end()
        pending = pending[start:]
    if pending.endswith("\r"):
        yield pending[:-1]


class SseParser:
    """Parses the lines of one or more connections to the same event stream."""

    def __init__(self) -> None:
        self.last_id: str | None = None  # "" after an empty `id:` field: nothing to resume
        self.retry_ms: int | None = None

    def messages(self, lines: Iterable[str]) -> Iterator[SseMessage]:
        """The messages of one connection, given its lines."""
        data: list[str] = []
        event = ""
        for line in lines:
            if not line:
                if data:
                    yield SseMessage(event or "message", "\n".join(data), self.last_id)
                data, event = [], ""
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id" and "\0" not in value:
                self.last_id = value
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)


def parse_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """The messages of an event stream, given its lines."""
    return SseParser().messages(lines)


def _item(message: SseMessage) -> dict:
    """The event item a message carries; a message that is not JSON keeps its raw text."""
    try:
        item = json.loads(message.data)
    except ValueError:
        item = None
    if not isinstance(item, dict):
        item = {"data": message.data}
    item.setdefault("type", message.event)
    if message.id:
        item.setdefault("id", message.id)
    return item


def _timed_out(timeout: float | None) -> FollowTimeout:
    return FollowTimeout("Timed out", f"no terminal event within {timeout:g}s")


def _before(lines: Iterable[str], deadline: float | None, timeout: float | None,
            clock: Callable[[], float]) -> Iterator[str]:
    for line in lines:
        if deadline is not None and clock() >= deadline:
            raise _timed_out(timeout)
        yield line


def follow_events(client: ApiClient, *, trace_id: str | None = None,
                  event_type: str | None = None, stream: str | None = None,
                  subject: str | None = None, since: str | None = None,
                  until: Collection[str] = (), timeout: float | None = None,
                  retries: int = RETRIES,
                  on_retry: Callable[[str, int, float], None] | None = None,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> Iterator[dict]:
    """Yield event items ({"id", "stream", "type", "source", "subject", "trace_id", "ts_ms",
    "data"}) from the API's event stream as they arrive, filtered by the server.

    Stops after yielding an event whose type is in `until`. Raises FollowTimeout once `timeout`
    seconds have passed without one (checked at every line, so at the latest one heartbeat
    late). A connection that drops after it was established is reopened with Last-Event-ID
    after the stream's `retry` delay (else BACKOFF_S), doubled per consecutive failure up to
    BACKOFF_MAX_S; `on_retry(reason, attempt, delay)` is called before each wait. After
    `retries` consecutive failures it raises ConnectionFailed. Failing to connect at all, or a
    4xx answer, raises at once.
    """
    deadline = None if timeout is None else clock() + timeout
    params = {"stream": stream, "type": event_type, "subject": subject, "trace_id": trace_id,
              "since": since}
    terminal = frozenset(until)
    parser = SseParser()
    connected = False
    failures = 0
    while True:
        opened, got_event = clock(), False
        remaining = HEARTBEAT_GRACE_S if deadline is None else deadline - opened
        try:
            resume = {"Last-Event-ID": parser.last_id} if parser.last_id else None
            with client.stream(EVENTS_STREAM_PATH, params=params, headers=resume,
                               read_timeout=max(min(HEARTBEAT_GRACE_S, remaining), 0.05)
                               ) as chunks:
                connected = True
                lines = _before(split_lines(chunks), deadline, timeout, clock)
                for message in parser.messages(lines):
                    item = _item(message)
                    got_event = True
                    yield item
                    if str(item.get("type")) in terminal:
                        return
            reason = "the API closed the event stream"
        except ConnectionFailed as ex:
            if deadline is not None and clock() >= deadline:
                raise _timed_out(timeout) from None
            if not connected:
                raise
            reason = ex.description
        except ApiError as ex:
            if not connected or ex.status < 500:
                raise
            reason = ex.title
        now = clock()
        if deadline is not None and now >= deadline:
            raise _timed_out(timeout)
        failures = 1 if got_event or now - opened >= HEALTHY_S else failures + 1
        if failures > retries:
            raise ConnectionFailed("Event stream lost",
                                   f"{reason}; gave up after {retries} reconnects")
        first = BACKOFF_S if parser.retry_ms is None else parser.retry_ms / 1000
        delay = min(first * 2 ** (failures - 1), BACKOFF_MAX_S)
        if on_retry is not None:
            on_retry(reason, failures, delay)
        sleep(delay)
