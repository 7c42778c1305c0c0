"""Certificate issuance: certbot and berth against the same pebble, in one run.

    .venv/bin/python -m bench.acme                 # certbot x5, berth x5 in turn, 100 at once
    .venv/bin/python -m bench.acme --quick         # certbot x2, berth x2, 20 at once
    .venv/bin/python -m bench.acme --concurrent N --sequential K

Starts its own redis-server, the real proxy (plain HTTP) and pebble + pebble-challtestsrv on
free loopback ports (no validation sleeps, no authorization reuse, so every order is really
validated over HTTP-01 through the proxy).

1. certbot (Debian's package): `certbot certonly --manual` with hooks that put the HTTP-01
   answer in the challenge store the proxy serves (redis-cli SET), one process per
   certificate as an operator runs it; an untimed first run registers the account.
2. berth, one at a time: each certificate requested as the API does (store + message) and
   timed until the real worker process has stored it; an untimed first one registers.
3. berth, N at once: N requested together, wall time until all are stored.

Seconds per certificate are from command to certificate on disk (certbot) or in the store
(berth). Every berth certificate is verified against pebble's root. Prints a table and the
ratios, and writes bench/results/acme.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app import redis as keys
from app.certificates import CertificateCommands
from app.models import Certificate
from app.redis import create_client
from app.settings import Settings
from app.stores.certificates import CertificateStore
from harness.pebble import Pebble
from harness.procs import RedisServer, find_binary, wait_until
from harness.proxy import ProxyProcess
from harness.worker import start_worker
from workers.broker import create_broker

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "acme.json"
DOMAIN = "bench.example.com"
WORKER_PROCESSES = 2
WORKER_THREADS = 32


def _hooks(directory: Path, redis_cli: str, port: int) -> tuple[Path, Path]:
    prefix = keys.acme_challenge("")
    directory.mkdir(parents=True, exist_ok=True)
    auth, cleanup = directory / "auth-hook.sh", directory / "cleanup-hook.sh"
    auth.write_text(f'#!/bin/sh\nexec {redis_cli} -p {port} SET "{prefix}$CERTBOT_TOKEN" '
                    f'"$CERTBOT_VALIDATION" EX 3600 >/dev/null\n')
    cleanup.write_text(f'#!/bin/sh\nexec {redis_cli} -p {port} DEL "{prefix}$CERTBOT_TOKEN" '
                       '>/dev/null\n')
    for hook in (auth, cleanup):
        hook.chmod(0o755)
    return auth, cleanup


def run_certbot(certbot: str, pebble: Pebble, redis: RedisServer, work: Path,
                count: int) -> list[float]:
    """Seconds for each of `count` certbot runs, after an untimed one that registers."""
    auth, cleanup = _hooks(work, find_binary("redis-cli"), redis.port)
    base = [certbot, "certonly", "--non-interactive", "--agree-tos",
            "--register-unsafely-without-email", "--server", pebble.directory_url,
            "--manual", "--preferred-challenges", "http", "--manual-auth-hook", str(auth),
            "--manual-cleanup-hook", str(cleanup), "--key-type", "ecdsa",
            "--config-dir", str(work / "config"), "--work-dir", str(work / "work"),
            "--logs-dir", str(work / "logs")]
    env = {"REQUESTS_CA_BUNDLE": str(pebble.ca_bundle), "PATH": "/usr/bin:/bin"}
    times = []
    for i in range(count + 1):
        name = f"certbot{i}.{DOMAIN}"
        started = time.perf_counter()
        done = subprocess.run([*base, "--cert-name", f"certbot{i}", "-d", name], env=env,
                              capture_output=True, text=True, timeout=120)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"certbot failed:\n{done.stdout}\n{done.stderr}")
        if not (work / "config" / "live" / f"certbot{i}" / "fullchain.pem").exists():
            raise SystemExit("certbot reported success but wrote no certificate")
        if i:
            times.append(elapsed)
    return times


class Berth:
    def __init__(self, settings: Settings):
        self.client = create_client(settings.redis_url)
        self.store = CertificateStore(self.client)
        self.broker = create_broker(settings)
        self.commands = CertificateCommands(settings, self.store, self.broker)

    def request(self, name: str) -> None:
        self.commands.create({"id": name, "domains": (f"{name}.{DOMAIN}",)}, "bench")

    def wait_active(self, names: list[str], timeout: float = 120) -> list[Certificate]:
        pending = set(names)
        found: dict[str, Certificate] = {}

        def check() -> bool:
            for cert in self.store.get_many(sorted(pending)):
                if cert.status == "active":
                    found[cert.id] = cert
                    pending.discard(cert.id)
                elif cert.status == "failed":
                    raise SystemExit(f"berth failed {cert.id}: {cert.last_error}")
            return not pending

        wait_until(check, timeout=timeout, interval=0.005, what="certificates issued")
        return [found[n] for n in names]

    def one_at_a_time(self, count: int) -> list[float]:
        self.request("warmup")  # registers the account
        self.wait_active(["warmup"])
        times = []
        for i in range(count):
            started = time.perf_counter()
            self.request(f"seq{i}")
            self.wait_active([f"seq{i}"])
            times.append(time.perf_counter() - started)
        return times

    def all_at_once(self, count: int) -> tuple[float, list[Certificate]]:
        names = [f"many{i}" for i in range(count)]
        started = time.perf_counter()
        for name in names:
            self.request(name)
        certs = self.wait_active(names, timeout=300)
        return time.perf_counter() - started, certs


def verify(certs: list[Certificate], root_pem: str) -> None:
    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store

    store = Store(x509.load_pem_x509_certificates(root_pem.encode()))
    for cert in certs:
        leaf, *chain = x509.load_pem_x509_certificates(cert.cert_pem.encode())
        verifier = PolicyBuilder().store(store).build_server_verifier(
            x509.DNSName(cert.domains[0]))
        verifier.verify(leaf, chain)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--sequential", type=int, help="certificates one at a time (5)")
    parser.add_argument("--concurrent", type=int, help="certificates at once (100)")
    args = parser.parse_args(argv)
    sequential = args.sequential or (2 if args.quick else 5)
    concurrent = args.concurrent or (20 if args.quick else 100)
    certbot = find_binary("certbot")
    if certbot is None:
        print("bench.acme: certbot is not installed (apt-get install certbot)", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="bench-acme-") as tmp:
        work = Path(tmp)
        redis = RedisServer(work / "redis").start()
        proxy = ProxyProcess(work / "proxy", redis.url, workers=2).start()
        pebble = Pebble(work / "pebble", http_port=proxy.port).start()
        worker = None
        try:
            certbot_times = run_certbot(certbot, pebble, redis, work / "certbot", sequential)
            env = {"REDIS_URL": redis.url, "BERTH_ACME_STAGING_URL": pebble.directory_url,
                   "BERTH_ACME_PRODUCTION_URL": pebble.directory_url,
                   "BERTH_ACME_CA_BUNDLE": str(pebble.ca_bundle),
                   "BERTH_SECRET_KEY": "bench secret key 0123456789",
                   "BERTH_LOG_LEVEL": "warning", "BERTH_ACME_WEEKLY_ORDERS": "0"}
            worker = start_worker(env, work / "worker.log", processes=WORKER_PROCESSES,
                                  threads=WORKER_THREADS)
            berth = Berth(Settings.from_env(env))
            berth_times = berth.one_at_a_time(sequential)
            wall, many = berth.all_at_once(concurrent)
            verify(many, pebble.root_pem())
        finally:
            if worker is not None:
                worker.stop()
            pebble.stop()
            proxy.stop()
            redis.stop()

    certbot_s = statistics.mean(certbot_times)
    berth_s = statistics.mean(berth_times)
    rows = [
        ("certbot, one certificate (s)", certbot_s, 1.0),
        ("berth, one certificate (s)", berth_s, berth_s / certbot_s),
        (f"berth, {concurrent} at once: wall (s)", wall, None),
        (f"berth, {concurrent} at once: per certificate (s)", wall / concurrent,
         wall / concurrent / certbot_s),
    ]
    print(f"{'metric':<44} {'value':>9} {'vs certbot':>11}")
    for metric, value, ratio in rows:
        shown = f"{ratio:.3f}" if ratio is not None else ""
        print(f"{metric:<44} {value:>9.3f} {shown:>11}")
    print(f"\ncertbot runs: {', '.join(f'{t:.2f}' for t in certbot_times)} s; "
          f"berth: {', '.join(f'{t:.3f}' for t in berth_times)} s; "
          f"{len(many)} concurrent certificates verified against pebble's root")
    print(f"targets: berth per certificate <= 0.25 x certbot: "
          f"{'met' if berth_s <= 0.25 * certbot_s else 'NOT met'}; "
          f"{concurrent} at once under 10 s: {'met' if wall < 10 else 'NOT met'}")
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "certbot_s": certbot_times, "berth_s": berth_times,
        "concurrent": concurrent, "concurrent_wall_s": wall,
        "worker": {"processes": WORKER_PROCESSES, "threads": WORKER_THREADS},
    }, indent=2))
    return 0


def _cpus() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
