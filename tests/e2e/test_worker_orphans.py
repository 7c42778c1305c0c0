"""The real worker, as the Procfile runs it: when its `dramatiq` main process is SIGKILLed (a
supervisor's `kill -9`, an OOM kill), the worker process it forked stops too instead of
consuming on, orphaned, beside the ones the restart forks (workers/broker.py,
StopWithParentMiddleware)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from app import redis as keys
from harness.procs import wait_until
from harness.worker import start_worker

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_worker_process_stops_when_its_main_process_is_killed(redis_server, redis_client,
                                                                 tmp_path):
    worker = start_worker({"REDIS_URL": redis_server.url}, tmp_path / "worker.log")
    try:
        wait_until(lambda: any(k.startswith("worker/") for k in
                               redis_client.hkeys(keys.HEARTBEATS)), timeout=30,
                   what="the worker process beating")
        [child] = [p for p in children_of(worker.pid) if running(p)]
        os.kill(worker.pid, signal.SIGKILL)
        wait_until(lambda: not running(child), timeout=20,
                   what="the orphaned worker process stopping")
    finally:
        worker.kill()
