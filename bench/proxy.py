"""Reverse-proxy throughput and latency: berth against nginx, HAProxy, Caddy and mitmproxy.

One run measures, with wrk over keep-alive connections, every proxy in front of the same
fixed nginx backend, for a small body and a 16 KiB body:

  direct        wrk -> backend (the ceiling)
  nginx         nginx as a reverse proxy (upstream keepalive), 2 workers
  haproxy       HAProxy, 2 threads, connection reuse
  caddy         Caddy's reverse_proxy (GOMAXPROCS=2), when installed
  mitmproxy     mitmdump in reverse mode, when installed
  berth         the real proxy (gunicorn, 2 gevent workers), request events on
  berth-noevt   the same with BERTH_PROXY_REQUEST_EVENTS=off
  berth-shared  events on, one listening socket inherited and shared by the workers, as
                supervisord passes it under `make run` (the others: one socket per worker)

and prints req/s, p50 and p99 per proxy and body, then berth's ratio to each peer and what
request events cost (berth-noevt against berth).

Then latency at a fixed rate: half of berth's peak (events on, per body), sent open-loop by
bench/fixed_rate.py over the same number of keep-alive connections, each latency measured
from the request's scheduled send time (so queueing behind a stall is counted, unlike wrk's).
Measured for direct, berth, berth-noevt and every peer whose peak was above the rate; the
table shows p50/p99/p99.9 and the p99 berth adds over direct (target: under 2 ms).

Peers that are not installed are reported as such (`make bench` installs wrk, nginx and
HAProxy; Caddy and mitmproxy come from the Debian packages of the same names). Figures also
go to bench/results/proxy.json.

    python -m bench.proxy [--duration 8] [--connections 32] [--threads 1] [--rounds 1]
                          [--fixed-duration 8] [--only berth,caddy]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.models import Route  # noqa: E402
from app.redis import create_client  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.stores import RouteStore  # noqa: E402
from bench import fixed_rate  # noqa: E402
from harness.procs import Proc, RedisServer, find_binary, free_port, wait_for_port  # noqa: E402
from harness.proxy import ProxyProcess  # noqa: E402

HOST = "bench.test"
BODIES = {"small": "/small", "16KiB": "/16k"}
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "proxy.json"


def nginx_conf(workdir: Path, port: int, location: str, *, workers: int,
               http_extra: str = "") -> Path:
    """An nginx config for one server on `port` whose `location /` holds `location`."""
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes {workers};
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/client_body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  keepalive_requests 1000000;
  {http_extra}
  server {{
    listen 127.0.0.1:{port};
    location / {{ {location} }}
  }}
}}
""")
    return conf


def start_backend(workdir: Path) -> tuple[Proc, int]:
    """nginx serving /small (13 bytes) and /16k (16 KiB) from cached files."""
    root = workdir / "www"
    root.mkdir(parents=True)
    (root / "small").write_bytes(b"hello, berth\n")
    (root / "16k").write_bytes(os.urandom(16 * 1024))
    for path in (workdir, root, *root.iterdir()):  # nginx workers run as nobody
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    conf = nginx_conf(workdir, port, f"root {root}; open_file_cache max=16; "
                      "default_type text/plain;", workers=1)
    return _start([find_binary("nginx"), "-p", str(workdir), "-c", str(conf)], workdir, port)


def start_nginx_proxy(workdir: Path, backend: int) -> tuple[Proc, int]:
    port = free_port()
    conf = nginx_conf(workdir, port, "proxy_pass http://backend; proxy_http_version 1.1; "
                      "proxy_set_header Connection \"\"; proxy_set_header Host $host;",
                      workers=2, http_extra=f"upstream backend {{ server 127.0.0.1:{backend}; "
                      "keepalive 64; }")
    return _start([find_binary("nginx"), "-p", str(workdir), "-c", str(conf)], workdir, port)


def start_haproxy(workdir: Path, backend: int) -> tuple[Proc, int]:
    port = free_port()
    conf = workdir / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread 2
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:{port}
  default_backend backend
backend backend
  server s1 127.0.0.1:{backend} maxconn 1024
""")
    return _start([find_binary("haproxy"), "-f", str(conf), "-db"], workdir, port)


def start_caddy(workdir: Path, backend: int) -> tuple[Proc, int]:
    port = free_port()
    conf = workdir / "Caddyfile"
    conf.write_text(f"{{\n  admin off\n  auto_https off\n}}\n"
                    f"http://:{port} {{\n  bind 127.0.0.1\n"
                    f"  reverse_proxy 127.0.0.1:{backend}\n}}\n")
    env = {"GOMAXPROCS": "2", "XDG_DATA_HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir),
           "HOME": str(workdir)}
    return _start([find_binary("caddy"), "run", "--config", str(conf), "--adapter", "caddyfile"],
                  workdir, port, env)


def start_mitmproxy(workdir: Path, backend: int) -> tuple[Proc, int]:
    port = free_port()
    return _start([find_binary("mitmdump"), "--mode", f"reverse:http://127.0.0.1:{backend}/",
                   "--listen-host", "127.0.0.1", "--listen-port", str(port), "-q",
                   "--set", f"confdir={workdir}"], workdir, port, {"HOME": str(workdir)})


# name: (binary, start(workdir, backend port) -> (process, port)); the workdir must exist.
PEERS = {"nginx": ("nginx", start_nginx_proxy), "haproxy": ("haproxy", start_haproxy),
         "caddy": ("caddy", start_caddy), "mitmproxy": ("mitmdump", start_mitmproxy)}


def _start(args: list[str], workdir: Path, port: int,
           env: dict | None = None) -> tuple[Proc, int]:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = Proc(args, workdir / "process.log", env=env)
    wait_for_port(port, timeout=20, proc=proc.popen)
    return proc, port


def wrk(port: int, path: str, duration: int, connections: int, threads: int) -> dict:
    out = subprocess.run(
        [find_binary("wrk"), f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
         "-H", f"Host: {HOST}", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": _latency(out, "50%"), "p99": _latency(out, "99%"),
            "errors": int(errors.group(1)) if errors else 0}


def _latency(out: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measurements per target and body, taking turns; the median is shown")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. berth,caddy "
                        "(direct is always measured)")
    parser.add_argument("--fixed-duration", type=float, default=8.0,
                        help="seconds per fixed-rate latency measurement (0: skip them)")
    args = parser.parse_args()
    for required in ("wrk", "nginx", "redis-server"):
        if find_binary(required) is None:
            raise SystemExit(f"bench/proxy.py needs {required}: run `make bench`")

    procs: list = []
    results: dict[str, dict] = {}
    latency: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # the backend's nginx workers (nobody) read files below it
        try:
            backend, backend_port = start_backend(workdir / "backend")
            procs.append(backend)
            targets = {"direct": backend_port}
            only = set(filter(None, args.only.split(",")))
            for name, (binary, start) in PEERS.items():
                if only and name not in only:
                    continue
                if find_binary(binary) is None:
                    results[name] = {"missing": f"{binary} not installed"}
                    continue
                (workdir / name).mkdir()
                proc, port = start(workdir / name, backend_port)
                procs.append(proc)
                targets[name] = port
            redis_server = RedisServer(workdir / "redis").start()
            procs.append(redis_server)
            store = RouteStore(create_client(redis_server.url))
            store.create(store.new("bench", Route.clean(
                {"host": HOST, "targets": [f"http://127.0.0.1:{backend_port}"]})))
            for name, events, shared in (("berth", "on", False), ("berth-noevt", "off", False),
                                         ("berth-shared", "on", True)):
                if only and not only & {"berth", name}:
                    continue
                # Production's event flush interval, not the harness's shorter one for tests.
                flush_ms = str(Settings.from_env({}).publisher_flush_ms)
                proxy = ProxyProcess(workdir / name, redis_server.url,
                                     {"BERTH_PROXY_REQUEST_EVENTS": events,
                                      "BERTH_PUBLISHER_FLUSH_MS": flush_ms,
                                      "BERTH_LOG_LEVEL": "warning"},
                                     inherit_socket=shared).start()
                procs.append(proxy)
                targets[name] = proxy.port

            # Rounds take turns (every target once per round), so a busy spell of a shared
            # machine weighs on all of them; each figure is its round with the median req/s.
            samples: dict[str, dict[str, list]] = {n: {b: [] for b in BODIES} for n in targets}
            for _round in range(args.rounds):
                for name, port in targets.items():
                    for body, path in BODIES.items():
                        wrk(port, path, 1, args.connections, args.threads)  # warm up pools
                        sample = wrk(port, path, args.duration, args.connections, args.threads)
                        samples[name][body].append(sample)
                        print(f"  measured {name:<12} {body:<6} "
                              f"{sample['rps']:>10.0f} req/s", file=sys.stderr)
            for name, by_body in samples.items():
                results[name] = {body: sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
                                 for body, runs in by_body.items()}
            if args.fixed_duration > 0 and "berth" in results:
                latency = fixed_rate_latency(targets, results, args)
        finally:
            for proc in reversed(procs):
                proc.stop()
    report(results, args)
    report_latency(latency, args)
    RESULTS_PATH.parent.mkdir(exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(
        {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
         "args": vars(args), "throughput": results, "fixed_rate": latency}, indent=2))


def fixed_rate_latency(targets: dict[str, int], results: dict[str, dict], args) -> dict:
    """{body: {"rate": r, name: summary}}: every target that reached half of berth's peak
    with wrk, at that rate, open loop."""
    latency: dict[str, dict] = {}
    for body, path in BODIES.items():
        rate = round(results["berth"][body]["rps"] / 2)
        latency[body] = {"rate": rate}
        for name, port in targets.items():
            if results[name][body]["rps"] < rate:
                latency[body][name] = {"overloaded": "its peak is below this rate"}
                continue
            fixed_rate.run("127.0.0.1", port, path, rate=rate, duration=1, warmup=0,
                           connections=args.connections, headers={"Host": HOST})  # warm up
            result = fixed_rate.run("127.0.0.1", port, path, rate=rate,
                                    duration=args.fixed_duration,
                                    connections=args.connections, headers={"Host": HOST})
            latency[body][name] = result.summary()
            print(f"  fixed rate {name:<12} {body:<6} {rate:>7} req/s: "
                  f"p99 {result.p99_ms:.2f} ms", file=sys.stderr)
    return latency


def report(results: dict[str, dict], args) -> None:
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
          f"median of {args.rounds} round(s), keep-alive, "
          f"backend: nginx (1 worker); proxies with 2 workers/threads; {os.cpu_count()} CPUs; "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    print(f"{'proxy':<12} {'body':<6} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, by_body in results.items():
        if "missing" in by_body:
            print(f"{name:<12} {by_body['missing']}")
            continue
        for body, r in by_body.items():
            print(f"{name:<12} {body:<6} {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
                  f"{r['errors']:>8}")
    if not {"berth", "berth-noevt"} <= set(results):
        return
    print("\nberth req/s as a ratio of each peer's (events on / events off)")
    for peer, by_body in results.items():
        if peer.startswith("berth") or "missing" in by_body:
            continue
        cells = []
        for body in BODIES:
            on = results["berth"][body]["rps"] / by_body[body]["rps"]
            off = results["berth-noevt"][body]["rps"] / by_body[body]["rps"]
            cells.append(f"{body}: {on:.2f}x / {off:.2f}x")
        print(f"  vs {peer:<10} " + "   ".join(cells))
    cost = "   ".join(
        f"{body}: {1 - results['berth'][body]['rps'] / results['berth-noevt'][body]['rps']:.1%}"
        for body in BODIES)
    print(f"\nrequest events cost (1 - events on / events off): {cost}   (target: < 5%)")
    if "berth-shared" in results:
        shared = "   ".join(
            f"{body}: {results['berth-shared'][body]['rps'] / results['berth'][body]['rps']:.2f}x"
            for body in BODIES)
        print(f"one inherited socket (make run) / a socket per worker: {shared}")


def report_latency(latency: dict[str, dict], args) -> None:
    if not latency:
        return
    print(f"\nlatency at a fixed rate of half berth's peak (events on), open loop over "
          f"{args.connections} keep-alive connections, {args.fixed_duration:g} s after 1 s of "
          f"warm-up, measured from each request's scheduled send time (bench/fixed_rate.py)\n")
    print(f"{'proxy':<12} {'body':<6} {'req/s':>7} {'done/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'p99.9 ms':>9} {'max ms':>8} {'+p99 ms':>8} {'errors':>7}")
    for body, by_name in latency.items():
        direct = by_name.get("direct", {}).get("p99_ms")
        for name, r in by_name.items():
            if name == "rate":
                continue
            if "overloaded" in r:
                print(f"{name:<12} {body:<6} {by_name['rate']:>7} {r['overloaded']}")
                continue
            added = r["p99_ms"] - direct if direct is not None and name != "direct" else None
            print(f"{name:<12} {body:<6} {r['rate']:>7.0f} {r['achieved_rate']:>8.0f} "
                  f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['p999_ms']:>9.2f} "
                  f"{r['max_ms']:>8.2f} {'' if added is None else f'{added:+.2f}':>8} "
                  f"{r['errors'] + r['dropped']:>7}")
    print("\n+p99: the p99 a proxy adds over direct-to-backend at the same rate "
          "(target for berth: < 2 ms)")


if __name__ == "__main__":
    main()
