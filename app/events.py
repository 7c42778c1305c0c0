"""Events on Redis Streams: the envelope, a batched Publisher and a consumer-group Reader.

Envelope (every stream entry): type, source, subject, trace_id, ts_ms, data (JSON).

The Publisher never blocks its caller: `publish` appends to a bounded in-memory buffer and a
background thread (a greenlet under gevent) flushes it with one pipelined XADD per batch.
While Redis is unreachable events stay buffered; past the bound they are dropped and counted,
and the count is added to a Redis counter once Redis answers again.

The Reader reads a stream through a consumer group and hands each batch to a handler together
with a MULTI/EXEC pipeline; the Reader adds the XACKs to that same pipeline, so an effect and
its acknowledgement are applied together or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis

from app import redis as keys
from app.logs import redact
from app.tracing import get_trace_id

log = logging.getLogger(__name__)

_SECRET_FIELDS = frozenset(
    {"authorization", "cookie", "set-cookie", "password", "secret", "token", "private_key",
     "key_pem", "password_hash", "proxy-authorization"}
)


_JSON = json.JSONEncoder(separators=(",", ":"), default=str)


def now_ms() -> int:
    return int(time.time() * 1000)


def _scrub(value):
    """Remove secret-named fields from event data, recursively."""
    if isinstance(value, dict):
        return {
            k: ("[redacted]" if str(k).lower() in _SECRET_FIELDS else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


@dataclass(frozen=True)
class Event:
    type: str
    source: str
    subject: str
    data: dict = field(default_factory=dict)
    trace_id: str = ""
    ts_ms: int = 0
    id: str | None = None  # the stream entry id, once stored

    @classmethod
    def create(cls, type: str, source: str, subject: str, data: dict | None = None,
               trace_id: str | None = None) -> Event:
        """A new event stamped with now and the current trace id."""
        return cls(type=type, source=source, subject=subject, data=_scrub(data or {}),
                   trace_id=trace_id or get_trace_id() or "", ts_ms=now_ms())

    def to_fields(self) -> dict[str, str]:
        return {
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "trace_id": self.trace_id,
            "ts_ms": str(self.ts_ms),
            "data": _JSON.encode(self.data),
        }

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> Event:
        """Parse a stream entry; raises ValueError when it is not a berth envelope."""
        try:
            data = json.loads(fields.get("data") or "{}")
            return cls(type=fields["type"], source=fields.get("source", ""),
                       subject=fields.get("subject", ""), data=data,
                       trace_id=fields.get("trace_id", ""), ts_ms=int(fields.get("ts_ms", 0)),
                       id=entry_id)
        except (KeyError, TypeError, json.JSONDecodeError) as ex:
            raise ValueError(f"not an event envelope: {ex}") from ex

    def as_dict(self) -> dict:
        return {"id": self.id, "type": self.type, "source": self.source, "subject": self.subject,
                "trace_id": self.trace_id, "ts_ms": self.ts_ms, "data": self.data}


class Publisher:
    """Batched, non-blocking event publishing. One per process; safe across fork.

    `publish` costs a deque append. The flusher starts lazily on first use in each process,
    so a Publisher created before gunicorn forks still flushes in every worker.
    """

    def __init__(self, client: redis.Redis, *, maxlen: int = 1_000_000, batch: int = 500,
                 flush_ms: int = 100, buffer: int = 50_000):
        self._client = client
        self._maxlen = maxlen
        self._batch = batch
        self._flush_s = flush_ms / 1000
        self._bound = buffer
        self._buffer: deque[tuple[str, Event]] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.published = 0
        self.dropped = 0
        self._dropped_unreported = 0
        self.redis_ok = True

    def publish(self, domain: str, event: Event) -> None:
        """Queue `event` for `events:<domain>:stream`. Never blocks, never raises.
        The event is serialised by the flusher: don't mutate its data afterwards."""
        self._ensure_flusher()
        if len(self._buffer) >= self._bound:
            self.dropped += 1
            self._dropped_unreported += 1
            return
        self._buffer.append((keys.stream(domain), event))
        if len(self._buffer) >= self._batch:
            self._wake.set()

    def emit(self, domain: str, type: str, source: str, subject: str, data: dict | None = None,
             trace_id: str | None = None) -> Event:
        """Create and publish an event in one call; returns it."""
        event = Event.create(type, source, subject, data, trace_id)
        self.publish(domain, event)
        return event

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the buffer is written (or `timeout`); True when empty."""
        deadline = time.monotonic() + timeout
        while self._buffer and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.005)
        return not self._buffer

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._closed = True
        self._wake.set()

    def _ensure_flusher(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            self._pid = pid
            self._closed = False
            self._thread = threading.Thread(target=self._run, name="berth-publisher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        backoff = 0.0
        while not self._closed:
            self._wake.wait(backoff or self._flush_s)
            self._wake.clear()
            while self._buffer:
                try:
                    self._write_batch()
                    backoff = 0.0
                    if not self.redis_ok:
                        log.info("event publisher reconnected to Redis")
                    self.redis_ok = True
                except redis.RedisError as ex:
                    if self.redis_ok:
                        log.warning("event publisher cannot reach Redis (%s); buffering", ex)
                    self.redis_ok = False
                    backoff = min(max(backoff * 2, 0.1), 2.0)
                    break

    def _write_batch(self) -> None:
        batch = [self._buffer[i] for i in range(min(self._batch, len(self._buffer)))]
        pipe = self._client.pipeline(transaction=False)
        for stream_key, event in batch:
            pipe.xadd(stream_key, event.to_fields(), maxlen=self._maxlen, approximate=True)
        unreported = self._dropped_unreported
        if unreported:
            pipe.incrby(keys.EVENTS_DROPPED, unreported)
        pipe.execute()
        self._dropped_unreported -= unreported
        for _ in batch:
            self._buffer.popleft()
        self.published += len(batch)


def create_publisher(settings, client: redis.Redis) -> Publisher:
    """The process's Publisher, configured from Settings (every process builds it this way)."""
    return Publisher(client, maxlen=settings.events_maxlen, batch=settings.publisher_batch,
                     flush_ms=settings.publisher_flush_ms, buffer=settings.publisher_buffer)


Handler = Callable[[list[Event], "redis.client.Pipeline"], None]


@dataclass
class ReaderStats:
    applied: int = 0
    failed_batches: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    malformed: int = 0


class Reader:
    """Reads one stream through a consumer group and applies batches exactly once.

    The handler receives the parsed events of a batch and a MULTI/EXEC pipeline; it queues its
    effects on that pipeline and must not execute it. The Reader queues the XACKs and executes.
    A batch whose handler raises is retried entry by entry; an entry that keeps failing stays
    pending, is re-claimed after `claim_idle_ms`, and after `max_deliveries` deliveries moves to
    the dead-letter stream. Entries of a dead consumer are taken over with XAUTOCLAIM.
    """

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str,
                 handler: Handler, *, batch: int = 500, block_ms: int = 1000,
                 claim_idle_ms: int = 30_000, max_deliveries: int = 5,
                 dead_letter_stream: str = keys.DEAD_LETTER_STREAM):
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.dead_letter_stream = dead_letter_stream
        self.stats = ReaderStats()
        self._group_ready = False
        self._recover_own = True
        self._last_claim = 0.0

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as ex:
            if "BUSYGROUP" not in str(ex):
                raise
        self._group_ready = True

    def run_once(self) -> int:
        """Process at most one batch (own pending first, then claims, then new entries)."""
        if not self._group_ready:
            self.ensure_group()
        if self._recover_own:
            # After a restart under the same name, our own unacked entries come first.
            entries = self._read("0", block=None)
            if entries:
                return self._process(entries)
            self._recover_own = False
        if time.monotonic() - self._last_claim >= self.claim_idle_ms / 2000:
            self._last_claim = time.monotonic()
            claimed = self._claim()
            if claimed:
                return self._process(claimed)
        entries = self._read(">", block=self.block_ms)
        return self._process(entries) if entries else 0

    def run(self, stop: threading.Event | Callable[[], bool]) -> None:
        """Loop until `stop` is set; Redis outages are waited out, never fatal."""
        should_stop = stop.is_set if isinstance(stop, threading.Event) else stop
        backoff = 0.1
        while not should_stop():
            try:
                self.run_once()
                backoff = 0.1
            except redis.ConnectionError as ex:
                log.warning("reader %s/%s: Redis unreachable (%s)", self.stream, self.group, ex)
                self._group_ready = False
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except redis.ResponseError as ex:
                if "NOGROUP" in str(ex):
                    self._group_ready = False
                    continue
                raise

    def _read(self, start: str, block: int | None) -> list[tuple[str, dict]]:
        result = self.client.xreadgroup(self.group, self.consumer, {self.stream: start},
                                        count=self.batch, block=block)
        if not result:
            return []
        # redis-py returns [[stream, [(id, fields), ...]]]; a deleted entry has fields None.
        return [(eid, f) for eid, f in result[0][1]]

    def _claim(self) -> list[tuple[str, dict]]:
        _next, claimed, deleted = self._autoclaim()
        if deleted:
            self.client.xack(self.stream, self.group, *deleted)
        if not claimed:
            return []
        self.stats.claimed += len(claimed)
        counts = {
            p["message_id"]: p["times_delivered"]
            for p in self.client.xpending_range(self.stream, self.group, min=claimed[0][0],
                                                max=claimed[-1][0], count=len(claimed) + 100,
                                                consumername=self.consumer)
        }
        keep = []
        for eid, fields in claimed:
            if counts.get(eid, 0) > self.max_deliveries:
                self._dead_letter(eid, fields, f"failed {counts[eid] - 1} deliveries")
            else:
                keep.append((eid, fields))
        return keep

    def _autoclaim(self):
        result = self.client.xautoclaim(self.stream, self.group, self.consumer,
                                        min_idle_time=self.claim_idle_ms, start_id="0-0",
                                        count=self.batch)
        next_id, claimed = result[0], result[1]
        deleted = result[2] if len(result) > 2 else []
        return next_id, [(eid, f) for eid, f in claimed if f is not None], deleted

    def _dead_letter(self, entry_id: str, fields: dict, reason: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream,
                  {**(fields or {}), "dead_stream": self.stream, "dead_group": self.group,
                   "dead_id": entry_id, "dead_reason": reason},
                  maxlen=100_000, approximate=True)
        pipe.xack(self.stream, self.group, entry_id)
        pipe.execute()
        self.stats.dead_lettered += 1
        log.error("moved %s %s to %s: %s", self.stream, entry_id, self.dead_letter_stream, reason)

    def _process(self, entries: list[tuple[str, dict]]) -> int:
        events = []
        for eid, fields in entries:
            try:
                events.append(Event.from_entry(eid, fields))
            except ValueError as ex:
                self.stats.malformed += 1
                self._dead_letter(eid, fields, str(ex))
        if not events:
            return 0
        if self._apply(events):
            return len(events)
        self.stats.failed_batches += 1
        applied = 0
        for event in events:  # isolate the failing entries; they stay pending
            if self._apply([event]):
                applied += 1
        return applied

    def _apply(self, events: list[Event]) -> bool:
        pipe = self.client.pipeline(transaction=True)
        try:
            self.handler(events, pipe)
        except redis.ConnectionError:
            raise
        except Exception:
            log.exception("handler failed on %d %s entries", len(events), self.stream)
            pipe.reset()
            return False
        pipe.xack(self.stream, self.group, *[e.id for e in events])
        pipe.execute()
        self.stats.applied += len(events)
        return True


def stream_lengths(client: redis.Redis, streams: Iterable[str] = keys.ALL_STREAMS) -> dict:
    streams = tuple(streams)  # iterated twice below
    pipe = client.pipeline(transaction=False)
    for name in streams:
        pipe.xlen(name)
    return dict(zip(streams, pipe.execute(), strict=True))


def consumer_lag(client: redis.Redis, streams: Iterable[str] = keys.ALL_STREAMS) -> list[dict]:
    """Per stream and group: entries not yet delivered (lag), pending, and age of oldest unread."""
    groups = []
    for name in streams:
        try:
            infos = client.xinfo_groups(name)
        except redis.ResponseError:  # no such stream yet
            continue
        for info in infos:
            lag = info.get("lag")
            last = info.get("last-delivered-id", "0-0")
            oldest_unread_ms = None
            if lag:
                nxt = client.xrange(name, min=f"({last}", count=1)
                if nxt:
                    oldest_unread_ms = now_ms() - int(nxt[0][0].split("-")[0])
            groups.append({"stream": name, "group": info["name"], "consumers": info["consumers"],
                           "pending": info["pending"], "lag": lag,
                           "lag_seconds": (oldest_unread_ms or 0) / 1000})
    return groups
