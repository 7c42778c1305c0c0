"""Request metrics: one batch of events in, the Redis effects of that batch out.

`aggregate(events)` is pure: it sums a batch in memory per router (the request's route, named
by its host pattern: see workers/consumers/routes.py) and per service (the upstream that
answered), per minute and in total, into a `Delta`.
`apply(delta, pipe)` queues that delta on the Reader's `Effects` (app/events.py), which the
Reader applies with the batch's XACKs in one script: together, exactly once, or not at all.

Per dimension, name and period ("total" or a minute) there are two keys:

- a hash of counters:
      n        requests              e        errors (5xx, or the proxy failed)
      bi, bo   request/response bytes us      summed duration in µs
      c:<code>:<method>   requests by status code and method (classes roll up from it)
      b:<i>    Prometheus bucket i, not cumulative (totals only)
- a string of big-endian i64 counters, one per fine latency bucket (see histogram.py),
  incremented with BITFIELD. A batch touches hundreds of distinct fine buckets; as hash fields
  they would cost Redis a command each, as BITFIELD sub-commands they cost a fraction of that.

All the counters and buckets of a batch go in one EVAL; with the expiries, a 1,000-event batch
is a few dozen commands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app import redis as keys
from app.events import Event
from app.metrics.histogram import fine_bucket, prometheus_bucket

ROUTER = "router"
SERVICE = "service"
DIMENSIONS = (ROUTER, SERVICE)

REQUEST_EVENTS = frozenset({"proxy_request_completed", "proxy_request_failed"})
FAILED = "proxy_request_failed"
UNMATCHED = "_unmatched"  # requests no route matched: one router, whatever their Host header

# Bounded label values: any other method is counted as OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT",
                     "TRACE"})
OTHER_METHOD = "OTHER"

WINDOW_RETENTION_S = 3600 + 120  # minute keys outlive the longest window (1 h) by 2 minutes


@dataclass
class Delta:
    """The summed effects of one batch."""

    counters: dict[str, dict[str, int]] = field(default_factory=dict)  # hash -> field -> +n
    histograms: dict[str, dict[int, int]] = field(default_factory=dict)  # key -> bucket -> +n
    expire_at: dict[str, int] = field(default_factory=dict)  # key -> unix seconds
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # index -> name -> ts_ms
    events: dict[str, int] = field(default_factory=dict)  # "<domain>:<type>" -> +n


class _Cell:
    """Sums of the requests of one (router, service, minute) in a batch."""

    __slots__ = ("n", "e", "bi", "bo", "us", "codes", "fine", "prom", "last_ms")

    def __init__(self):
        self.n = self.e = self.bi = self.bo = self.us = self.last_ms = 0
        self.codes: dict[str, int] = {}
        self.fine: dict[int, int] = {}
        self.prom: dict[int, int] = {}


def _add(target: dict, source: dict) -> None:
    for name, amount in source.items():
        target[name] = target.get(name, 0) + amount


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _duration_us(value) -> int:
    try:
        us = int(float(value) * 1000 + 0.5)
    except (TypeError, ValueError):
        return 0
    return us if us > 0 else 0


RouterOf = Callable[[str, str], str]  # (route id, host) -> router name


def request_labels(event: Event, router_of: RouterOf | None = None
                   ) -> tuple[str, str, str, str, bool]:
    """(router, service, code, method, error) of a request event, every value bounded:
    the router is `router_of(route id, host)` (by default the host), no route means the
    UNMATCHED router, an unknown method OTHER, a missing status 502 when the proxy failed
    (what the client got) and 0 otherwise."""
    data = event.data
    host = str(data.get("host") or event.subject or "")
    route = str(data.get("route_id", data.get("route", host)) or "")
    if not route or not host:
        router = UNMATCHED
    else:
        router = router_of(route, host) if router_of is not None else host
    service = str(data.get("service") or data.get("upstream") or "")
    failed = event.type == FAILED
    status = _int(data.get("status"))
    if not 100 <= status <= 599:
        status = 502 if failed else 0
    method = str(data.get("method") or "").upper()
    if method not in METHODS:
        method = OTHER_METHOD
    return router, service, str(status), method, failed or status >= 500


def aggregate(events: Iterable[Event], now_s: float | None = None,
              router_of: RouterOf | None = None) -> Delta:
    """The metrics effects of a batch; events other than request events are skipped.

    Minutes come from each event's own timestamp, so a backlog applied late still lands in the
    minute it happened; minutes already past the window retention go to the totals only.
    """
    cells: dict[tuple[str, str, int], _Cell] = {}
    for event in events:
        if event.type not in REQUEST_EVENTS:
            continue
        router, service, code, method, error = request_labels(event, router_of)
        data = event.data
        us = _duration_us(data.get("duration_ms"))
        key = (router, service, event.ts_ms // 60_000)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = _Cell()
        cell.n += 1
        cell.e += error
        cell.bi += _int(data.get("bytes_in"))
        cell.bo += _int(data.get("bytes_out"))
        cell.us += us
        code_field = f"c:{code}:{method}"
        cell.codes[code_field] = cell.codes.get(code_field, 0) + 1
        fine = fine_bucket(us)
        cell.fine[fine] = cell.fine.get(fine, 0) + 1
        prom = prometheus_bucket(us)
        cell.prom[prom] = cell.prom.get(prom, 0) + 1
        if event.ts_ms > cell.last_ms:
            cell.last_ms = event.ts_ms
    now_s = time.time() if now_s is None else now_s
    return _to_delta(cells, oldest_minute=int((now_s - WINDOW_RETENTION_S) // 60) + 1)


def _to_delta(cells: dict[tuple[str, str, int], _Cell], oldest_minute: int) -> Delta:
    delta = Delta()
    for (router, service, minute), cell in cells.items():
        for dimension, name in ((ROUTER, router), (SERVICE, service)):
            if not name:  # a request that failed before any upstream was chosen
                continue
            _merge(delta, cell, keys.metrics_total(dimension, name),
                   keys.metrics_latency_total(dimension, name), prometheus=True)
            if minute >= oldest_minute:
                counters = keys.metrics_minute(dimension, name, minute)
                latency = keys.metrics_latency_minute(dimension, name, minute)
                _merge(delta, cell, counters, latency, prometheus=False)
                delta.expire_at[counters] = delta.expire_at[latency] = (
                    (minute + 1) * 60 + WINDOW_RETENTION_S)
            seen = delta.seen.setdefault(keys.metrics_index(dimension), {})
            if cell.last_ms > seen.get(name, 0):
                seen[name] = cell.last_ms
    return delta


def _merge(delta: Delta, cell: _Cell, counters_key: str, latency_key: str,
           prometheus: bool) -> None:
    counters = delta.counters.setdefault(counters_key, {})
    for name, amount in (("n", cell.n), ("e", cell.e), ("bi", cell.bi), ("bo", cell.bo),
                         ("us", cell.us)):
        counters[name] = counters.get(name, 0) + amount
    _add(counters, cell.codes)
    if prometheus:
        for index, amount in cell.prom.items():
            name = f"b:{index}"
            counters[name] = counters.get(name, 0) + amount
    _add(delta.histograms.setdefault(latency_key, {}), cell.fine)


def count_events(events: Iterable[Event], domain: str, delta: Delta | None = None) -> Delta:
    """Adds every event of a batch, of any type, to the per-type event counters."""
    delta = delta if delta is not None else Delta()
    for event in events:
        name = f"{domain}:{event.type}"
        delta.events[name] = delta.events.get(name, 0) + 1
    return delta


# One script for every counter and bucket of a batch. Sending them as a few strings that Lua
# splits is far cheaper for the client than thousands of command arguments, and the replies
# (one per BITFIELD sub-command) never travel back.
# KEYS: the counter hashes, then the latency strings. ARGV[1]: how many hashes; ARGV[1 + i]:
# "<field> <amount> ..." for hash KEYS[i], or "<bucket> <amount> ..." for latency KEYS[i].
_APPLY = """
local hashes = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if i <= hashes then
    for name, amount in string.gmatch(ARGV[i + 1], "(%S+) (%S+)") do
      redis.call('HINCRBY', key, name, amount)
    end
  else
    local args = {}
    for index, amount in string.gmatch(ARGV[i + 1], "(%d+) (%d+)") do
      args[#args + 1] = 'INCRBY'
      args[#args + 1] = 'i64'
      args[#args + 1] = '#' .. index
      args[#args + 1] = amount
      if #args >= 4000 then  -- unpack() is limited to ~8000 values
        redis.call('BITFIELD', key, unpack(args))
        args = {}
      end
    end
    if #args > 0 then
      redis.call('BITFIELD', key, unpack(args))
    end
  end
end
"""


def _pairs(amounts: dict) -> str:
    return " ".join(f"{name} {amount}" for name, amount in amounts.items() if amount)


def apply(delta: Delta, pipe) -> None:
    """Queue `delta` on the Reader's Effects (or a pipeline); the caller applies it."""
    hashes = [k for k, f in delta.counters.items() if f]
    latency = [k for k, b in delta.histograms.items() if b]
    if hashes or latency:
        payloads = [_pairs(delta.counters[k]) for k in hashes]
        payloads += [_pairs(delta.histograms[k]) for k in latency]
        pipe.eval(_APPLY, len(hashes) + len(latency), *hashes, *latency, len(hashes), *payloads)
    for key, when in delta.expire_at.items():
        pipe.expireat(key, when)
    for index, members in delta.seen.items():
        pipe.zadd(index, members, gt=True)
    for name, amount in delta.events.items():
        pipe.hincrby(keys.METRICS_EVENTS, name, amount)
