"""Event pipeline throughput next to redis-benchmark's XADD, measured in the same run.

    .venv/bin/python -m bench.events              # 200,000 events
    .venv/bin/python -m bench.events --quick      # 20,000 events, a smoke run
    .venv/bin/python -m bench.events --events N

Starts its own redis-server on a free loopback port and uses the production defaults from
`Settings` (Publisher batch 500, flush 100 ms, buffer 50,000, MAXLEN ~ 1,000,000; Reader
batch 500). Events are realistic `proxy_request_completed` events (about 300 bytes of JSON).

1. publish: N events handed to one Publisher from one thread as fast as it can, timed until
   `Publisher.flush` reports them all in Redis. The caller waits while the buffer is full, so
   the figure is the sustained rate with nothing dropped; a second pass never waits, as in
   production, and reports what the bounded buffer dropped. Also the caller-side cost of
   `Event.create` and of `Publisher.publish`, in microseconds.
2. consume: one consumer-group Reader applying those N events with a handler that sums
   request counters, a latency histogram and per-minute windows per batch and records them on
   the Reader's Effects, applied with the XACKs in one script.
3. redis-benchmark XADD against the same server: `-c 50 -P 16` (the baseline of the ratios),
   `-c 50 -P 1`, and berth's shape: `-c 1 -P 500` with berth's envelope and MAXLEN ~.

Prints a table (metric, events/s, ratio to the baseline) and writes the figures to
bench/results/events.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from app import redis as keys
from app.events import Effects, Event, Publisher, Reader, create_publisher
from app.redis import create_client
from app.settings import Settings
from harness.procs import RedisServer, find_binary

DEFAULT_EVENTS = 200_000
QUICK_EVENTS = 20_000
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "events.json"

DOMAIN = "request"
EVENT_TYPE = "proxy_request_completed"
GROUP = "bench-metrics"
EVENT_POOL = 1024  # distinct pre-built events, cycled, so building them is not timed
CREATE_SAMPLE = 10_000  # events built to time Event.create
BENCH_STREAM = "bench:stream"
BASELINE = "redis-benchmark XADD -P 16"
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500)
WINDOW_TTL_S = 2 * 3600


@dataclass
class Row:
    """One line of the report: `events` done in `seconds`."""

    metric: str
    events: int
    seconds: float
    note: str = ""
    command: str = ""
    events_per_s: float = 0.0
    ratio: float | None = None

    def __post_init__(self) -> None:
        self.events_per_s = self.events / self.seconds if self.seconds else 0.0


@dataclass
class PublishRun:
    """One pass of N publishes through a Publisher built with the production settings."""

    published: int  # entries that reached Redis
    dropped: int
    seconds: float  # first publish until the buffer is empty
    caller_s: float  # time spent inside publish() calls
    peak_pending: int


@dataclass
class Report:
    events: int
    settings: dict
    rows: list[Row] = field(default_factory=list)
    caller: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)


# -- payloads ------------------------------------------------------------------------------


def request_data(rng: random.Random, i: int) -> dict:
    """The data of one realistic proxy_request_completed event (about 300 bytes of JSON)."""
    host = rng.choice(("shop.example.com", "api.example.com", "blog.example.org",
                       "grafana.internal.example.net", "auth.example.com"))
    status = rng.choices((200, 201, 204, 301, 304, 400, 401, 404, 429, 500, 502, 503),
                         weights=(60, 4, 3, 2, 8, 3, 2, 8, 1, 1, 1, 1))[0]
    return {
        "host": host,
        "route_id": f"rt_{zlib.crc32(host.encode()):010d}",
        "service": host.split(".")[0],
        "method": rng.choices(("GET", "POST", "PUT", "DELETE", "HEAD"), (70, 18, 6, 3, 3))[0],
        "path": f"/api/v1/orders/{rng.randrange(10**6)}/items?page={rng.randrange(1, 50)}",
        "status": status,
        "duration_ms": round(rng.lognormvariate(3.0, 1.0), 3),
        "bytes_in": rng.randrange(200, 4000),
        "bytes_out": rng.randrange(300, 250_000),
        "upstream": f"10.0.{rng.randrange(1, 4)}.{rng.randrange(2, 250)}:{8000 + i % 4}",
        "client_ip": f"203.0.113.{rng.randrange(1, 255)}",
        "tls": rng.random() < 0.9,
        "http_version": "HTTP/1.1",
    }


def build_events(count: int, seed: int = 7) -> tuple[list[Event], float]:
    """`count` events built with Event.create, and the mean cost of one create in µs."""
    rng = random.Random(seed)
    payloads = [request_data(rng, i) for i in range(count)]
    started = time.perf_counter()
    events = [Event.create(EVENT_TYPE, "proxy", d["host"], d, trace_id=f"{i:032x}")
              for i, d in enumerate(payloads)]
    return events, (time.perf_counter() - started) / count * 1e6


def data_bytes(event: Event) -> int:
    return len(event.to_fields()["data"].encode())


def envelope_bytes(event: Event) -> int:
    return sum(len(k) + len(v.encode()) for k, v in event.to_fields().items())


# -- 1. publish ----------------------------------------------------------------------------


def new_publisher(client: redis.Redis, settings: Settings) -> Publisher:
    return create_publisher(settings, client)


def bench_publish(client: redis.Redis, settings: Settings, events: list[Event], n: int,
                  *, wait_when_full: bool) -> PublishRun:
    """Publish `n` events from this thread and time until all are in Redis.

    With `wait_when_full` the caller waits while the buffer is full (so nothing is dropped and
    the figure is the Publisher's sustained rate); without it, it never waits, as in production,
    and what does not fit in the buffer is dropped.
    """
    publisher = new_publisher(client, settings)
    publisher.publish(DOMAIN, events[0])  # starts the flusher thread outside the timing
    publisher.flush(timeout=10)
    client.delete(keys.stream(DOMAIN))
    warmup = publisher.published
    started = time.perf_counter()
    bound = settings.publisher_buffer if wait_when_full else None
    caller_s, peak = _publish_chunks(publisher, events, n, settings.publisher_batch, bound)
    _flush_all(publisher)
    elapsed = time.perf_counter() - started
    publisher.close()
    return PublishRun(publisher.published - warmup, publisher.dropped, elapsed, caller_s, peak)


def _publish_chunks(publisher: Publisher, events: list[Event], n: int, chunk: int,
                    wait_above: int | None) -> tuple[float, int]:
    """Publish in chunks, timing only the publish() calls; (their seconds, peak buffer).

    With `wait_above` set, wait before a chunk until it fits under that many pending events.
    """
    pool, caller_s, peak, done = len(events), 0.0, 0, 0
    while done < n:
        if wait_above is not None:
            while publisher.pending > wait_above - chunk:
                time.sleep(0.001)
        size = min(chunk, n - done)
        started = time.perf_counter()
        for i in range(done, done + size):
            publisher.publish(DOMAIN, events[i % pool])
        caller_s += time.perf_counter() - started
        peak = max(peak, publisher.pending)
        done += size
    return caller_s, peak


def _flush_all(publisher: Publisher) -> None:
    if not publisher.flush(timeout=600):
        raise RuntimeError(f"publisher still holds {publisher.pending} events after 600 s")


def publish_rows(sustained: PublishRun, burst: PublishRun, n: int, bound: int) -> list[Row]:
    return [
        Row("publish: Publisher -> XADD", sustained.published, sustained.seconds,
            note="1 thread; caller waits while the buffer is full"),
        Row("publish burst: caller never waits", burst.published, burst.seconds,
            note=f"{burst.dropped:,} of {n:,} dropped (buffer {bound:,})"),
    ]


# -- 2. consume ----------------------------------------------------------------------------


def latency_bucket(duration_ms: float) -> str:
    for bound in LATENCY_BUCKETS_MS:
        if duration_ms <= bound:
            return f"le_{bound}"
    return "le_inf"


def aggregate(events: list[Event], pipe: Effects) -> None:
    """Metrics effects of one batch, summed in memory, then recorded on the Reader's Effects."""
    counts: Counter[tuple[str, str]] = Counter()
    windows = set()
    for event in events:
        data = event.data
        host, route = data["host"], data["route_id"]
        window = f"bench:agg:window:{host}:{event.ts_ms // 60_000}"
        windows.add(window)
        counts[(f"bench:agg:requests:{host}", f"{data['status'] // 100}xx")] += 1
        counts[(f"bench:agg:methods:{host}", data["method"])] += 1
        counts[(f"bench:agg:latency:{route}", latency_bucket(data["duration_ms"]))] += 1
        counts[(window, "requests")] += 1
        counts[(window, "bytes_out")] += data["bytes_out"]
        counts[(window, "duration_ms_total")] += int(data["duration_ms"])
    for (key, name), amount in counts.items():
        pipe.hincrby(key, name, amount)
    for window in windows:
        pipe.expire(window, WINDOW_TTL_S)


def bench_consume(client: redis.Redis, n: int) -> tuple[Row, int]:
    """Apply the `n` entries of the request stream through one Reader; (row, its batch)."""
    reader = Reader(client, keys.stream(DOMAIN), GROUP, "bench-1", aggregate, block_ms=100)
    reader.ensure_group()
    started = time.perf_counter()
    deadline = time.monotonic() + 600
    while reader.stats.applied < n and time.monotonic() < deadline:
        reader.run_once()
    elapsed = time.perf_counter() - started
    if reader.stats.failed_batches or reader.stats.malformed:
        raise RuntimeError(f"consumer failed: {reader.stats}")
    row = Row("consume: Reader, effects + XACK in one script", reader.stats.applied, elapsed,
              note="1 consumer; aggregates per batch")
    return row, reader.batch


# -- 3. redis-benchmark --------------------------------------------------------------------


def redis_benchmark(port: int, n: int, clients: int, pipeline: int,
                    fields: list[str]) -> tuple[float, str]:
    """requests/s of XADD on `port`, and the command line that measured it."""
    binary = find_binary("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark is not installed: run `make bootstrap`")
    args = [binary, "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-n", str(n),
            "-P", str(pipeline), "--csv", "XADD", BENCH_STREAM, *fields]
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
    return _csv_rps(done.stdout), shlex.join(["redis-benchmark", *args[1:]])


def _csv_rps(output: str) -> float:
    """The rps column of redis-benchmark --csv; read from the right, because the test name
    (the command) is not escaped and may itself contain quotes and commas."""
    line = output.strip().splitlines()[-1]
    return float(line.rsplit('","', 7)[1])


def bench_peer(client: redis.Redis, port: int, n: int, sample: Event, batch: int,
               maxlen: int) -> list[Row]:
    """redis-benchmark XADD: tiny entries over 50 connections, then berth's shape (one
    connection, `batch` commands a round trip, the same envelope and MAXLEN ~)."""
    envelope = ["MAXLEN", "~", str(maxlen), "*"]
    for name, value in sample.to_fields().items():
        envelope += [name, value]
    tiny = ["*", "field", "value"]
    runs = [(BASELINE, 50, 16, tiny, "50 connections, 16 a round trip"),
            ("redis-benchmark XADD -P 1", 50, 1, tiny, "50 connections, 1 a round trip"),
            (f"redis-benchmark XADD -c 1 -P {batch}, envelope", 1, batch, envelope,
             "berth's shape: 1 connection, batch-sized pipeline")]
    rows = []
    for metric, clients, pipeline, fields, note in runs:
        client.delete(BENCH_STREAM)
        rps, command = redis_benchmark(port, n, clients, pipeline, fields)
        rows.append(Row(metric, n, n / rps, note=note, command=command))
    client.delete(BENCH_STREAM)
    return rows


# -- report --------------------------------------------------------------------------------


def add_ratios(rows: list[Row]) -> None:
    base = next(r.events_per_s for r in rows if r.metric == BASELINE)
    for row in rows:
        row.ratio = row.events_per_s / base if base else None


def print_report(report: Report) -> None:
    caller, env, conf = report.caller, report.environment, report.settings
    print(f"berth events: {report.events:,} {EVENT_TYPE} events "
          f"(data {caller['data_bytes']} B, entry {caller['envelope_bytes']} B); "
          f"redis {env['redis_version']}, Python {env['python']}")
    print(f"settings: batch {conf['publisher_batch']}, flush {conf['publisher_flush_ms']} ms, "
          f"buffer {conf['publisher_buffer']:,}, MAXLEN ~ {conf['events_maxlen']:,}; "
          f"consumer batch {conf['reader_batch']}")
    print()
    print(f"{'metric':<44} {'events/s':>10} {'ratio':>7}  note")
    for row in report.rows:
        ratio = f"{row.ratio:.3f}" if row.ratio is not None else "-"
        print(f"{row.metric:<44} {row.events_per_s:>10,.0f} {ratio:>7}  {row.note}")
    print()
    print(f"caller cost per event: Event.create {caller['create_us']:.1f} µs, "
          f"Publisher.publish {caller['publish_us']:.1f} µs")
    print(f"ratio = events/s / ({BASELINE}), same server, same run; "
          f"figures in bench/results/{RESULTS_PATH.name}")


def write_results(report: Report) -> None:
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False) + "\n")


# -- run -----------------------------------------------------------------------------------


def run(n: int, workdir: Path) -> Report:
    settings = Settings.from_env({})
    events, create_us = build_events(CREATE_SAMPLE)
    events = events[:EVENT_POOL]
    server = RedisServer(workdir).start()
    try:
        client = create_client(server.url, socket_timeout=60)
        report = measure(client, server.port, settings, events, n)
        client.close()
    finally:
        server.stop()
    report.caller["create_us"] = create_us
    return report


def measure(client: redis.Redis, port: int, settings: Settings, events: list[Event],
            n: int) -> Report:
    sustained = bench_publish(client, settings, events, n, wait_when_full=True)
    consumed, reader_batch = bench_consume(client, sustained.published)
    burst = bench_publish(client, settings, events, n, wait_when_full=False)
    rows = publish_rows(sustained, burst, n, settings.publisher_buffer) + [consumed]
    rows += bench_peer(client, port, n, events[0], settings.publisher_batch,
                       settings.events_maxlen)
    add_ratios(rows)
    conf = {f: getattr(settings, f) for f in (
        "publisher_batch", "publisher_flush_ms", "publisher_buffer", "events_maxlen")}
    return Report(
        events=n, rows=rows, settings={**conf, "reader_batch": reader_batch},
        caller={"publish_us": sustained.caller_s / n * 1e6, "data_bytes": data_bytes(events[0]),
                "envelope_bytes": envelope_bytes(events[0]),
                "sustained": asdict(sustained), "burst": asdict(burst)},
        environment={"redis_version": client.info("server")["redis_version"],
                     "python": platform.python_version(), "platform": platform.platform()})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, metavar="N",
                        help=f"events to publish and consume (default {DEFAULT_EVENTS:,})")
    parser.add_argument("--quick", action="store_true",
                        help=f"a small smoke run: {QUICK_EVENTS:,} events")
    args = parser.parse_args(argv)
    if args.quick:
        args.events = QUICK_EVENTS
    if args.events < 1:
        parser.error("--events must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
        report = run(args.events, Path(tmp))
    write_results(report)
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
