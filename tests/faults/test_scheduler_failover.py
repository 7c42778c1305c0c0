"""The scheduler leader SIGKILLed with a follower running: how long until the follower leads
(a new fencing term in the lease) and has run its start-up jobs. Two real `scheduler`
processes, started as the Procfile starts them, over the test Redis; no worker runs, so what
the new leader enqueues stays in its queue to be counted.
"""

from __future__ import annotations

import time

import pytest

from app import redis as keys
from app.settings import Settings
from harness.procs import wait_until
from harness.worker import start_process
from tests.faults.platform import Processes
from tests.test_scheduler import queued

pytestmark = pytest.mark.faults

TAKEOVER_DEADLINE_S = 5


def lease(redis_client) -> tuple[int, int] | None:
    """(fencing token, leader's PID) of the scheduler lease; value "<token>:<host>:<pid>:<hex>"."""
    value = redis_client.get(keys.scheduler_leader())
    if not value:
        return None
    token, _host, pid, _suffix = value.split(":")
    return int(token), int(pid)


def test_a_follower_leads_within_5s_of_the_leaders_sigkill(redis_client, redis_server,
                                                           tmp_path, figures):
    env = {"REDIS_URL": redis_server.url, "BERTH_LOG_FORMAT": "text"}
    with Processes() as procs:
        procs["first"] = start_process("scheduler", env, tmp_path / "first.log")
        first = wait_until(lambda: lease(redis_client), timeout=30, what="a leader")
        assert first[1] == procs["first"].pid
        wait_until(lambda: queued(redis_client, "maintenance"), timeout=10,
                   what="the leader's start-up run")
        procs["second"] = start_process("scheduler", env, tmp_path / "second.log")
        # Both up (the second beats) before the kill: a takeover, not a cold start.
        wait_until(lambda: any(m.startswith("scheduler/") and m.endswith(f":{procs['second'].pid}")
                               for m in redis_client.hkeys(keys.HEARTBEATS)),
                   timeout=30, what="the second scheduler up")
        assert lease(redis_client) == first
        before = len(queued(redis_client, "maintenance"))
        procs["first"].kill()
        killed = time.monotonic()
        taken = wait_until(lambda: (held := lease(redis_client)) and held[1] != first[1]
                           and held, timeout=TAKEOVER_DEADLINE_S, interval=0.01,
                           what=f"a new leader within {TAKEOVER_DEADLINE_S} s")
        takeover_s = time.monotonic() - killed
        wait_until(lambda: len(queued(redis_client, "maintenance")) > before, timeout=10,
                   what="the new leader's start-up run")
        ran_s = time.monotonic() - killed
        figures(takeover_s=round(takeover_s, 2), start_up_run_s=round(ran_s, 2),
                lease_ttl_s=Settings.from_env(env).scheduler_lock_ttl_s, old_token=first[0],
                new_token=taken[0])
        assert taken == (first[0] + 1, procs["second"].pid)
        assert procs.tracebacks() == {}
