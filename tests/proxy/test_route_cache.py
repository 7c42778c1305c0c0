"""The per-worker route table: loaded on first use, refreshed on pub/sub and by version,
kept while Redis is unreachable."""

from __future__ import annotations

from app.models import Route
from app.redis import create_client
from app.stores import RouteStore
from harness.procs import RedisServer, wait_until
from proxy.route_cache import route_cache


def add(store: RouteStore, host: str) -> Route:
    return store.create(store.new("alice", Route.clean({"host": host,
                                                        "targets": ["http://127.0.0.1:1"]})))


def test_loads_on_first_use_and_follows_changes(redis_client):
    store = RouteStore(redis_client)
    add(store, "one.test")
    cache = route_cache(store, interval_s=0.2)
    try:
        table = cache.get()
        assert table.knows_host("one.test") and table.version == store.table_version()
        route = add(store, "two.test")
        wait_until(lambda: cache.get().knows_host("two.test"), timeout=5)
        store.delete(route.id)
        wait_until(lambda: not cache.get().knows_host("two.test"), timeout=5)
        # A change nobody announced (e.g. while unsubscribed) is found by the version check.
        redis_client.incr("berth:route:version")
        reloads = cache.reloads
        wait_until(lambda: cache.reloads > reloads, timeout=5)
    finally:
        cache.stop()


def test_many_routes_are_paged(redis_client):
    store = RouteStore(redis_client)
    for i in range(1203):
        add(store, f"h{i}.test")
    cache = route_cache(store)
    try:
        assert len(cache.get()) == 1203
    finally:
        cache.stop()


def test_the_last_table_serves_while_redis_is_down(tmp_path):
    server = RedisServer(tmp_path).start()
    store = RouteStore(create_client(server.url, socket_connect_timeout=0.2, socket_timeout=0.5))
    add(store, "kept.test")
    cache = route_cache(store, interval_s=0.2)
    try:
        assert cache.get().knows_host("kept.test")
        server.stop()
        wait_until(lambda: not cache._redis_ok, timeout=5)
        assert cache.get().knows_host("kept.test")
        server.start()
        add(store, "after.test")
        wait_until(lambda: cache.get().knows_host("after.test"), timeout=10)
    finally:
        cache.stop()
        server.stop()


def test_no_table_while_redis_was_never_reached():
    store = RouteStore(create_client("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))
    cache = route_cache(store, interval_s=5)
    try:
        assert cache.get() is None
        assert cache.get() is None  # not retried on every call
    finally:
        cache.stop()
