"""Redis stopped mid-traffic: known hosts keep being served from the in-memory table, the
events buffered meanwhile land once Redis is back, and route changes flow again."""

from __future__ import annotations

import json
import threading

import pytest

from app.events import Event
from app.models import Route
from app.redis import create_client, stream
from app.stores import RouteStore
from harness.procs import RedisServer, wait_until
from harness.proxy import ProxyProcess
from tests.e2e.conftest import request

pytestmark = pytest.mark.e2e


def test_known_hosts_are_served_while_redis_is_down(tmp_path, backend):
    redis_server = RedisServer(tmp_path / "redis").start()  # ours alone: we stop it
    client = create_client(redis_server.url)
    proxy = ProxyProcess(tmp_path / "proxy", redis_server.url).start()
    try:
        store = RouteStore(client)
        store.create(store.new("alice", Route.clean({"host": "steady.test",
                                                     "targets": [backend.url]})))
        wait_until(lambda: all(request(proxy.port, "GET", "/", "steady.test")[0] == 200
                               for _ in range(6)), what="route served")

        statuses: list[int] = []
        stop = threading.Event()

        def traffic():
            while not stop.is_set():
                status, _, body = request(proxy.port, "GET", "/echo", "steady.test")
                statuses.append(status)
                assert json.loads(body)["backend"] == "a"

        worker = threading.Thread(target=traffic)
        worker.start()
        wait_until(lambda: len(statuses) >= 20, what="traffic before the outage")
        client.save()  # what Redis reloads on restart (the test server snapshots nothing)
        redis_server.stop()
        during = len(statuses)
        wait_until(lambda: len(statuses) >= during + 100, timeout=30,
                   what="traffic during the outage")
        # Unknown hosts are still unknown; known ones still answered, on fresh connections.
        assert request(proxy.port, "GET", "/", "unknown.test")[0] == 404
        redis_server.start()  # same port: the proxy reconnects on its own
        wait_until(lambda: client.xlen(stream("request")) >= len(statuses) - during,
                   timeout=30, what="events buffered during the outage")
        stop.set()
        worker.join(10)
        assert set(statuses) == {200}
        # Changes flow again once Redis is back.
        store.create(store.new("alice", Route.clean({"host": "fresh.test",
                                                     "targets": [backend.url]})))
        wait_until(lambda: request(proxy.port, "GET", "/", "fresh.test")[0] == 200,
                   timeout=15, what="a route added after the outage")
        published = [Event.from_entry(i, f) for i, f in client.xrange(stream("request"))]
        assert {e.data["host"] for e in published} >= {"steady.test"}
    finally:
        proxy.stop()
        redis_server.stop()
