"""/api/v1/events: search the event streams, and follow them live as Server-Sent Events.

Streams are named by domain (request, route, service, certificate, alert, system, dead). Without
`stream`, every domain except `dead` is searched and the results merged by id, newest first.
Filters (type, subject, trace_id: exact matches) are applied while scanning.

Paging: items come newest first; `next` is the id to pass as `before` for the next page, null
when nothing older is left. A request scans a bounded number of entries, so a page may hold
fewer than `limit` items (even none) while `next` is still set: keep following `next`.

Visibility: an admin token sees every event; a user token sees only events whose
`data.owner` equals its owner.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import falcon
import redis

from app import redis as keys
from app.api.auth import visible_owner
from app.api.errors import translate_redis_errors
from app.api.params import choice_param, int_param, query, stream_id, text_param
from app.errors import ValidationError
from app.events import Event
from app.tracing import valid_trace_id

log = logging.getLogger(__name__)

DOMAINS = (*keys.STREAM_DOMAINS, "dead")
DEFAULT_DOMAINS = keys.STREAM_DOMAINS  # the dead-letter stream only when asked for
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_SCAN = 10_000  # entries read per request, over all streams searched
SSE_PING_S = 15.0
SSE_BLOCK_MS = 2000  # also how soon a closed client connection is noticed
SSE_BATCH = 500
TAIL_CLIENT_NAME = "berth-events-tail"  # CLIENT LIST shows the open tails

SEARCH_PARAMS = ("stream", "type", "subject", "trace_id", "limit", "before")
TAIL_PARAMS = ("stream", "type", "subject", "trace_id", "since")


def stream_key(domain: str) -> str:
    return keys.DEAD_LETTER_STREAM if domain == "dead" else keys.stream(domain)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Filters:
    type: str | None = None
    subject: str | None = None
    trace_id: str | None = None
    owner: str | None = None  # user tokens: data.owner must equal it

    def match(self, entry_id: str, fields: dict | None) -> Event | None:
        """The event when the entry passes every filter, else None (also for non-envelopes)."""
        if not fields:
            return None
        if self.type is not None and fields.get("type") != self.type:
            return None
        if self.subject is not None and fields.get("subject") != self.subject:
            return None
        if self.trace_id is not None and fields.get("trace_id") != self.trace_id:
            return None
        try:
            event = Event.from_entry(entry_id, fields)
        except ValueError:
            return None
        if self.owner is not None and (
                not isinstance(event.data, dict) or event.data.get("owner") != self.owner):
            return None
        return event


def item(domain: str, event: Event, fields: dict) -> dict:
    body = {**event.as_dict(), "stream": domain}
    if domain == "dead":
        body["dead"] = {"stream": fields.get("dead_stream", ""),
                        "group": fields.get("dead_group", ""),
                        "id": fields.get("dead_id", ""), "reason": fields.get("dead_reason", "")}
    return body


def read_filters(req: falcon.Request, params: dict[str, str]) -> tuple[tuple[str, ...], Filters]:
    domain = choice_param(params, "stream", DOMAINS)
    trace_id = params.get("trace_id")
    if trace_id is not None:
        trace_id = trace_id.lower()
        if not valid_trace_id(trace_id):  # W3C: all zeros is not a trace id
            raise ValidationError("trace_id must be 32 hexadecimal characters, not all zero",
                                  field="trace_id")
    filters = Filters(type=text_param(params, "type", 100),
                      subject=text_param(params, "subject", 200),
                      trace_id=trace_id, owner=visible_owner(req))
    return ((domain,) if domain else DEFAULT_DOMAINS), filters


@dataclass
class _Scan:
    domain: str
    matches: list  # (id key, id, domain, event, fields)
    floor: str | None = None  # the oldest entry read; everything from it up to `before` is known
    exhausted: bool = False


def search(client: redis.Redis, domains: tuple[str, ...], filters: Filters, limit: int,
           before: str | None) -> tuple[list[dict], str | None]:
    """(items newest first, next cursor) — see the module docstring for the paging rules."""
    if before == "0-0":  # nothing is older than the first possible id
        return [], None
    budget = max(limit, min(max(10 * limit, 1000), MAX_SCAN) // len(domains))
    scans = [_scan_one(client, d, filters, limit, before, budget) for d in domains]
    floors = [_id_key(s.floor) for s in scans if not s.exhausted and s.floor is not None]
    cut = max(floors) if floors else None
    cut_id = next((s.floor for s in scans
                   if not s.exhausted and s.floor and _id_key(s.floor) == cut), None)
    # Every entry at or above `cut` has been read in every stream, so these are complete:
    known = sorted((m for s in scans for m in s.matches if cut is None or m[0] >= cut),
                   key=lambda m: m[0], reverse=True)
    if len(known) > limit:
        end = limit
        while end < len(known) and known[end][0] == known[limit - 1][0]:
            end += 1  # equal ids in two streams: never split them across pages
        page = known[:end]
        next_id = page[-1][1] if end < len(known) else cut_id
    else:
        page, next_id = known, cut_id
    return [item(domain, event, fields) for _k, _i, domain, event, fields in page], next_id


def _scan_one(client: redis.Redis, domain: str, filters: Filters, limit: int,
              before: str | None, budget: int) -> _Scan:
    scan = _Scan(domain, [])
    key = stream_key(domain)
    upper = f"({before}" if before else "+"
    read = 0
    while len(scan.matches) < limit and read < budget:
        count = min(budget - read, MAX_LIMIT if filters != Filters() else limit)
        entries = client.xrevrange(key, max=upper, min="-", count=count)
        stopped_early = False
        for entry_id, fields in entries:
            read += 1
            scan.floor = entry_id
            event = filters.match(entry_id, fields)
            if event is not None:
                scan.matches.append((_id_key(entry_id), entry_id, domain, event, fields))
                if len(scan.matches) >= limit:
                    stopped_early = True
                    break
        if not stopped_early and len(entries) < count:
            scan.exhausted = True
            break
        upper = f"({scan.floor}"
    return scan


class EventsResource:
    def __init__(self, client: redis.Redis):
        self.client = client

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = query(req, SEARCH_PARAMS)
        domains, filters = read_filters(req, params)
        limit = int_param(params, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
        before = stream_id(params["before"], "before") if "before" in params else None
        with translate_redis_errors():
            items, next_id = search(self.client, domains, filters, limit, before)
        resp.media = {"items": items, "next": next_id}


class EventStreamResource:
    """Server-Sent Events: `id: <stream id>`, `event: <type>`, `data: <item JSON>`.

    Starts after `since` (default `$`: only new events) or the `Last-Event-ID` header, which
    wins. Reads with XREAD BLOCK on a connection of its own; sends `: ping` when idle for
    `ping_s`; ends when Redis fails or the client goes away: noticed at the next write, or,
    under gunicorn (which exposes the client socket), after at most one XREAD block.
    """

    def __init__(self, client: redis.Redis, *, ping_s: float = SSE_PING_S,
                 block_ms: int = SSE_BLOCK_MS):
        self.client = client
        self.ping_s = ping_s
        self.block_ms = block_ms

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = query(req, TAIL_PARAMS)
        domains, filters = read_filters(req, params)
        since = params.get("since", "$")
        last_event_id = (req.get_header("Last-Event-ID") or "").strip()
        if last_event_id:
            since = stream_id(last_event_id, "Last-Event-ID")
        elif since != "$":
            since = stream_id(since, "since")
        with translate_redis_errors():
            positions = {stream_key(d): self._start(stream_key(d), since) for d in domains}
        resp.content_type = "text/event-stream; charset=utf-8"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = self._follow(positions, {stream_key(d): d for d in domains}, filters,
                                   req.env.get("gunicorn.socket"))

    def _start(self, key: str, since: str) -> str:
        """A concrete id per stream: `$` would skip entries added between two XREADs."""
        if since != "$":
            return since
        last = self.client.xrevrange(key, max="+", min="-", count=1)
        return last[0][0] if last else "0-0"

    def _dedicated_client(self) -> redis.Redis:
        pool = self.client.connection_pool
        options = {**pool.connection_kwargs, "socket_timeout": self.block_ms / 1000 + 5,
                   "client_name": TAIL_CLIENT_NAME}
        return redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, max_connections=1, **options))

    def _follow(self, positions: dict[str, str], domains: dict[str, str], filters: Filters,
                peer: socket.socket | None = None) -> Iterator[bytes]:
        client = self._dedicated_client()
        try:
            yield b"retry: 3000\n\n"
            last_write = time.monotonic()
            while True:
                idle = time.monotonic() - last_write
                block = int(max(0.001, min(self.block_ms / 1000, self.ping_s - idle)) * 1000)
                result = client.xread(positions, count=SSE_BATCH, block=block)
                out = []
                for key, entries in result or []:
                    key = key.decode() if isinstance(key, bytes) else key
                    for entry_id, fields in entries:
                        positions[key] = entry_id
                        event = filters.match(entry_id, fields)
                        if event is not None:
                            out.append((_id_key(entry_id), domains[key], event, fields))
                if out:
                    out.sort(key=lambda o: o[0])
                    yield b"".join(_sse(domain, event, fields) for _k, domain, event, fields in out)
                    last_write = time.monotonic()
                elif time.monotonic() - last_write >= self.ping_s:
                    yield b": ping\n\n"
                    last_write = time.monotonic()
                elif _peer_closed(peer):
                    return
        except redis.RedisError as ex:
            log.warning("event stream ended: Redis unreachable: %s", ex)
            yield b": redis unavailable; reconnect later\n\n"
        finally:
            client.connection_pool.disconnect()


def _peer_closed(peer: socket.socket | None) -> bool:
    """True when the client has closed its end (readable, and a peek reads nothing)."""
    if peer is None:
        return False
    try:
        readable, _w, _x = select.select([peer], [], [], 0)
        return bool(readable) and peer.recv(1, socket.MSG_PEEK) == b""
    except ValueError:  # e.g. a TLS socket: cannot peek; rely on the next write instead
        return False
    except OSError:
        return True


def _sse(domain: str, event: Event, fields: dict) -> bytes:
    kind = " ".join(event.type.splitlines()) or "message"
    data = json.dumps(item(domain, event, fields), separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {kind}\ndata: {data}\n\n".encode()
