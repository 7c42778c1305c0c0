"""Events on Redis Streams: the envelope, a batched Publisher and a consumer-group Reader.

Envelope (every stream entry): type, source, subject, trace_id, ts_ms, data (JSON).

The Publisher never blocks its caller: `publish` appends to a bounded in-memory buffer and a
background thread (a greenlet under gevent) flushes it with one pipelined XADD per batch.
While Redis is unreachable events stay buffered; past the bound they are dropped and counted,
and the count is added to a Redis counter once Redis answers again.

The Reader reads a stream through a consumer group and hands each batch to a handler, which
records the batch's effects on an `Effects` (redis-py's command methods, recorded as data). One
Lua script then acknowledges the batch and applies those effects, and does neither when another
consumer acknowledged any of its entries first: an effect and its acknowledgement land
together, exactly once, even when a stalled consumer's batch was claimed by another.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain

import redis
from redis.commands.core import DataAccessCommands, Script, ScriptCommands

from app import redis as keys
from app.background import Backoff, ProcessThread
from app.logs import redact
from app.tracing import get_trace_id

try:
    import hiredis  # redis-py's own C accelerator (redis[hiredis])
except ImportError:  # pragma: no cover - then redis-py packs the commands
    hiredis = None

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
        self._flusher = ProcessThread("berth-publisher", self._run)
        self.published = 0
        self.dropped = 0
        self._dropped_unreported = 0
        self.redis_ok = True

    def publish(self, domain: str, event: Event) -> None:
        """Queue `event` for `events:<domain>:stream`. Never blocks, never raises.
        The event is serialised by the flusher: don't mutate its data afterwards."""
        self._flusher.ensure_started()
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
        """Flush, then stop the flusher (a later publish starts it again)."""
        self.flush(timeout)
        self._flusher.stop()
        self._wake.set()

    def _run(self, stop: threading.Event) -> None:
        backoff = Backoff("event publisher", log, max_s=2.0)
        wait = 0.0
        while not stop.is_set():
            self._wake.wait(wait or self._flush_s)
            self._wake.clear()
            while self._buffer:
                try:
                    self._write_batch()
                    backoff.succeeded()
                    wait = 0.0
                    self.redis_ok = True
                except redis.RedisError as ex:  # unreachable or refusing: keep buffering
                    self.redis_ok = False
                    wait = backoff.failed(ex)
                    break
                if len(self._buffer) < self._batch:
                    # What arrived during that write waits for the next interval (or a full
                    # batch): chasing it would flush continuously, in batches as small as one
                    # Redis round trip's worth of requests, each paying a batch's overhead.
                    break

    def stage(self, pipe: redis.client.Pipeline, domain: str, event: Event) -> Event:
        """Queue `event` for `events:<domain>:stream` on `pipe`, a caller's MULTI/EXEC
        transaction (trimmed as `publish` trims): it is stored when, and only when, that
        transaction commits. For a lifecycle event that must neither be lost nor repeated when
        a process dies between a state change and its event: pass a function calling this as
        the `extra` of the Repository write that makes the change."""
        pipe.execute_command(*xadd_command(keys.stream(domain), event, self._maxlen))
        return event

    def _write_batch(self) -> None:
        """Write the head of the buffer. Entries whose XADD Redis refused stay at the head,
        in order, for the next attempt; those it stored leave the buffer even when others of
        the batch failed (Redis starting to refuse writes mid-batch), so none is written
        twice. Raises the first error."""
        # Left in the buffer while written (only this thread takes from it), so `flush`
        # waits for them and `publish` counts them against the bound.
        batch = [self._buffer[i] for i in range(min(self._batch, len(self._buffer)))]
        commands = [xadd_command(stream_key, event, self._maxlen)
                    for stream_key, event in batch]
        unreported = self._dropped_unreported
        if unreported:
            commands.append(("INCRBY", keys.EVENTS_DROPPED, unreported))
        replies = _pipeline(self._client, commands)  # a broken connection: all stay
        failed = [item for item, reply in zip(batch, replies, strict=False)
                  if isinstance(reply, Exception)]
        for _ in batch:
            self._buffer.popleft()
        self._buffer.extendleft(reversed(failed))
        if not (unreported and isinstance(replies[-1], Exception)):
            self._dropped_unreported -= unreported
        self.published += len(batch) - len(failed)
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if errors:
            raise errors[0]


def xadd_command(stream_key: str, event: Event, maxlen: int) -> tuple:
    """The XADD storing `event` in `stream_key`, trimmed to about `maxlen` entries: the one
    way an event becomes a stream entry, in a Publisher's batch or in a caller's transaction."""
    return ("XADD", stream_key, "MAXLEN", "~", str(maxlen), "*",
            *chain.from_iterable(event.to_fields().items()))


def _pipeline(client: redis.Redis, commands: list[tuple]) -> list:
    """Send `commands` in one write on one pooled connection and read every reply; returns
    them, an error reply as its ResponseError (a non-transactional pipeline). The proxy publishes an
    event per request, and redis-py's Pipeline (a Command object, per-argument encoding and
    a reply callback per command) cost more than the rest of that event."""
    pool = client.connection_pool
    conn = pool.get_connection()
    replies: list = []
    try:
        packed = (b"".join(map(hiredis.pack_command, commands)) if hiredis is not None
                  else b"".join(conn.pack_commands(commands)))
        conn.send_packed_command([packed])
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as ex:
                replies.append(ex)
    except BaseException:
        conn.disconnect()  # replies may be left unread: the connection cannot be reused
        raise
    finally:
        pool.release(conn)
    return replies


def create_publisher(settings, client: redis.Redis) -> Publisher:
    """The process's Publisher, configured from Settings (every process builds it this way)."""
    return Publisher(client, maxlen=settings.events_maxlen, batch=settings.publisher_batch,
                     flush_ms=settings.publisher_flush_ms, buffer=settings.publisher_buffer)


class Effects(DataAccessCommands, ScriptCommands):
    """What a Reader's handler does to Redis for a batch, recorded instead of sent: call
    redis-py's command methods on it (hincrby, zadd, expireat, xadd, eval of a script's text)
    and the Reader applies them, in order, in the script that acknowledges the batch. Replies
    are not available, and one command takes at most ~7,000 arguments (Lua's unpack)."""

    def __init__(self):
        self.commands: list[tuple] = []

    def execute_command(self, *args, **options):
        if str(args[0]).upper() == "EVALSHA":
            raise TypeError("a handler queues eval(script text), not a registered script")
        self.commands.append(args)
        return self


Handler = Callable[[list[Event], Effects], None]

# Acknowledges a batch and applies its effects, only for entries no other consumer acknowledged
# first. Usually every entry is still this consumer's: one XPENDING over the batch's range
# shows it. Otherwise (this consumer stalled past the claim time and another one claimed some)
# XCLAIM (JUSTID: no delivery counted) takes back exactly those still pending; when that is
# not all of them nothing changes, and the Reader applies the ones returned on their own.
# KEYS[1]: the stream. ARGV: group, consumer, n, the n ids (ascending), then each effect as
# its argument count and its arguments; an EVAL's script is the index of a function in
# `scripts`. Effects run like a MULTI: one failing does not stop the others; the first error
# is returned.
_COMMIT_HEAD = """
local stream, group, consumer, n = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local function all_mine()
  local mine = redis.call('XPENDING', stream, group, ARGV[4], ARGV[3 + n], n + 1, consumer)
  if #mine ~= n then return false end
  for i, entry in ipairs(mine) do
    if entry[1] ~= ARGV[3 + i] then return false end
  end
  return true
end
if not all_mine() then
  local pending = {}
  for first = 4, 3 + n, 1000 do
    local claim = {'XCLAIM', stream, group, consumer, 0}
    for j = first, math.min(first + 999, 3 + n) do claim[#claim + 1] = ARGV[j] end
    claim[#claim + 1] = 'JUSTID'
    for _, id in ipairs(redis.call(unpack(claim))) do pending[#pending + 1] = id end
  end
  if #pending < n then
    return {0, pending}
  end
end
for first = 4, 3 + n, 1000 do
  redis.call('XACK', stream, group, unpack(ARGV, first, math.min(first + 999, 3 + n)))
end
local scripts = {}
"""
_COMMIT_TAIL = """
local failed = false
local i = 4 + n
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  local ok, reply = true
  if ARGV[i + 1] == 'EVAL' then
    local numkeys = tonumber(ARGV[i + 3])
    ok, reply = pcall(scripts[tonumber(ARGV[i + 2])], {unpack(ARGV, i + 4, i + 3 + numkeys)},
                      {unpack(ARGV, i + 4 + numkeys, i + count)})
  else
    reply = redis.pcall(unpack(ARGV, i + 1, i + count))
  end
  if type(reply) == 'table' and reply.err then ok, reply = false, reply.err end
  if not ok and not failed then failed = ARGV[i + 1] .. ': ' .. tostring(reply) end
  i = i + count + 1
end
return {1, failed}
"""


def _commit_script(scripts: tuple[str, ...]) -> str:
    """The commit script with the handlers' own scripts as its functions 1..n."""
    functions = "".join(f"scripts[{i}] = function(KEYS, ARGV)\n{text}\nend\n"
                        for i, text in enumerate(scripts, 1))
    return _COMMIT_HEAD + functions + _COMMIT_TAIL


def _encode(effects: Effects) -> tuple[tuple[str, ...], list]:
    """(the scripts the effects evaluate, the effects as the commit script's arguments)."""
    scripts: dict[str, int] = {}
    args: list = []
    for command in effects.commands:
        if str(command[0]).upper() == "EVAL":
            command = ("EVAL", scripts.setdefault(command[1], len(scripts) + 1), *command[2:])
        args.append(len(command))
        args.extend(command)
    return tuple(scripts), args


@dataclass
class ReaderStats:
    applied: int = 0
    failed_batches: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    malformed: int = 0
    skipped: int = 0  # acknowledged by another consumer first: applied there, not here


class Reader:
    """Reads one stream through a consumer group and applies batches exactly once.

    The handler receives the parsed events of a batch and an `Effects` on which it records
    their effects. The Reader applies them with the batch's XACKs in one script, only for
    entries no other consumer acknowledged first (the handler runs again on what is left).
    A batch whose handler raises is retried entry by entry; an entry that keeps failing stays
    pending, is re-claimed after `claim_idle_ms`, and after `max_deliveries` deliveries moves to
    the dead-letter stream. Entries of a dead, or stalled, consumer are taken over with
    XAUTOCLAIM.
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
        self._commit_scripts: dict[tuple[str, ...], Script] = {}

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
        """Loop until `stop` is set. Every Redis error is waited out with a backoff, never
        fatal: unreachable, or refusing (MISCONF, OOM, READONLY, LOADING...), or a restart
        that lost the group (NOGROUP: it is created again)."""
        if isinstance(stop, threading.Event):
            should_stop, pause = stop.is_set, stop.wait
        else:
            should_stop, pause = stop, time.sleep
        backoff = Backoff(f"reader of {self.stream} ({self.group})", log, max_s=5.0)
        while not should_stop():
            try:
                self.run_once()
                backoff.succeeded()
            except redis.RedisError as ex:
                # Whatever this consumer was given and could not acknowledge is its own
                # pending: read it first when Redis serves again, rather than waiting for the
                # claim time to pass.
                self._recover_own = True
                self._group_ready = False
                if "NOGROUP" in str(ex) and backoff.ok:
                    continue  # a restarted Redis without the group: create it at once
                pause(backoff.failed(ex))

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
        effects = Effects()
        effects.xadd(self.dead_letter_stream,
                     {**(fields or {}), "dead_stream": self.stream, "dead_group": self.group,
                      "dead_id": entry_id, "dead_reason": reason},
                     maxlen=100_000, approximate=True)
        if self._commit([entry_id], effects) is not None:
            return  # another consumer acknowledged it first
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
        applied = self._apply(events)
        if applied is not None:
            return applied
        self.stats.failed_batches += 1
        # Isolate the failing entries; they stay pending.
        return sum(self._apply([event]) or 0 for event in events)

    def _apply(self, events: list[Event]) -> int | None:
        """Apply a batch; the number of entries applied here, None when the handler failed."""
        while events:
            effects = Effects()
            try:
                self.handler(events, effects)
            except redis.RedisError:
                raise  # Redis, not the entries: `run` waits it out, the batch stays pending
            except Exception:
                log.exception("handler failed on %d %s entries", len(events), self.stream)
                return None
            pending = self._commit([e.id for e in events], effects)
            if pending is None:
                self.stats.applied += len(events)
                return len(events)
            # This consumer stalled past claim_idle_ms and another one applied part of the
            # batch: what is still pending is applied here, on its own.
            skipped = len(events) - len(pending)
            self.stats.skipped += skipped
            log.warning("%s: %d entries were applied by another consumer of %s meanwhile "
                        "(this one stalled longer than the claim idle time)",
                        self.stream, skipped, self.group)
            still = set(pending)
            events = [e for e in events if e.id in still]
        return 0

    def _commit(self, ids: list[str], effects: Effects) -> list[str] | None:
        """XACK `ids` and apply `effects` in one script when every id is still pending (None);
        otherwise change nothing and return the ids still pending (maybe none)."""
        scripts, args = _encode(effects)
        script = self._commit_scripts.get(scripts)
        if script is None:
            script = self._commit_scripts[scripts] = self.client.register_script(
                _commit_script(scripts))
        applied, detail = script(keys=[self.stream],
                                 args=[self.group, self.consumer, len(ids), *ids, *args])
        if not applied:
            return detail
        if detail:  # like EXEC: every effect ran, then the first error is raised
            raise redis.ResponseError(f"{self.stream} effects: {detail}")
        return None


def stream_lengths(client: redis.Redis, streams: Iterable[str] = keys.ALL_STREAMS) -> dict:
    streams = tuple(streams)  # iterated twice below
    pipe = client.pipeline(transaction=False)
    for name in streams:
        pipe.xlen(name)
    return dict(zip(streams, pipe.execute(), strict=True))


LAG_COUNT_MAX = 10_000  # entries counted per group at most; beyond, lag is this bound


def _entry_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def consumer_lag(client: redis.Redis, streams: Iterable[str] = keys.ALL_STREAMS) -> list[dict]:
    """Per stream and group: entries not yet delivered (lag), pending, and the age of the
    oldest one not yet delivered. The lag is counted from the group's last-delivered id and
    the stream's newest id, never taken from XINFO's entries-read/lag, which a restart or a
    trim leaves wrong (a lag of thousands with nothing left to read); it is counted up to
    LAG_COUNT_MAX (`lag_capped` then)."""
    groups = []
    for name in streams:
        try:
            infos = client.xinfo_groups(name)
        except redis.ResponseError:  # no such stream yet
            continue
        if not infos:
            continue
        newest = client.xrevrange(name, count=1)
        newest_id = _entry_id(newest[0][0]) if newest else (0, 0)
        for info in infos:
            last = info.get("last-delivered-id") or "0-0"
            lag, capped, oldest_unread_ms = 0, False, None
            if _entry_id(last) < newest_id:
                lag, capped, oldest = _count_after(client, name, last)
                if oldest is not None:
                    oldest_unread_ms = max(0, now_ms() - _entry_id(oldest)[0])
            groups.append({"stream": name, "group": info["name"], "consumers": info["consumers"],
                           "pending": info["pending"], "lag": lag, "lag_capped": capped,
                           "lag_seconds": (oldest_unread_ms or 0) / 1000})
    return groups


def _count_after(client: redis.Redis, stream: str, last: str) -> tuple[int, bool, str | None]:
    """(entries after `last`, whether the count stopped at LAG_COUNT_MAX, the first id)."""
    count, first, start = 0, None, f"({last}"
    while count < LAG_COUNT_MAX:
        page = client.xrange(stream, min=start, count=min(1000, LAG_COUNT_MAX - count))
        if not page:
            return count, False, first
        first = first or page[0][0]
        count += len(page)
        start = f"({page[-1][0]}"
    return count, bool(client.xrange(stream, min=start, count=1)), first
