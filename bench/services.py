"""Seconds to the first 200: `berth services create --wait` then the proxy, next to
`docker run` then the container with the docker CLI, measured in the same run.

    .venv/bin/python -m bench.services             # 7 rounds
    .venv/bin/python -m bench.services --quick     # 3 rounds, a smoke run
    .venv/bin/python -m bench.services --rounds N [--worker-timeout-ms MS]

Starts (or reuses, see harness/docker.py) a Docker engine, builds the busybox HTTP test image
FROM scratch, and runs a redis-server and berth's real processes on free loopback ports: web
(gunicorn, app.api.wsgi:app), worker (the Procfile's line, via harness/worker.py; an idle
worker wakes as soon as a message is sent, workers/broker.py) and proxy (gunicorn). Settings
are the production defaults, except BERTH_IMAGE_PULL=never (the image is local).
`--worker-timeout-ms` overrides the worker's `dramatiq_worker_timeout` (its idle wait).

Each round times both sides, alternating which goes first:
  berth   from before running `./berth services create NAME --image IMG --port 8080 --wait`
          (the real command line, a new process each time: start-up, POST, following the
          trace's events until service_started) to the first 200 from `GET /` through the
          proxy with `Host: NAME.localhost`; also reported: when the command exited, and
          `./berth services list` alone (the command line's start-up plus one request);
  docker  from before `docker run -d -p 127.0.0.1:<port>:8080 <image>` to the first 200 from
          `GET /` on that port.
Polls for the 200 every 5 ms on a new connection. Both are removed after each round.
Prints median, min and max per side and the ratio of the medians (target: berth within
1.5x); writes bench/results/services.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.redis import create_client
from app.stores.tokens import TokenStore
from harness.docker import TEST_LABEL, DockerDaemon, build_test_image, remove_labelled
from harness.procs import (
    ROOT,
    VENV_BIN,
    Proc,
    RedisServer,
    find_binary,
    free_port,
    wait_for_port,
)
from harness.proxy import ProxyProcess
from harness.worker import start_worker

BERTH = ROOT / "berth"
RESULTS = Path(__file__).resolve().parent / "results" / "services.json"


def first_200(port: int, host: str | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/", headers={"Host": host} if host else {})
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.005)
    raise TimeoutError(f"no 200 on port {port} ({host}) within {timeout}s")


class Berth:
    """berth's processes over one Redis and one engine, driven by the `berth` command line."""

    def __init__(self, workdir: Path, redis_url: str, docker_url: str, worker_timeout_ms: int):
        self.workdir = workdir
        self.env = {"REDIS_URL": redis_url, "DOCKER_HOST": docker_url,
                    "BERTH_IMAGE_PULL": "never", "BERTH_LOG_FORMAT": "json",
                    "BERTH_LOG_LEVEL": "warning"}
        # The Procfile's dramatiq_worker_timeout (start_worker), unless given here.
        self.worker_env = dict(self.env)
        if worker_timeout_ms:
            self.worker_env["dramatiq_worker_timeout"] = str(worker_timeout_ms)
        self.web_port = free_port()
        self.procs: list = []
        self.redis = create_client(redis_url)
        self.proxy = ProxyProcess(workdir, redis_url, self.env)

    def start(self) -> Berth:
        self.procs.append(Proc([str(VENV_BIN / "gunicorn"), "-c", "app/api/gunicorn_conf.py",
                                "app.api.wsgi:app"], self.workdir / "web.log",
                               env={**self.env, "BERTH_WEB_PORT": str(self.web_port)}))
        self.procs.append(start_worker(self.worker_env, self.workdir / "worker.log", threads=8))
        self.proxy.start()
        wait_for_port(self.web_port, timeout=30, proc=self.procs[0].popen)
        _token, secret = TokenStore(self.redis).issue(name="bench", scope="admin",
                                                      owner="bench")
        base = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
        self.cli_env = {**base, "BERTH_URL": f"http://127.0.0.1:{self.web_port}",
                        "BERTH_TOKEN": secret}
        return self

    def berth(self, *args: str) -> subprocess.CompletedProcess:
        """`./berth ARGS` as a user runs it; exits the benchmark with its error line."""
        done = subprocess.run([str(BERTH), *args], env=self.cli_env, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"berth {' '.join(args)}: {done.stderr.strip()}")
        return done

    def create_and_reach(self, name: str, image: str) -> tuple[float, float]:
        """(seconds until `berth services create --wait` exits, until the first 200)."""
        start = time.perf_counter()
        self.berth("services", "create", name, "--image", image, "--port", "8080", "--wait")
        waited = time.perf_counter() - start
        first_200(self.proxy.port, f"{name}.localhost")
        return waited, time.perf_counter() - start

    def delete(self, name: str) -> None:
        self.berth("services", "rm", name, "--wait")

    def cli_round_trip(self) -> float:
        """Seconds for `berth services list`: the command line's own start-up plus one API
        request, part of every `create --wait` above."""
        start = time.perf_counter()
        self.berth("services", "list")
        return time.perf_counter() - start

    def stop(self) -> None:
        self.proxy.stop()
        for proc in reversed(self.procs):
            proc.stop()
        self.redis.close()


def docker_run_and_reach(docker: str, docker_url: str, image: str) -> tuple[float, str]:
    port = free_port()
    start = time.perf_counter()
    run = subprocess.run([docker, "run", "-d", "--label", f"{TEST_LABEL}=1",
                          "-p", f"127.0.0.1:{port}:8080", image],
                         env={**os.environ, "DOCKER_HOST": docker_url},
                         capture_output=True, text=True, check=True)
    first_200(port)
    return time.perf_counter() - start, run.stdout.strip()


def summary(samples: list[float]) -> dict:
    return {"median_s": statistics.median(samples), "min_s": min(samples),
            "max_s": max(samples), "samples_s": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--worker-timeout-ms", type=int, default=0,
                        help="dramatiq_worker_timeout for the worker (default: the "
                             "Procfile's)")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    docker = find_binary("docker")
    if docker is None:
        sys.exit("bench.services: the docker CLI is not installed (Debian: docker.io)")

    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
        workdir = Path(tmp)
        daemon = DockerDaemon(workdir).start()
        redis_server = RedisServer(workdir / "redis").start()
        berth = None
        try:
            client = daemon.client()
            image = build_test_image(client)
            berth = Berth(workdir, redis_server.url, daemon.url, args.worker_timeout_ms).start()
            # One untimed round each: the first container start warms the engine's caches.
            berth.create_and_reach("warmup", image)
            berth.delete("warmup")
            _t, warm = docker_run_and_reach(docker, daemon.url, image)
            client.containers.get(warm).remove(force=True)
            times: dict[str, list[float]] = {"berth": [], "wait": [], "docker": [], "cli": []}
            for n in range(rounds):
                for side in (("berth", "docker") if n % 2 == 0 else ("docker", "berth")):
                    if side == "berth":
                        waited, reached = berth.create_and_reach(f"bench{n}", image)
                        times["wait"].append(waited)
                        times["berth"].append(reached)
                        berth.delete(f"bench{n}")
                        times["cli"].append(berth.cli_round_trip())
                    else:
                        elapsed, cid = docker_run_and_reach(docker, daemon.url, image)
                        times["docker"].append(elapsed)
                        client.containers.get(cid).remove(force=True)
            remove_labelled(client)
        finally:
            if berth is not None:
                berth.stop()
            redis_server.stop()
            daemon.stop()

    berth_s, docker_s = summary(times["berth"]), summary(times["docker"])
    wait_s, cli_s = summary(times["wait"]), summary(times["cli"])
    ratio = berth_s["median_s"] / docker_s["median_s"]
    print(f"time to first 200, {rounds} rounds "
          f"(engine: {'private dockerd' if daemon.started else daemon.url})")
    print(f"{'':48} {'median':>8} {'min':>8} {'max':>8}")
    for label, row in (("berth services create --wait + proxy 200", berth_s),
                       ("  of which: until `create --wait` exits", wait_s),
                       ("  for scale: `berth services list` (start-up)", cli_s),
                       ("docker run + container 200", docker_s)):
        print(f"{label:48} {row['median_s']:8.3f} {row['min_s']:8.3f} {row['max_s']:8.3f}")
    print(f"ratio berth/docker (medians): {ratio:.2f}x  (target <= 1.5x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "rounds": rounds, "berth": berth_s, "berth_wait": wait_s, "berth_cli_list": cli_s,
        "docker": docker_s, "ratio": ratio,
        "worker_timeout_ms": args.worker_timeout_ms or "Procfile",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "kernel": platform.release()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
