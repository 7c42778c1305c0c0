"""The metrics consumer: events/s it applies, and its lag while the proxy runs at its peak rate.

    .venv/bin/python -m bench.consumer                # 200,000 events, 10 s of proxy load
    .venv/bin/python -m bench.consumer --quick        # 50,000 events, 4 s of proxy load

One run, its own redis-server on a free loopback port, the real `python -m workers.consumers`
processes with the production settings (batch 1,000):

1. apply: N proxy_request_completed events already in `events:request:stream` (the proxy's
   shape: 5 hosts with 2 upstreams each, status and method mix, log-normal durations); one
   consumer process, then two, apply them. Timed from the first applied batch to the last, so
   process start-up is not counted; events/s = events applied / that time.
2. lag: wrk drives the real proxy (gunicorn, 2 gevent workers, events on) in front of nginx
   at its peak rate (keep-alive, as many connections as saturate it) while one consumer, then
   two, follow. Every 100 ms the lag is sampled: the age of the oldest request event not yet
   applied (pending in a batch, or not yet read), from its stream id. Prints p50, p99 and max,
   and the proxy's rate. The target is one consumer applying >= 25,000 events/s and a p99 lag
   under 1 s at the proxy's peak rate.

Everything runs on this machine's CPUs at once (wrk, nginx, proxy, Redis, consumers), as on a
one-machine installation. Figures are also written to bench/results/consumer.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from app import redis as keys
from app.events import Event
from app.models import Route
from app.redis import create_client
from app.stores import RouteStore
from bench.proxy import HOST, start_backend, wrk
from harness.procs import Proc, RedisServer, find_binary
from harness.proxy import ProxyProcess

STREAM = keys.stream("request")
GROUP = "consumer"  # workers.consumers.GROUP
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "consumer.json"
HOSTS = ("shop.example.com", "api.example.com", "blog.example.org", "grafana.example.net",
         "auth.example.com")
TARGET_EVENTS_S = 25_000
TARGET_LAG_P99_S = 1.0


@dataclass
class ApplyRun:
    consumers: int
    events: int
    seconds: float
    events_per_s: float
    consumer_cpu_us: float  # consumer CPU time per event applied (all processes)
    redis_cpu_us: float  # Redis CPU time per event applied


@dataclass
class LagRun:
    consumers: int
    proxy_rps: float
    events: int
    samples: int
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float
    drained_s: float  # after the load stopped, until every event was applied


@dataclass
class Report:
    apply: list[ApplyRun] = field(default_factory=list)
    lag: list[LagRun] = field(default_factory=list)
    environment: dict = field(default_factory=dict)


def request_events(count: int, seed: int = 7) -> list[dict[str, str]]:
    """Stream fields of `count` realistic request events, in the proxy's shape."""
    rng = random.Random(seed)
    pool = []
    for i in range(min(count, 4096)):
        h = rng.randrange(len(HOSTS))
        status = rng.choices((200, 201, 204, 301, 304, 400, 401, 404, 429, 500, 502, 503),
                             weights=(60, 4, 3, 2, 8, 3, 2, 8, 1, 1, 1, 1))[0]
        data = {"host": HOSTS[h], "route_id": f"rt_{h:012d}",
                "method": rng.choices(("GET", "POST", "PUT", "DELETE", "HEAD"),
                                      (70, 18, 6, 3, 3))[0],
                "path": f"/api/v1/orders/{rng.randrange(10**6)}/items", "status": status,
                "duration_ms": round(rng.lognormvariate(3.0, 1.0), 3),
                "bytes_in": rng.randrange(0, 4000), "bytes_out": rng.randrange(300, 250_000),
                "upstream": f"http://10.0.{h}.{10 + i % 2}:8000",
                "client_ip": f"203.0.113.{rng.randrange(1, 255)}", "error": ""}
        pool.append(Event.create("proxy_request_completed", "proxy", data["host"], data,
                                 trace_id=f"{i:032x}").to_fields())
    return [pool[i % len(pool)] for i in range(count)]


def fill(client: redis.Redis, events: list[dict[str, str]]) -> None:
    for start in range(0, len(events), 5000):
        pipe = client.pipeline(transaction=False)
        for fields in events[start:start + 5000]:
            pipe.xadd(STREAM, fields)
        pipe.execute()


def applied(client: redis.Redis) -> int:
    """Request events the consumers applied, of any type (completed, failed)."""
    counts = client.hgetall(keys.METRICS_EVENTS)
    return sum(int(v) for k, v in counts.items() if k.startswith("request:"))


def start_consumers(url: str, count: int, workdir: Path) -> list[Proc]:
    env = {"REDIS_URL": url, "BERTH_LOG_LEVEL": "warning", "BERTH_LOG_FORMAT": "text"}
    return [Proc([sys.executable, "-m", "workers.consumers"],
                 workdir / f"consumer-{count}-{i}.log", env=env) for i in range(count)]


def stop_all(procs: list[Proc]) -> None:
    for proc in procs:
        proc.stop()


# -- 1. apply rate -------------------------------------------------------------------------------


def bench_apply(server: RedisServer, client: redis.Redis, n: int, consumers: int,
                workdir: Path) -> ApplyRun:
    client.flushdb()
    fill(client, request_events(n))
    procs = start_consumers(server.url, consumers, workdir)
    try:
        deadline = time.monotonic() + 600
        while applied(client) == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        first, started = applied(client), time.perf_counter()
        cpu = [cpu_seconds(p.pid) for p in procs], redis_cpu_seconds(client)
        while applied(client) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        consumer_cpu = sum(cpu_seconds(p.pid) for p in procs) - sum(cpu[0])
        redis_cpu = redis_cpu_seconds(client) - cpu[1]
    finally:
        stop_all(procs)
    done = applied(client) - first
    if applied(client) != n:
        raise RuntimeError(f"{consumers} consumer(s) applied {applied(client)} of {n} events")
    return ApplyRun(consumers, done, seconds, done / seconds, consumer_cpu / done * 1e6,
                    redis_cpu / done * 1e6)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


# -- 2. lag at the proxy's peak rate -------------------------------------------------------------


def lag_seconds(client: redis.Redis) -> float:
    """Age of the oldest request event not applied yet: pending in a batch, or unread."""
    oldest = None
    pending = client.xpending(STREAM, GROUP)
    if pending["pending"]:
        oldest = pending["min"]
    else:
        group = next((g for g in client.xinfo_groups(STREAM) if g["name"] == GROUP), None)
        if group is not None:
            unread = client.xrange(STREAM, min=f"({group['last-delivered-id']}", count=1)
            oldest = unread[0][0] if unread else None
    if oldest is None:
        return 0.0
    return max(0.0, time.time() - int(oldest.split("-")[0]) / 1000)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] if ordered else 0.0


def bench_lag(server: RedisServer, client: redis.Redis, proxy_port: int, consumers: int,
              duration: int, connections: int, workdir: Path) -> LagRun:
    client.delete(STREAM, keys.METRICS_EVENTS)
    procs = start_consumers(server.url, consumers, workdir)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                g["name"] == GROUP for g in _groups(client)):
            time.sleep(0.05)
        samples: list[float] = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append(lag_seconds(client))
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = wrk(proxy_port, "/small", duration, connections, 1)
        stop.set()
        sampler.join()
        ended = time.perf_counter()
        published = _published(client)
        while applied(client) < published and time.perf_counter() - ended < 120:
            time.sleep(0.01)
            published = _published(client)
        drained = time.perf_counter() - ended
    finally:
        stop_all(procs)
    return LagRun(consumers, result["rps"], applied(client), len(samples),
                  percentile(samples, 0.5), percentile(samples, 0.99),
                  max(samples, default=0.0), drained)


def _groups(client: redis.Redis) -> list[dict]:
    try:
        return client.xinfo_groups(STREAM)
    except redis.ResponseError:
        return []


def _published(client: redis.Redis) -> int:
    """Request events in the stream once the proxies' publishers have flushed."""
    time.sleep(0.3)  # BERTH_PUBLISHER_FLUSH_MS is 20 here; leave room for a slow flush
    return client.xlen(STREAM)


# -- run and report ------------------------------------------------------------------------------


def run(n: int, duration: int, connections: int, workdir: Path) -> Report:
    for required in ("wrk", "nginx", "redis-server"):
        if find_binary(required) is None:
            raise SystemExit(f"bench/consumer.py needs {required}: run `make bench`")
    report = Report()
    procs: list = []
    server = RedisServer(workdir / "redis").start()
    procs.append(server)
    try:
        client = create_client(server.url, socket_timeout=60)
        for consumers in (1, 2):
            report.apply.append(bench_apply(server, client, n, consumers, workdir))
            print(f"  apply, {consumers} consumer(s): "
                  f"{report.apply[-1].events_per_s:,.0f} events/s", file=sys.stderr)
        client.flushdb()
        workdir.chmod(0o755)  # nginx workers (nobody) read the backend's files
        backend, backend_port = start_backend(workdir / "backend")
        procs.append(backend)
        store = RouteStore(client)
        store.create(store.new("bench", Route.clean(
            {"host": HOST, "targets": [f"http://127.0.0.1:{backend_port}"]})))
        proxy = ProxyProcess(workdir / "proxy", server.url,
                             {"BERTH_LOG_LEVEL": "warning"}).start()
        procs.append(proxy)
        wrk(proxy.port, "/small", 1, connections, 1)  # warm up the upstream pools
        for consumers in (1, 2):
            report.lag.append(bench_lag(server, client, proxy.port, consumers, duration,
                                        connections, workdir))
            print(f"  lag, {consumers} consumer(s): p99 {report.lag[-1].lag_p99_s:.3f} s",
                  file=sys.stderr)
        report.environment = {"redis_version": client.info("server")["redis_version"],
                              "python": platform.python_version(), "cpus": os.cpu_count(),
                              "platform": platform.platform()}
    finally:
        for proc in reversed(procs):
            proc.stop()
    return report


def print_report(report: Report, n: int) -> None:
    env = report.environment
    print(f"\nberth consumer: {n:,} request events; {env['cpus']} CPUs shared by every "
          f"process; redis {env['redis_version']}, Python {env['python']}\n")
    print(f"{'apply (backlog in the stream)':<34} {'events/s':>10} {'seconds':>8} "
          f"{'consumer CPU µs/event':>22} {'Redis CPU µs/event':>19}")
    for r in report.apply:
        print(f"{r.consumers} consumer process(es){'':<13} {r.events_per_s:>10,.0f} "
              f"{r.seconds:>8.2f} {r.consumer_cpu_us:>22.1f} {r.redis_cpu_us:>19.1f}")
    print(f"\n{'lag at the proxy peak rate':<34} {'proxy rps':>10} {'p50 s':>7} {'p99 s':>7} "
          f"{'max s':>7} {'drain s':>8} {'events':>9}")
    for r in report.lag:
        print(f"{r.consumers} consumer process(es){'':<13} {r.proxy_rps:>10,.0f} "
              f"{r.lag_p50_s:>7.3f} {r.lag_p99_s:>7.3f} {r.lag_max_s:>7.3f} "
              f"{r.drained_s:>8.2f} {r.events:>9,}")
    one = report.apply[0].events_per_s
    cost = report.apply[0].consumer_cpu_us + report.apply[0].redis_cpu_us
    print(f"\none consumer costs {cost:.1f} µs of CPU per event, its own and Redis's; they take "
          f"turns (it waits for each transaction), so uncontended: {1e6 / cost:,.0f} events/s")
    worst = max(r.lag_p99_s for r in report.lag)
    print(f"\ntargets: one consumer >= {TARGET_EVENTS_S:,} events/s: {one:,.0f} "
          f"({'met' if one >= TARGET_EVENTS_S else 'NOT met'}); "
          f"lag p99 < {TARGET_LAG_P99_S:.0f} s at peak: {worst:.3f} s "
          f"({'met' if worst < TARGET_LAG_P99_S else 'NOT met'})")
    print(f"figures in bench/results/{RESULTS_PATH.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="backlog size for apply")
    parser.add_argument("--duration", type=int, default=10, help="seconds of proxy load")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--quick", action="store_true", help="50,000 events, 4 s of load")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.duration = 50_000, 4
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
        report = run(args.events, args.duration, args.connections, Path(tmp))
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(asdict(report), indent=2) + "\n")
    print_report(report, args.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
