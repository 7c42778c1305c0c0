"""Contract tests of the Redis repositories against a real redis-server."""

import threading

import pytest

from app import redis as keys
from app.errors import Conflict, NotFound, Unavailable, ValidationError
from app.models import Route
from app.redis import create_client
from app.stores import PortStore, RouteStore, TokenStore


def _route(store: RouteStore, owner="alice", **fields):
    base = {"host": "app.example.com", "targets": ["http://127.0.0.1:9000"]}
    return store.create(RouteStore.new(owner, Route.clean({**base, **fields})))


def test_create_get_list_delete(redis_client):
    store = RouteStore(redis_client)
    route = _route(store)
    assert route.version == 1
    assert store.get(route.id) == route
    assert [r.id for r in store.list()] == [route.id]
    assert store.delete(route.id).id == route.id
    with pytest.raises(NotFound):
        store.get(route.id)
    assert store.list() == []
    assert redis_client.hlen(keys.unique_index("route", "host_path")) == 0


def test_unique_host_and_path(redis_client):
    store = RouteStore(redis_client)
    _route(store)
    with pytest.raises(Conflict):
        _route(store, owner="bob")
    other = _route(store, path_prefix="/api")
    assert other.path_prefix == "/api"


def test_stale_update_is_refused(redis_client):
    store = RouteStore(redis_client)
    route = _route(store)
    updated = store.update(route.replace(hsts=True))
    assert updated.version == 2
    with pytest.raises(Conflict, match="changed since version 1"):
        store.update(route.replace(preserve_host=True))
    assert store.get(route.id).hsts is True


def test_update_moves_unique_index(redis_client):
    store = RouteStore(redis_client)
    route = _route(store)
    store.update(route.replace(host="new.example.com"))
    assert store.lookup("host_path", "app.example.com /") is None
    assert store.lookup("host_path", "new.example.com /") == route.id
    _route(store)  # the old host is free again


def test_owner_scoping(redis_client):
    store = RouteStore(redis_client)
    mine = _route(store, owner="alice")
    _route(store, owner="bob", host="b.example.com")
    assert [r.id for r in store.list(owner="alice")] == [mine.id]
    with pytest.raises(NotFound):
        store.get(mine.id, owner="bob")


def test_concurrent_creates_of_one_host_leave_one(redis_client, redis_server):
    results = []

    def create():
        store = RouteStore(create_client(redis_server.url))
        try:
            results.append(_route(store).id)
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("conflict") == 7
    assert RouteStore(redis_client).count() == 1


def test_every_change_bumps_the_table_version_and_announces(redis_client):
    store = RouteStore(redis_client)
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.changes_channel("route"))
    pubsub.get_message(timeout=1)
    route = _route(store)
    store.delete(route.id)
    assert store.table_version() == 2
    messages = [pubsub.get_message(timeout=1) for _ in range(2)]
    assert [m["data"] for m in messages] == [route.id, route.id]
    pubsub.close()


def test_extra_commands_commit_with_the_write_or_not_at_all(redis_client):
    store = RouteStore(redis_client)
    route = store.create(RouteStore.new("alice", Route.clean(
        {"host": "app.example.com", "targets": ["http://127.0.0.1:9000"]})),
        extra=lambda pipe, r: pipe.rpush("test:extra", f"created {r.id} v{r.version}"))
    with pytest.raises(Conflict):  # refused: its extra commands are not run either
        store.update(route.replace(hsts=True), expected_version=7,
                     extra=lambda pipe, r: pipe.rpush("test:extra", "stale update"))
    seen = []

    def extra(pipe, removed):
        seen.append(removed.version)
        if len(seen) == 1:  # another writer changes the record inside this attempt
            RouteStore(redis_client).update(store.get(route.id).replace(hsts=True))
        pipe.rpush("test:extra", f"deleted v{removed.version}")

    store.delete(route.id, extra=extra)
    assert seen == [1, 2]  # called again on the retry, with the record then removed
    assert redis_client.lrange("test:extra", 0, -1) == [f"created {route.id} v1", "deleted v2"]
    assert store.find(route.id) is None


def test_listing_uses_no_keys_command(redis_client):
    store = RouteStore(redis_client)
    for i in range(5):
        _route(store, host=f"h{i}.example.com")
    before = redis_client.info("commandstats").get("cmdstat_keys", {}).get("calls", 0)
    assert len(store.list()) == 5
    assert len(store.list(offset=2, limit=2)) == 2
    after = redis_client.info("commandstats").get("cmdstat_keys", {}).get("calls", 0)
    assert after == before


def test_tokens_store_only_a_hash(redis_client):
    store = TokenStore(redis_client)
    token, secret = store.issue(name="ci", scope="user", owner="alice")
    raw = redis_client.get(keys.record("token", token.id))
    assert secret not in raw
    assert store.authenticate(secret) == token
    assert store.authenticate(secret + "x") is None
    assert store.authenticate("not-a-token") is None
    assert "secret_hash" not in token.public()
    store.delete(token.id)
    assert store.authenticate(secret) is None


def test_ports_are_allocated_once_and_released(redis_client, redis_server):
    store = PortStore(redis_client, first=41000, last=41009, restricted=frozenset({41001}))
    claimed = {}

    def claim(n):
        s = PortStore(create_client(redis_server.url), first=41000, last=41009,
                      restricted=frozenset({41001}))
        claimed[f"svc{n}"] = s.allocate(f"svc{n}", is_free=lambda p: True)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed.values())) == 9 and 41001 not in claimed.values()
    with pytest.raises(Conflict):
        store.allocate("late", is_free=lambda p: True)
    assert store.release_all("svc0") == 1
    assert store.allocate("late", is_free=lambda p: True) == claimed["svc0"]


def test_ports_bound_on_the_host_are_skipped(redis_client):
    import socket

    from app.stores.ports import port_is_free

    # A listening port, and the one above it free: on a busy machine that one can be some
    # connection's local port (a full run once found it so), so look again elsewhere then.
    for _ in range(20):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            if not port_is_free(port + 1):
                continue
            store = PortStore(redis_client, first=port, last=port + 1)
            assert store.allocate("svc") == port + 1
            return
    pytest.fail("found no listening port with a free one above it")


def test_unreachable_redis_is_unavailable():
    store = RouteStore(create_client("redis://127.0.0.1:1/0"))
    with pytest.raises(Unavailable):
        store.list()


@pytest.mark.parametrize("payload, field", [
    ({"host": "exa mple.com", "targets": ["http://x"]}, "host"),
    ({"host": "127.0.0.1", "targets": ["http://x"]}, "host"),
    ({"host": "a.com", "targets": ["ftp://x"]}, "targets"),
    ({"host": "a.com", "targets": []}, "targets"),
    ({"host": "a.com", "targets": ["http://u:p@x"]}, "targets"),
    ({"host": "a.com", "targets": ["http://x"], "path_prefix": "api"}, "path_prefix"),
    ({"host": "a.com", "targets": ["http://x"], "path_prefix": "/a/../b"}, "path_prefix"),
    ({"host": "a.com", "targets": ["http://x"], "request_headers": {"X-A": "1\r\nX-B: 2"}},
     "request_headers"),
    ({"host": "a.com", "targets": ["http://x"], "auth": {"type": "basic", "users": {"u": "pw"}}},
     "auth.users"),
    ({"host": "a.com", "targets": ["http://x"], "bogus": 1}, "bogus"),
])
def test_route_validation_names_the_field(payload, field):
    with pytest.raises(ValidationError) as info:
        Route.clean(payload)
    assert info.value.field == field


def test_hostnames_are_idna_normalised():
    cleaned = Route.clean({"host": "Bücher.Example.COM.", "targets": ["http://x"]})
    assert cleaned["host"] == "xn--bcher-kva.example.com"
    assert Route.clean({"host": "*.Example.com", "targets": ["http://x"]})["host"] == \
        "*.example.com"


@pytest.mark.parametrize("host", ["a_b.test", "a..b.test", "x" * 64 + ".test"])
def test_invalid_hostnames_are_refused_in_berths_words_not_idnas(host):
    with pytest.raises(ValidationError) as info:
        Route.clean({"host": host, "targets": ["http://x"]})
    assert str(info.value) == (
        f"host {host!r} is not a valid DNS name: use letters, digits and hyphens, in labels "
        "of at most 63 characters separated by dots, optionally after '*.'")
    assert "Codepoint" not in str(info.value) and "label" in str(info.value)
