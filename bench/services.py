"""Seconds to the first 200: `berth services create --wait` then the proxy, next to
`docker run` then the container with the docker CLI, measured in the same run.

    .venv/bin/python -m bench.services             # 7 rounds
    .venv/bin/python -m bench.services --quick     # 3 rounds, a smoke run
    .venv/bin/python -m bench.services --rounds N [--worker-timeout-ms MS]

Starts (or reuses, see harness/docker.py) a Docker engine, builds the busybox HTTP test image
FROM scratch, and runs a redis-server and berth's real processes on free loopback ports: web
(gunicorn), worker (`dramatiq workers.main --processes 1 --threads 8`, as in the Procfile)
and proxy (gunicorn). Settings are the production defaults, except BERTH_IMAGE_PULL=never
(the image is local). `--worker-timeout-ms` sets Dramatiq's `dramatiq_worker_timeout`, the
longest pause between an idle worker's polls of its queues (Dramatiq's default: 1000).

Each round times both sides, alternating which goes first:
  berth   from before `POST /api/v1/services {name, image, port}` (what `berth services
          create` sends) through following the trace's events on the API's SSE stream until
          service_started (what `--wait` does, with the CLI's own client code, in process)
          to the first 200 from `GET /` through the proxy with `Host: <name>.localhost`;
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

from app.cli.client import ApiClient
from app.cli.sse import follow_events
from app.redis import create_client
from app.stores.tokens import TokenStore
from harness.docker import TEST_LABEL, DockerDaemon, build_test_image, remove_labelled
from harness.procs import VENV_BIN, Proc, RedisServer, find_binary, free_port, wait_for_port
from harness.proxy import ProxyProcess

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
    """berth's processes over one Redis and one engine."""

    def __init__(self, workdir: Path, redis_url: str, docker_url: str, worker_timeout_ms: int):
        self.workdir = workdir
        env = {"REDIS_URL": redis_url, "DOCKER_HOST": docker_url, "BERTH_IMAGE_PULL": "never",
               "BERTH_LOG_FORMAT": "json", "BERTH_LOG_LEVEL": "warning"}
        if worker_timeout_ms:
            env["dramatiq_worker_timeout"] = str(worker_timeout_ms)
        self.env = env
        self.web_port = free_port()
        self.procs: list = []
        self.redis = create_client(redis_url)
        self.proxy = ProxyProcess(workdir, redis_url, {k: v for k, v in env.items()
                                                       if k != "dramatiq_worker_timeout"})

    def start(self) -> Berth:
        web_module = "app.api.wsgi:app"
        if not self._web_mounts_services():
            web_module = "bench._services_web:app"
        self.procs.append(Proc([str(VENV_BIN / "gunicorn"), "-c", "app/api/gunicorn_conf.py",
                                web_module], self.workdir / "web.log",
                               env={**self.env, "BERTH_WEB_PORT": str(self.web_port)}))
        self.procs.append(Proc([str(VENV_BIN / "dramatiq"), "workers.main", "--processes", "1",
                                "--threads", "8"], self.workdir / "worker.log", env=self.env))
        self.proxy.start()
        wait_for_port(self.web_port, timeout=30, proc=self.procs[0].popen)
        _token, secret = TokenStore(self.redis).issue(name="bench", scope="admin",
                                                      owner="bench")
        self.api = ApiClient(f"http://127.0.0.1:{self.web_port}", secret, timeout=30)
        return self

    @staticmethod
    def _web_mounts_services() -> bool:
        from app.api import app as api_app

        return "add_service_routes" in Path(api_app.__file__).read_text()

    def create_and_reach(self, name: str, image: str) -> float:
        since = f"{int(time.time() * 1000) - 1}-0"
        start = time.perf_counter()
        reply = self.api.post("/api/v1/services", {"name": name, "image": image, "port": 8080})
        trace = reply.data["trace_id"]
        last = None
        for event in follow_events(self.api, trace_id=trace, stream="service", since=since,
                                   until={"service_started", "service_failed"}, timeout=60):
            last = event
        if last is None or last["type"] != "service_started":
            raise RuntimeError(f"create {name} failed: {last}")
        first_200(self.proxy.port, f"{name}.localhost")
        return time.perf_counter() - start

    def delete(self, name: str) -> None:
        since = f"{int(time.time() * 1000) - 1}-0"
        trace = self.api.delete(f"/api/v1/services/{name}").data["trace_id"]
        for _event in follow_events(self.api, trace_id=trace, stream="service", since=since,
                                    until={"service_deleted", "service_failed"}, timeout=60):
            pass

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
                        help="dramatiq_worker_timeout for the worker (default: Dramatiq's)")
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
            times: dict[str, list[float]] = {"berth": [], "docker": []}
            for n in range(rounds):
                for side in (("berth", "docker") if n % 2 == 0 else ("docker", "berth")):
                    if side == "berth":
                        times["berth"].append(berth.create_and_reach(f"bench{n}", image))
                        berth.delete(f"bench{n}")
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
    ratio = berth_s["median_s"] / docker_s["median_s"]
    print(f"time to first 200, {rounds} rounds "
          f"(engine: {'private dockerd' if daemon.started else daemon.url})")
    print(f"{'':44} {'median':>8} {'min':>8} {'max':>8}")
    for label, row in (("berth services create --wait + proxy", berth_s),
                       ("docker run + container", docker_s)):
        print(f"{label:44} {row['median_s']:8.3f} {row['min_s']:8.3f} {row['max_s']:8.3f}")
    print(f"ratio berth/docker (medians): {ratio:.2f}x  (target <= 1.5x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "rounds": rounds, "berth": berth_s, "docker": docker_s, "ratio": ratio,
        "worker_timeout_ms": args.worker_timeout_ms or 1000,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "kernel": platform.release()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
