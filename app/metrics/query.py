"""Reading the request metrics the consumer aggregates (see aggregate.py for the layout).

A rolling window of W minutes is the sum of the W whole minute buckets before the current one
and the current one so far: it always holds at least W minutes, so it never empties when a
minute turns (W buckets ending with the current one would hold only seconds of it just after
the turn). Its length in seconds is therefore W * 60 plus the seconds elapsed in the current
minute, given as `seconds`, and rates are divided by that. "total" is everything since the
start.
"""

from __future__ import annotations

import sys
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis
from redis.client import NEVER_DECODE

from app import redis as keys
from app.metrics.histogram import quantiles

WINDOWS = {"1m": 1, "5m": 5, "1h": 60}
TOTAL = "total"
WINDOW_CHOICES = (*WINDOWS, TOTAL)
QUANTILES = (0.5, 0.95, 0.99)


@dataclass
class Sums:
    """Raw sums of one router or service over one period."""

    requests: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duration_us: int = 0
    codes: dict[tuple[str, str], int] = field(default_factory=dict)  # (code, method) -> n
    buckets: dict[int, int] = field(default_factory=dict)  # Prometheus bucket -> n
    latency: dict[int, int] = field(default_factory=dict)  # fine bucket -> n

    def add_counters(self, raw: dict[str, str]) -> None:
        for name, value in raw.items():
            amount = int(value)
            if name == "n":
                self.requests += amount
            elif name == "e":
                self.errors += amount
            elif name == "bi":
                self.bytes_in += amount
            elif name == "bo":
                self.bytes_out += amount
            elif name == "us":
                self.duration_us += amount
            elif name.startswith("c:"):
                _, code, method = name.split(":", 2)
                self.codes[(code, method)] = self.codes.get((code, method), 0) + amount
            elif name.startswith("b:"):
                index = int(name[2:])
                self.buckets[index] = self.buckets.get(index, 0) + amount

    def add_latency(self, raw: bytes | None) -> None:
        for index, amount in decode_latency(raw).items():
            self.latency[index] = self.latency.get(index, 0) + amount


def decode_latency(raw: bytes | None) -> dict[int, int]:
    """Fine bucket counts from a latency string (big-endian i64 per bucket, as BITFIELD)."""
    if not raw:
        return {}
    counters = array("q")
    counters.frombytes(raw[:len(raw) - len(raw) % 8])
    if sys.byteorder == "little":
        counters.byteswap()
    return {i: n for i, n in enumerate(counters) if n}


def status_class(code: str) -> str:
    return f"{code[0]}xx" if len(code) == 3 and code[0] in "12345" else "other"


def summarize(name: str, window: str, sums: Sums, seconds: float | None) -> dict:
    """The API's view of one router or service over a window."""
    classes: dict[str, int] = {}
    codes: dict[str, int] = {}
    methods: dict[str, int] = {}
    for (code, method), n in sums.codes.items():
        classes[status_class(code)] = classes.get(status_class(code), 0) + n
        codes[code] = codes.get(code, 0) + n
        methods[method] = methods.get(method, 0) + n
    q = quantiles(sums.latency, QUANTILES)
    ms = {f"p{round(k * 100)}": (round(v / 1000, 3) if v is not None else None)
          for k, v in q.items()}
    mean = sums.duration_us / sums.requests / 1000 if sums.requests else None
    return {
        "name": name, "window": window,
        "seconds": round(seconds, 3) if seconds is not None else None,
        "requests": sums.requests,
        "rate": round(sums.requests / seconds, 4) if seconds else None,
        "errors": sums.errors,
        "error_rate": round(sums.errors / sums.requests, 6) if sums.requests else 0.0,
        "status": dict(sorted(classes.items())), "codes": dict(sorted(codes.items())),
        "methods": dict(sorted(methods.items())),
        "bytes_in": sums.bytes_in, "bytes_out": sums.bytes_out,
        "latency_ms": {"mean": round(mean, 3) if mean is not None else None, **ms},
    }


class MetricsQuery:
    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.time):
        self.client = client
        self.clock = clock

    def names(self, dimension: str, since_ms: int | None = None) -> list[str]:
        """Every router or service seen (since `since_ms` when given), by name."""
        low = since_ms if since_ms is not None else "-inf"
        return sorted(self.client.zrangebyscore(keys.metrics_index(dimension), low, "+inf"))

    def window_seconds(self, window: str) -> float | None:
        if window == TOTAL:
            return None
        return WINDOWS[window] * 60 + self.clock() % 60

    def sums(self, dimension: str, names: Iterable[str], window: str,
             latency: bool = True) -> dict[str, Sums]:
        """Sums per name over `window`, read in one pipeline."""
        names = list(names)
        periods = self._periods(window)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            for counters_key, latency_key in self._keys(dimension, name, periods):
                pipe.hgetall(counters_key)
                if latency:
                    pipe.execute_command("GET", latency_key, **{NEVER_DECODE: True})
        results = iter(pipe.execute())
        out = {}
        for name in names:
            sums = out[name] = Sums()
            for _ in periods:
                sums.add_counters(next(results))
                if latency:
                    sums.add_latency(next(results))
        return out

    def summaries(self, dimension: str, window: str, names: Iterable[str] | None = None
                  ) -> list[dict]:
        if names is None:
            names = self.names(dimension, self.since_ms(window))
        seconds = self.window_seconds(window)
        return [summarize(name, window, sums, seconds)
                for name, sums in self.sums(dimension, names, window).items()]

    def series(self, dimension: str, names: Iterable[str], minutes: int) -> list[dict]:
        """Per minute, oldest first, of the last `minutes` (the current one partial): requests,
        errors and latency quantiles summed over `names`."""
        names = list(names)
        current = int(self.clock() // 60)
        periods = list(range(current - minutes + 1, current + 1))
        pipe = self.client.pipeline(transaction=False)
        for minute in periods:
            for name in names:
                pipe.hgetall(keys.metrics_minute(dimension, name, minute))
                pipe.execute_command("GET", keys.metrics_latency_minute(dimension, name, minute),
                                     **{NEVER_DECODE: True})
        results = iter(pipe.execute())
        points = []
        for minute in periods:
            sums = Sums()
            for _ in names:
                sums.add_counters(next(results))
                sums.add_latency(next(results))
            q = quantiles(sums.latency, QUANTILES)
            seconds = 60.0 if minute < current else max(1.0, self.clock() - minute * 60)
            points.append({
                "ts": minute * 60, "requests": sums.requests, "errors": sums.errors,
                "rate": round(sums.requests / seconds, 4),
                **{f"p{round(k * 100)}_ms": (round(v / 1000, 3) if v is not None else None)
                   for k, v in q.items()}})
        return points

    def since_ms(self, window: str) -> int | None:
        """Start (ms) of a window: the routers seen since then are the ones it lists."""
        if window == TOTAL:
            return None
        return int((self.clock() // 60 - WINDOWS[window]) * 60_000)

    def _periods(self, window: str) -> list[int | None]:
        if window == TOTAL:
            return [None]
        current = int(self.clock() // 60)
        return list(range(current - WINDOWS[window], current + 1))

    @staticmethod
    def _keys(dimension: str, name: str, periods: list[int | None]):
        for minute in periods:
            if minute is None:
                yield (keys.metrics_total(dimension, name),
                       keys.metrics_latency_total(dimension, name))
            else:
                yield (keys.metrics_minute(dimension, name, minute),
                       keys.metrics_latency_minute(dimension, name, minute))
