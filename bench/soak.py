"""Soak: minutes at a fixed rate near the proxy's peak, events on, the consumer following.

    .venv/bin/python -m bench.soak                          # 10 minutes, 1-minute windows
    .venv/bin/python -m bench.soak --minutes 1 --window 10  # a short try
    .venv/bin/python -m bench.soak --peers nginx,caddy      # then the same soak through each

One run on this machine, every listener on a free loopback port: redis-server, nginx as the
backend (bench/proxy.py's), and berth's processes as the Procfile runs them: the proxy
(gunicorn, 2 gevent workers, request events on, the Publisher's production flush interval),
the consumer, the worker, the scheduler and the web process.

1. peak: wrk (keep-alive, --connections) measures the proxy's rate for --peak seconds. Then the
   peak the soak's own client can drive: this client costs more CPU per request than wrk, on
   the same 2 CPUs, so wrk's figure cannot be held with it. Probes of --probe seconds at the
   fixed rate, from wrk's peak down in 10% steps, until one keeps up (every request answered,
   and never more than 100 ms worth of them waiting for a free connection).
2. soak: the fixed-rate client (bench/fixed_rate.py: open loop, each latency counted from the
   request's scheduled time, so stalls are not hidden) sends GET /small at --load (0.8) of
   that sustained peak, in its own process, for --warmup seconds not reported, then
   --minutes in windows of --window seconds. Every 0.5 s the consumer's lag is sampled (the
   age of the oldest request event not yet applied).
3. drain: after the load, until the consumer has applied every event added to the stream.
4. peers (--peers nginx,caddy): once berth's processes are stopped, each peer proxy from
   bench/proxy.py in front of its own nginx backend, at berth's rate, through the same client,
   for the same warm-up and windows: how flat a p99 this machine allows, beside berth's.

Printed: per window the requests, errors, p50/p99/max latency, the most requests queued for
a free connection (above 0: the proxy fell behind the rate), consumer lag (p99, max) and the
request stream's length; the RSS of every process when the measured soak starts and when it
ends, and its share of a CPU over the measured soak (the load client's too: how busy the 2
shared cores were); events added, applied and dropped. Two settings differ from the
defaults: the stream is capped at --maxlen entries (BERTH_EVENTS_MAXLEN's million takes
longer than a soak to fill, and Redis's growth up to it would read as a leak; the warm-up
lasts until it is full), and idle keep-alive connections stay open for a window (the client,
unlike browsers, does not retry a request on a connection the proxy closed while idle).
Targets: zero errors, p99 flat within 20% (max/min over the windows), RSS growth under 20 MB
for every berth process. Beside max/min, the p99's drift over the run (Theil-Sen) is printed
but not judged: uneven windows and a p99 that climbs are different faults.
Figures are written to bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

from app import redis as keys
from app.models import Route
from app.redis import create_client
from app.stores import RouteStore
from bench.consumer import GROUP, STREAM, applied, lag_seconds, percentile, start_consumers
from bench.fixed_rate import run as fixed_rate
from bench.proxy import HOST, PEERS, start_backend, wrk
from harness.procs import Proc, RedisServer, find_binary, free_port, wait_for_port, wait_until
from harness.proxy import ProxyProcess
from harness.worker import start_process

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "soak.json"
PATH = "/small"
TARGET_FLAT = 1.2  # max/min of the windows' p99
TARGET_RSS_MB = 20.0


@dataclass
class Window:
    index: int
    seconds: float
    rate: float
    achieved_rate: float
    completed: int
    errors: int  # non-2xx/3xx, broken connections, and requests never answered
    p50_ms: float
    p99_ms: float
    max_ms: float
    lag_p99_s: float
    lag_max_s: float
    stream_length: int
    max_queue: int  # most requests waiting for a free connection: the proxy fell behind


@dataclass
class Report:
    peak_rps: float = 0.0  # wrk
    sustained_rps: float = 0.0  # the fixed-rate client (see sustained_peak)
    rate: float = 0.0
    windows: list[Window] = field(default_factory=list)
    rss_start_kib: dict[str, int] = field(default_factory=dict)
    rss_end_kib: dict[str, int] = field(default_factory=dict)
    cpu_percent: dict[str, float] = field(default_factory=dict)  # of one CPU, measured soak
    restarted: list[str] = field(default_factory=list)  # a process whose pid changed
    exited: list[str] = field(default_factory=list)
    redis_used_memory: tuple[int, int] = (0, 0)  # bytes, start and end
    events_added: int = 0
    events_applied: int = 0
    events_dropped: int = 0
    drained_s: float = 0.0
    environment: dict = field(default_factory=dict)
    peers: list[PeerSoak] = field(default_factory=list)


@dataclass
class PeerSoak:
    """A peer proxy soaked after berth at berth's rate, through the same client and in the
    same windows, alone on the machine with its backend: the flatness this machine allows."""

    name: str
    windows: list[dict] = field(default_factory=list)  # the client's summary of each window
    cpu_percent: float = 0.0  # the peer's processes, of one CPU, over the measured windows
    load_client_cpu_percent: float = 0.0
    skipped: str = ""  # why it was not measured

    @property
    def errors(self) -> int:
        return sum(w["errors"] + w["dropped"] for w in self.windows)


# -- processes -----------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            found += [int(p) for p in (task / "children").read_text().split()]
    return sorted(found)


def process_tree(roles: dict[str, int]) -> dict[str, int]:
    """label -> pid for every role's process and its descendants (e.g. gunicorn's workers)."""
    tree = {}
    for role, root in roles.items():
        tree[role] = root
        pending, found = children(root), []
        while pending:
            pid = pending.pop(0)
            found.append(pid)
            pending += children(pid)
        for i, pid in enumerate(sorted(found), 1):
            tree[f"{role} child {i}"] = pid
    return tree


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def running(pid: int) -> bool:
    """Alive, and not a zombie (a child that exited stays in /proc until it is reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Usage:
    """RSS and CPU time of each process, read together."""

    at: float
    rss_kib: dict[str, int]
    cpu_s: dict[str, float]

    @classmethod
    def read(cls, tree: dict[str, int]) -> Usage:
        usage = cls(time.monotonic(), {}, {})
        for label, pid in tree.items():
            try:
                usage.rss_kib[label], usage.cpu_s[label] = rss_kib(pid), cpu_seconds(pid)
            except FileNotFoundError:
                usage.rss_kib[label], usage.cpu_s[label] = 0, 0.0
        return usage

    def cpu_percent_until(self, end: Usage) -> dict[str, float]:
        """Each process's share of one CPU between the two readings."""
        return {label: self.share_until(end, end.cpu_s.get(label, 0.0) - used)
                for label, used in self.cpu_s.items()}

    def share_until(self, end: Usage, cpu_s: float) -> float:
        """`cpu_s` of CPU time as a share (%) of one CPU between the two readings."""
        return round(100 * cpu_s / (end.at - self.at), 1)


class Platform:
    """Redis, the backend and berth's processes, started in `workdir`, stopped by PID."""

    def __init__(self, workdir: Path, maxlen: int, window_s: float):
        self.workdir = workdir
        self.maxlen = maxlen
        self.window_s = window_s
        self.stoppable: list = []
        self.roles: dict[str, int] = {}  # berth's processes and Redis: judged by the targets
        self.peers: dict[str, int] = {}  # the backend: reported only

    def start(self) -> Platform:
        self.redis_server = self._keep(RedisServer(self.workdir / "redis").start())
        self.roles["redis-server"] = self.redis_server.proc.pid
        self.client = create_client(self.redis_server.url, socket_timeout=60)
        self.workdir.chmod(0o755)  # nginx workers (nobody) read the backend's files
        backend, backend_port = start_backend(self.workdir / "backend")
        self.peers["nginx backend"] = self._keep(backend).pid
        store = RouteStore(self.client)
        store.create(store.new("soak", Route.clean(
            {"host": HOST, "targets": [f"http://127.0.0.1:{backend_port}"]})))
        env = {"REDIS_URL": self.redis_server.url, "BERTH_LOG_LEVEL": "warning",
               "BERTH_LOG_FORMAT": "text", "BERTH_EVENTS_MAXLEN": str(self.maxlen),
               "BERTH_WEB_PORT": str(free_port()),
               # No engine here: the worker and scheduler run, service commands fail clearly.
               "DOCKER_HOST": f"unix://{self.workdir}/no-docker.sock"}
        # The load client opens its connections per window and, unlike a browser, does not
        # retry a request on a keep-alive connection the server closed while it sat idle: keep
        # them open for the window, so the proxy's idle timer is not counted as errors.
        keepalive_s = str(int(self.window_s) + 30)
        self.proxy = self._keep(ProxyProcess(self.workdir / "proxy", self.redis_server.url, {
            **env, "BERTH_PUBLISHER_FLUSH_MS": "100",
            "BERTH_PROXY_KEEPALIVE_S": keepalive_s}).start())
        self.roles["proxy"] = self.proxy.proc.pid
        (consumer,) = start_consumers(self.redis_server.url, 1, self.workdir)
        self.roles["consumer"] = self._keep(consumer).pid
        for name in ("worker", "scheduler", "web"):
            proc = self._keep(start_process(name, env, self.workdir / f"{name}.log"))
            self.roles[name] = proc.pid
        wait_for_port(int(env["BERTH_WEB_PORT"]), timeout=60)
        wait_until(lambda: {m.split("/")[0] for m in self.client.hkeys(keys.HEARTBEATS)}
                   >= {"worker", "scheduler", "consumer"}, timeout=60, what="heartbeats")
        return self

    def _keep(self, proc):
        self.stoppable.append(proc)
        return proc

    def alive(self) -> list[str]:
        return [role for role, pid in self.roles.items() if running(pid)]

    def stop(self) -> None:
        for proc in reversed(self.stoppable):
            proc.stop()


# -- load ----------------------------------------------------------------------------------------


def load_client(port: int, rate: float, warmup_s: float, windows: int, window_s: float,
                connections: int, out) -> None:
    """The fixed-rate client, in its own process (so sampling here adds no jitter to it)."""
    headers = {"Host": HOST}
    warm = fixed_rate("127.0.0.1", port, PATH, rate=rate, duration=warmup_s, warmup=0,
                      connections=connections, headers=headers)
    out.put(("warm", {**warm.summary(), "cpu_s": sum(os.times()[:2])}))
    for _ in range(windows):
        result = fixed_rate("127.0.0.1", port, PATH, rate=rate, duration=window_s, warmup=0,
                            connections=connections, headers=headers)
        out.put(("window", {**result.summary(), "completed": result.completed,
                            "cpu_s": sum(os.times()[:2])}))


def start_load(port: int, rate: float, warmup_s: float, args):
    """The load client's process and the queue its figures come back on."""
    results: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
    loader = multiprocessing.get_context("fork").Process(
        target=load_client, daemon=True,
        args=(port, rate, warmup_s, window_count(args), args.window, args.connections, results))
    loader.start()
    return loader, results


def stop_load(loader) -> None:
    loader.join(timeout=30)
    if loader.is_alive():
        loader.kill()


def window_count(args) -> int:
    return max(1, round(args.minutes * 60 / args.window))


def soak(platform: Platform, report: Report, args) -> None:
    client = platform.client
    windows = window_count(args)
    # Warm up until the stream reaches its cap too, so Redis is at its steady size when the
    # measured soak starts.
    warmup_s = max(args.warmup, 1.2 * (args.maxlen - client.xlen(STREAM)) / report.rate)
    loader, results = start_load(platform.proxy.port, report.rate, warmup_s, args)
    try:
        # The warm-up's figures are not reported. The client's own CPU time comes with its
        # figures: it exits after the last window, before the processes here are read.
        _kind, warm = results.get(timeout=warmup_s + 120)
        tree = process_tree(platform.roles)
        start = Usage.read({**tree, **process_tree(platform.peers)})
        report.rss_start_kib = start.rss_kib
        report.redis_used_memory = (client.info("memory")["used_memory"], 0)
        lags: list[float] = []
        while len(report.windows) < windows:
            try:
                _kind, summary = results.get(timeout=0.5)
            except queue.Empty:
                if not loader.is_alive():
                    raise RuntimeError("the load client exited") from None
                lags.append(lag_seconds(client))
                continue
            report.windows.append(window(len(report.windows) + 1, args.window, summary, lags,
                                         client.xlen(STREAM)))
            lags = []
            print_window(report.windows[-1])
        end = Usage.read({**process_tree(platform.roles), **process_tree(platform.peers)})
        report.rss_end_kib = end.rss_kib
        report.cpu_percent = start.cpu_percent_until(end)
        report.cpu_percent["load client"] = start.share_until(end, summary["cpu_s"] - warm["cpu_s"])
        report.restarted = [label for label, pid in process_tree(platform.roles).items()
                            if tree.get(label) not in (None, pid)]
        report.redis_used_memory = (report.redis_used_memory[0],
                                    client.info("memory")["used_memory"])
    finally:
        stop_load(loader)


def soak_peer(name: str, rate: float, args, workdir: Path) -> PeerSoak:
    """`name` (bench/proxy.py's PEERS) in front of its own nginx backend, at `rate`, both in
    `workdir`."""
    binary, start = PEERS[name]
    peer = PeerSoak(name)
    if find_binary(binary) is None:
        peer.skipped = f"{binary} not installed"
        return peer
    (workdir / name).mkdir(parents=True)  # the peers' start functions expect it
    procs = []
    try:
        backend, backend_port = start_backend(workdir / "backend")
        procs.append(backend)
        proc, port = start(workdir / name, backend_port)
        procs.append(proc)
        loader, results = start_load(port, rate, args.warmup, args)
        try:
            _kind, warm = results.get(timeout=args.warmup + 120)
            start_usage = Usage.read(process_tree({name: proc.pid}))
            while len(peer.windows) < window_count(args):
                _kind, summary = results.get(timeout=args.window + 120)
                peer.windows.append(summary)
                print(f"  {name} window {len(peer.windows):>3}: p99 {summary['p99_ms']:7.2f} ms",
                      file=sys.stderr, flush=True)
            end_usage = Usage.read(process_tree({name: proc.pid}))
            peer.cpu_percent = round(sum(start_usage.cpu_percent_until(end_usage).values()), 1)
            peer.load_client_cpu_percent = start_usage.share_until(
                end_usage, summary["cpu_s"] - warm["cpu_s"])
        finally:
            stop_load(loader)
    finally:
        for proc in reversed(procs):
            proc.stop()
    return peer


def sustained_peak(port: int, start: float, args, max_probes: int = 12) -> float:
    """The highest rate, from `start` down in 10% steps, that the fixed-rate client holds for a
    --probe seconds: every request answered, and never more than 100 ms worth of requests
    waiting for a free connection (a growing backlog would only show minutes later)."""
    rate = start
    for _ in range(max_probes):
        probe = fixed_rate("127.0.0.1", port, PATH, rate=rate, duration=args.probe, warmup=1,
                           connections=args.connections, headers={"Host": HOST})
        if not probe.overloaded and probe.max_queue <= rate * 0.1:
            print(f"  {rate:,.0f} req/s: kept up (p99 {probe.p99_ms:.1f} ms, queue "
                  f"{probe.max_queue})", file=sys.stderr, flush=True)
            return round(rate)
        print(f"  {rate:,.0f} req/s: fell behind ({probe.achieved_rate:,.0f}/s answered, "
              f"queue {probe.max_queue})", file=sys.stderr, flush=True)
        time.sleep(2)  # let the backlog drain
        rate *= 0.9
    raise RuntimeError(f"the proxy kept up with no rate down to {rate:,.0f} req/s")


def window(index: int, seconds: float, summary: dict, lags: list[float], length: int) -> Window:
    return Window(index, seconds, summary["rate"], summary["achieved_rate"],
                  summary["completed"], summary["errors"] + summary["dropped"],
                  summary["p50_ms"], summary["p99_ms"], summary["max_ms"],
                  percentile(lags, 0.99), max(lags, default=0.0), length, summary["max_queue"])


def drain(client: redis.Redis, report: Report, timeout: float = 120) -> None:
    """Until the consumer applied every request event the stream took in."""
    started = time.monotonic()
    time.sleep(0.3)  # the proxies' last Publisher flush
    while time.monotonic() - started < timeout:
        report.events_added = client.xinfo_stream(STREAM)["entries-added"]
        report.events_applied = applied(client)
        if report.events_applied >= report.events_added:
            break
        time.sleep(0.05)
    report.drained_s = time.monotonic() - started
    report.events_dropped = int(client.get(keys.EVENTS_DROPPED) or 0)


# -- report --------------------------------------------------------------------------------------


def print_window(w: Window) -> None:
    print(f"  window {w.index:>3}: {w.completed:>8,} requests at {w.achieved_rate:>7,.0f}/s, "
          f"{w.errors} errors, p99 {w.p99_ms:7.2f} ms, lag p99 {w.lag_p99_s:.3f} s",
          file=sys.stderr, flush=True)


def mb(kib: int) -> float:
    return kib * 1024 / 1e6


def judged(label: str) -> bool:
    """Berth's processes and Redis; the nginx backend and the load client are peers."""
    return not label.startswith(("nginx backend", "load client"))


def trend(values: list[float]) -> float | None:
    """How far a series moved over the run, as a fraction of its median: the Theil-Sen slope
    (the median of every pairwise slope, so one bad window cannot tilt it) times the run's
    length. Max/min says how uneven the windows were; this says whether they drifted, which
    is what a leak or a growing queue would do."""
    if len(values) < 2 or statistics.median(values) <= 0:
        return None
    slopes = [(values[j] - values[i]) / (j - i)
              for i in range(len(values)) for j in range(i + 1, len(values))]
    return statistics.median(slopes) * (len(values) - 1) / statistics.median(values)


def print_report(report: Report, args) -> bool:
    env = report.environment
    held = (f"{report.rate / report.sustained_rps:.0%} of the {report.sustained_rps:,.0f} req/s "
            "the fixed-rate client held, " if report.sustained_rps else "")
    print(f"\nberth soak: {len(report.windows)} x {args.window:g} s at {report.rate:,.0f} req/s "
          f"({held}{report.rate / report.peak_rps:.0%} of wrk's peak {report.peak_rps:,.0f} "
          f"req/s, -c{args.connections}); {env['cpus']} CPUs shared by every process; "
          f"redis {env['redis_version']}, Python {env['python']}; stream MAXLEN ~{args.maxlen:,}"
          "\n")
    print(f"{'window':>6} {'req/s':>8} {'requests':>9} {'errors':>6} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>8} {'queued':>6} {'lag p99 s':>9} {'lag max s':>9} "
          f"{'stream':>8}")
    for w in report.windows:
        print(f"{w.index:>6} {w.achieved_rate:>8,.0f} {w.completed:>9,} {w.errors:>6} "
              f"{w.p50_ms:>7.2f} {w.p99_ms:>7.2f} {w.max_ms:>8.1f} {w.max_queue:>6} "
              f"{w.lag_p99_s:>9.3f} {w.lag_max_s:>9.3f} {w.stream_length:>8,}")
    print(f"\n{'process':<24} {'RSS start MB':>12} {'RSS end MB':>10} {'growth MB':>9} "
          f"{'CPU %':>6}")
    growth = {}
    for label, start in report.rss_start_kib.items():
        end = report.rss_end_kib.get(label, 0)
        growth[label] = mb(end - start)
        peer = "" if judged(label) else " (peer, not judged)"
        print(f"{label:<24} {mb(start):>12.1f} {mb(end):>10.1f} {growth[label]:>+9.1f} "
              f"{report.cpu_percent.get(label, 0):>6.1f}{peer}")
    print(f"{'load client':<24} {'':>12} {'':>10} {'':>9} "
          f"{report.cpu_percent.get('load client', 0):>6.1f} (peer, not judged)")
    print(f"CPU used by every process listed: {sum(report.cpu_percent.values()):.0f}% of one "
          f"CPU, of the {env['cpus'] * 100}% the machine has")
    used = report.redis_used_memory
    print(f"redis used_memory: {used[0] / 1e6:.1f} MB -> {used[1] / 1e6:.1f} MB")
    print(f"\nevents: {report.events_added:,} added to {STREAM}, {report.events_applied:,} applied "
          f"by the consumer (group {GROUP}), {report.events_dropped:,} dropped by publishers; "
          f"drained {report.drained_s:.2f} s after the load")
    if report.restarted or report.exited:
        print(f"restarted: {report.restarted or '-'}; exited: {report.exited or '-'}")

    errors = sum(w.errors for w in report.windows)
    p99s = [w.p99_ms for w in report.windows]
    flat = max(p99s) / min(p99s) if len(p99s) > 1 and min(p99s) > 0 else None
    berths = {k: v for k, v in growth.items() if judged(k)}
    worst = max(berths, key=berths.get)
    checks = [
        ("zero errors", errors == 0, f"{errors}"),
        ("p99 flat within 20% (max/min)", flat is None or flat <= TARGET_FLAT,
         f"{flat:.2f}" if flat is not None else "n/a with one window"),
        (f"RSS growth < {TARGET_RSS_MB:g} MB per process", berths[worst] < TARGET_RSS_MB,
         f"largest {berths[worst]:+.1f} MB ({worst})"),
        ("no process restarted or exited", not (report.restarted or report.exited), ""),
        ("every event applied", report.events_applied >= report.events_added
         and not report.events_dropped, f"{report.events_applied:,}/{report.events_added:,}"),
    ]
    print("\ntargets:")
    for name, ok, value in checks:
        print(f"  {name}: {value} ({'met' if ok else 'NOT met'})")
    drift = trend(p99s)
    if drift is not None:
        print(f"  (not a target) p99 trend over the run, Theil-Sen: {drift:+.0%} of its median")
    if report.peers:
        print_peers(report, p99s)
    print(f"figures in bench/results/{RESULTS_PATH.name}")
    return all(ok for _, ok, _ in checks)


def print_peers(report: Report, p99s: list[float]) -> None:
    print(f"\npeers after berth, each alone with its backend: {report.rate:,.0f} req/s through "
          "the same client in the same windows (not judged)")
    print(f"{'proxy':<10} {'p99 min ms':>10} {'p99 max ms':>10} {'max/min':>7} {'trend':>6} "
          f"{'errors':>6} {'CPU %':>6} {'client CPU %':>12}")
    berth_cpu = sum(v for k, v in report.cpu_percent.items() if judged(k))
    rows = [("berth", p99s, sum(w.errors for w in report.windows), berth_cpu,
             report.cpu_percent.get("load client", 0.0))]
    rows += [(peer.name, [w["p99_ms"] for w in peer.windows], peer.errors, peer.cpu_percent,
              peer.load_client_cpu_percent) for peer in report.peers if not peer.skipped]
    for name, values, errors, cpu, client_cpu in rows:
        drift = trend(values)
        print(f"{name:<10} {min(values):>10.2f} {max(values):>10.2f} "
              f"{max(values) / min(values):>7.2f} "
              f"{f'{drift:+.0%}' if drift is not None else 'n/a':>6} "
              f"{errors:>6} {cpu:>6.1f} {client_cpu:>12.1f}")
    for peer in report.peers:
        if peer.skipped:
            print(f"{peer.name:<10} skipped: {peer.skipped}")
    print("CPU %: of one CPU, the proxy's processes (berth's: all of them and Redis); trend: "
          "the p99's Theil-Sen drift over the run, of its median")


def run(args, workdir: Path) -> Report:
    for required in ("wrk", "nginx", "redis-server"):
        if find_binary(required) is None:
            raise SystemExit(f"bench/soak.py needs {required}: run `make bench`")
    report = Report()
    platform = Platform(workdir, args.maxlen, args.window)
    try:
        platform.start()
        port = platform.proxy.port
        wrk(port, PATH, 1, args.connections, 1)  # warm up the upstream pools
        report.peak_rps = wrk(port, PATH, args.peak, args.connections, 1)["rps"]
        if not args.rate:
            report.sustained_rps = sustained_peak(port, report.peak_rps, args)
        report.rate = args.rate or round(report.sustained_rps * args.load)
        print(f"  peak {report.peak_rps:,.0f} req/s (wrk), {report.sustained_rps:,.0f} req/s "
              f"held by the fixed-rate client; soaking at {report.rate:,.0f} req/s",
              file=sys.stderr, flush=True)
        soak(platform, report, args)
        report.exited = sorted(set(platform.roles) - set(platform.alive()))
        drain(platform.client, report)
        info = platform.client.info("server")
        report.environment = {"redis_version": info["redis_version"],
                              "python": sys.version.split()[0], "cpus": os.cpu_count()}
    except BaseException:
        procs = [p for p in platform.stoppable if isinstance(p, Proc)]
        for proc in procs + ([platform.proxy.proc] if platform.proxy.proc else []):
            if not proc.alive():  # its log goes with the temporary directory
                print(f"{proc.args}:\n{proc.output()[-3000:]}", file=sys.stderr)
        raise
    finally:
        platform.stop()
    for name in args.peers:
        try:
            report.peers.append(soak_peer(name, report.rate, args, workdir / f"peer-{name}"))
        except Exception as ex:  # berth's figures are in hand; a peer that fails loses only its own
            report.peers.append(PeerSoak(name, skipped=f"failed: {ex}"))
    return report


def peer_names(value: str) -> list[str]:
    names = [name for name in value.split(",") if name]
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer {', '.join(unknown)}; "
                                         f"choose from {', '.join(PEERS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="measured soak (default 10)")
    parser.add_argument("--window", type=float, default=60, help="seconds per p99 window")
    parser.add_argument("--load", type=float, default=0.8,
                        help="fraction of the peak the fixed-rate client holds (default 0.8)")
    parser.add_argument("--rate", type=float, default=0,
                        help="req/s (default: --load x that peak; skips finding it)")
    parser.add_argument("--probe", type=float, default=10,
                        help="seconds per probe when finding that peak")
    parser.add_argument("--peak", type=int, default=5, help="seconds of wrk for the peak")
    parser.add_argument("--warmup", type=float, default=20,
                        help="least seconds at the rate, unmeasured (longer until the stream "
                             "is at --maxlen)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--maxlen", type=int, default=50_000,
                        help="BERTH_EVENTS_MAXLEN of the run (request stream cap)")
    parser.add_argument("--peers", type=peer_names, default=[],
                        help="comma-separated peers soaked after berth at its rate, in the same "
                             f"windows: {','.join(PEERS)}")
    args = parser.parse_args(argv)
    # A SIGTERM (`timeout`, `kill`) unwinds like Ctrl-C, so the processes started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="berth-soak-") as tmp:
        report = run(args, Path(tmp))
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps({"args": vars(args), **asdict(report)}, indent=2) + "\n")
    return 0 if print_report(report, args) else 1


if __name__ == "__main__":
    sys.exit(main())
