"""`berth routes add|update|rm --wait` means served: the real web process, the real proxy with
two gunicorn workers, and `./berth` as a user runs it. Right after `--wait` returns, requests
on new connections (so on both workers) all see the change; a worker that cannot load it
(stopped with SIGSTOP) is named and the exit status is 1."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal

import pytest

from app import redis as keys
from app.stores.tokens import TokenStore
from harness.procs import wait_until
from tests.e2e.conftest import request
from tests.support.api import start_web
from tests.support.cli import run_berth, spawn_berth

REQUESTS = 40  # per check, each on a new connection


@pytest.fixture(scope="module")
def web(redis_server, tmp_path_factory):
    proc, url = start_web(redis_server.url, tmp_path_factory.mktemp("web"))
    yield url
    proc.stop()


@pytest.fixture
def berth(web, redis_client, proxy):
    _token, admin = TokenStore(redis_client).issue(name="ops", scope="admin", owner="ops")
    # The test's Redis was just emptied: wait for both proxy workers' next heartbeat, or
    # `--wait` would find no live proxy to wait for.
    wait_until(lambda: len(proxies(web, admin)) == proxy.workers, timeout=15,
               what="both proxy workers reporting")

    def run(*args: str):
        return run_berth("routes", *args, url=web, token=admin, timeout=60)

    run.url, run.admin = web, admin
    return run


def proxies(url: str, token: str) -> list[dict]:
    """The live proxy workers the API lists, with the table versions they report."""
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
    try:
        conn.request("GET", "/api/v1/proxies", headers={"Authorization": f"Bearer {token}"})
        return json.loads(conn.getresponse().read())["proxies"]
    finally:
        conn.close()


def answers(port: int, host: str) -> list[tuple[int, str | None]]:
    """(status, the backend's name) of REQUESTS requests, each on a new connection."""
    got = []
    for _ in range(REQUESTS):
        status, _headers, body = request(port, "GET", "/", host)
        got.append((status, json.loads(body)["backend"] if status == 200 else None))
    return got


def test_routes_wait_returns_once_both_proxy_workers_serve_the_change(berth, proxy, backend,
                                                                       backend_b):
    added = berth("add", "served.example.test", "--target", backend.url, "--wait")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added route rt_")
    got = answers(proxy.port, "served.example.test")
    not_found = sum(1 for status, _ in got if status == 404)
    print(f"routes add --wait: {not_found} of {len(got)} requests right after it 404")
    assert set(got) == {(200, "a")}

    updated = berth("update", "served.example.test", "--target", backend_b.url, "--wait")
    assert updated.returncode == 0, updated.stderr
    assert set(answers(proxy.port, "served.example.test")) == {(200, "b")}

    removed = berth("rm", "served.example.test", "--wait")
    assert removed.returncode == 0, removed.stderr
    assert set(answers(proxy.port, "served.example.test")) == {(404, None)}


def test_routes_wait_names_a_proxy_worker_that_does_not_catch_up(berth, proxy, backend):
    stopped = proxy.worker_pids()[0]
    os.kill(stopped, signal.SIGSTOP)  # alive for its heartbeat's stale limit, loading nothing
    try:
        lagging = berth("add", "late.example.test", "--target", backend.url, "--wait",
                        "--wait-timeout", "2")
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert lagging.returncode == 1
    [line] = lagging.stderr.splitlines()
    # 1 of however many live workers the API sees (a worker other tests replaced may still
    # count until its arbiter has removed it): the stopped one.
    assert re.match(r"berth: Not served: after 2s, 1 of \d+ proxy workers do not serve route "
                    r"table version \d+ yet: ", line), line
    assert line.endswith(f":{stopped} (at {int(line.split('version ')[1].split()[0]) - 1})")
    assert lagging.stdout.startswith("added route rt_")  # stored, not served by all
    # Woken up, it catches up: the route is stored, and now served by both.
    again = berth("update", "late.example.test", "--max-body", "1M", "--wait")
    assert again.returncode == 0, again.stderr
    assert set(answers(proxy.port, "late.example.test")) == {(200, "a")}


def test_routes_wait_waits_for_a_late_proxy_worker_then_every_request_is_served(
        berth, proxy, backend):
    """A worker that loads the change late (stopped for a moment) holds `--wait` back until
    it has the change; then no request 404s on either worker."""
    late = proxy.worker_pids()[0]
    os.kill(late, signal.SIGSTOP)
    try:
        waiting = spawn_berth("routes", "add", "late.example.test", "--target", backend.url,
                              "--wait", url=berth.url, token=berth.admin)
        # Stored at once, so the change is in the table: one worker serves it, one cannot.
        wait_until(lambda: any(p["route"] == 1 for p in proxies(berth.url, berth.admin)),
                   what="the running worker serving the route")
        assert waiting.poll() is None  # still waiting for the stopped worker
    finally:
        os.kill(late, signal.SIGCONT)
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert out.startswith("added route rt_")
    got = answers(proxy.port, "late.example.test")
    print(f"routes add --wait with a late worker: "
          f"{sum(1 for status, _ in got if status == 404)} of {len(got)} requests 404")
    assert set(got) == {(200, "a")}


def test_a_killed_proxy_worker_is_forgotten_by_its_arbiter(proxy, redis_client):
    """gunicorn's arbiter removes a worker's heartbeat and served report once it has exited,
    so `--wait` does not wait for a dead worker until its heartbeat goes stale."""
    victim = proxy.worker_pids()[0]

    def beating() -> list[str]:  # the test's Redis was just emptied: until the next beat
        return [m for m in redis_client.hkeys(keys.HEARTBEATS) if m.endswith(f":{victim}")
                and redis_client.hexists(keys.PROXY_SERVED, m)]
    wait_until(beating, timeout=15, what="the worker beating and reporting")
    [member] = beating()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not redis_client.hexists(keys.HEARTBEATS, member)
               and not redis_client.hexists(keys.PROXY_SERVED, member), timeout=10,
               what="the killed worker's entries removed")
    wait_until(lambda: len(proxy.worker_pids()) == proxy.workers, timeout=20,
               what="the worker replaced")
