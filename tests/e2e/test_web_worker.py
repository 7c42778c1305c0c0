"""The real `web` (gunicorn, gevent) and `worker` (dramatiq) processes, end to end:
a token made over HTTP, a job enqueued with a caller's trace id, its event seen with that id."""

import contextlib
import json
import subprocess
import sys

import pytest
import requests

from app.tracing import format_traceparent, new_trace_id
from harness.worker import start_worker
from tests.support.api import bearer, start_web
from tests.support.procs import ROOT, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def platform(redis_server, redis_client, tmp_path):
    procs = {}
    try:
        procs["web"], url = start_web(redis_server.url, tmp_path)
        procs["worker"] = start_worker(
            {"REDIS_URL": redis_server.url, "BERTH_LOG_FORMAT": "json"},
            tmp_path / "worker.log", threads=2)
        yield url, procs
    finally:
        for proc in procs.values():
            proc.stop()


@contextlib.contextmanager
def logs_on_failure(procs):
    try:
        yield
    except BaseException:
        for name, proc in procs.items():
            print(f"----- {name} (pid {proc.pid}) -----\n{proc.output()}")
        raise


def test_token_job_and_event_share_the_trace_id(platform, redis_server, tmp_path):
    url, procs = platform
    with logs_on_failure(procs):
        token_file = tmp_path / "state" / "admin-token"
        bootstrap = subprocess.run(
            [sys.executable, "-m", "app.admin", "ensure-token", "--path", str(token_file)],
            env={"REDIS_URL": redis_server.url, "PATH": ""},
            cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert bootstrap.returncode == 0, bootstrap.stderr
        admin = token_file.read_text().strip()

        created = requests.post(f"{url}/api/v1/tokens", headers=bearer(admin),
                                json={"name": "deploy", "owner": "alice"}, timeout=10)
        assert created.status_code == 201, created.text
        user = created.json()["secret"]
        mine = requests.get(f"{url}/api/v1/tokens", headers=bearer(user), timeout=10).json()
        assert [t["owner"] for t in mine["items"]] == ["alice"]

        trace_id = new_trace_id()
        accepted = requests.post(f"{url}/api/v1/orchestrator/jobs/trim-streams",
                                 headers={**bearer(admin),
                                          "traceparent": format_traceparent(trace_id)},
                                 timeout=10)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["trace_id"] == trace_id
        assert accepted.headers["x-trace-id"] == trace_id

        def trimmed():
            page = requests.get(f"{url}/api/v1/events", headers=bearer(admin), timeout=10,
                                params={"stream": "system", "trace_id": trace_id}).json()
            return [e for e in page["items"] if e["type"] == "streams_trimmed"]

        (event,) = wait_until(trimmed, timeout=30, interval=0.2, what="streams_trimmed")
        assert event["trace_id"] == trace_id and event["source"] == "worker"

        def both_alive():
            status = requests.get(f"{url}/api/v1/orchestrator/status", headers=bearer(user),
                                  timeout=10).json()
            alive = {c["component"] for c in status["components"] if c["alive"]}
            return status if {"web", "worker"} <= alive else None

        status = wait_until(both_alive, timeout=30, interval=0.2, what="web and worker alive")
        assert status["redis"]["ok"] is True
        assert status["queues"]["maintenance"] == 0

        worker_lines = [json.loads(line) for line in procs["worker"].output().splitlines()
                        if line.startswith("{")]
        assert any(line.get("trace_id") == trace_id for line in worker_lines)
        assert admin not in procs["web"].output() and user not in procs["web"].output()

