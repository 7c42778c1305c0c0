"""/api/v1/events: search with filters and paging, and the Server-Sent Events tail."""

import json
import time

import falcon.testing
import pytest
import requests

from app import redis as keys
from app.api.events import TAIL_CLIENT_NAME
from app.events import Event, Publisher
from tests.support.api import Api, bearer, start_web
from tests.support.procs import wait_until

TRACE_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
TRACE_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"


def add(client, domain, type, subject="s", trace_id=TRACE_A, data=None, entry_id="*"):
    event = Event.create(type, "test", subject, data or {}, trace_id)
    key = keys.DEAD_LETTER_STREAM if domain == "dead" else keys.stream(domain)
    return client.xadd(key, event.to_fields(), id=entry_id)


def page_all(api, secret, **params):
    """Follow `next` to the end; returns every item and the number of requests made."""
    items, requests_made, before = [], 0, None
    while True:
        query = {**params, **({"before": before} if before else {})}
        response = api.get("/api/v1/events", secret, params=query)
        assert response.status_code == 200, response.json
        requests_made += 1
        items += response.json["items"]
        before = response.json["next"]
        if before is None:
            return items, requests_made
        assert requests_made < 1000


def test_search_one_stream_newest_first(api):
    ids = [add(api.redis, "service", "service_started", subject=f"svc{i}") for i in range(5)]
    add(api.redis, "route", "route_created")
    response = api.get("/api/v1/events", api.admin, params={"stream": "service"})
    assert response.status_code == 200
    items = response.json["items"]
    assert [i["id"] for i in items] == list(reversed(ids))
    assert response.json["next"] is None
    first = items[0]
    assert first["stream"] == "service" and first["type"] == "service_started"
    assert set(first) == {"id", "type", "source", "subject", "trace_id", "ts_ms", "data",
                          "stream"}


def test_filters_by_type_subject_and_trace(api):
    # Explicit ids: entries of two streams written in the same millisecond merge by id.
    add(api.redis, "service", "service_started", subject="web", trace_id=TRACE_A, entry_id="1-0")
    add(api.redis, "service", "service_stopped", subject="web", trace_id=TRACE_B, entry_id="2-0")
    add(api.redis, "certificate", "renewed", subject="example", trace_id=TRACE_B,
        entry_id="3-0")
    add(api.redis, "service", "service_started", subject="db", trace_id=TRACE_B, entry_id="4-0")

    def found(**params):
        items = api.get("/api/v1/events", api.admin, params=params).json["items"]
        return [(i["stream"], i["type"], i["subject"]) for i in items]

    assert found(type="service_started") == [("service", "service_started", "db"),
                                             ("service", "service_started", "web")]
    assert found(subject="web", trace_id=TRACE_B) == [("service", "service_stopped", "web")]
    assert found(trace_id=TRACE_B.upper()) == [("service", "service_started", "db"),
                                               ("certificate", "renewed", "example"),
                                               ("service", "service_stopped", "web")]
    assert found(stream="certificate", type="service_started") == []


def test_all_streams_are_merged_and_paged_without_gaps_or_repeats(api):
    base = int(time.time() * 1000) - 100_000
    expected = []
    for i in range(60):
        domain = ("request", "route", "service", "system")[i % 4]
        expected.append(add(api.redis, domain, "e", subject=str(i), entry_id=f"{base + i}-0"))
    # The same id in two streams, right where a page boundary can fall.
    for domain in ("alert", "certificate"):
        expected.append(add(api.redis, domain, "tie", entry_id=f"{base + 30}-1"))
    add(api.redis, "dead", "e")  # the dead-letter stream is searched only when asked for
    items, _ = page_all(api, api.admin, limit=7)
    got = [(i["stream"], i["id"]) for i in items]
    assert len(got) == len(set(got)) == len(expected)
    ids = [i["id"] for i in items]
    assert ids == sorted(ids, key=lambda x: tuple(map(int, x.split("-"))), reverse=True)


def test_a_bounded_scan_returns_next_and_the_client_continues(api):
    target = add(api.redis, "request", "needle", trace_id=TRACE_B)
    pipe = api.redis.pipeline()
    for _ in range(2500):
        pipe.xadd(keys.stream("request"), Event.create("hay", "t", "s", {}, TRACE_A).to_fields())
    pipe.execute()
    first = api.get("/api/v1/events", api.admin,
                    params={"stream": "request", "trace_id": TRACE_B, "limit": 1}).json
    assert first["items"] == [] and first["next"] is not None  # scanned 1000, found nothing
    items, requests_made = page_all(api, api.admin, stream="request", trace_id=TRACE_B, limit=1)
    assert [i["id"] for i in items] == [target]
    assert requests_made >= 3


def test_user_tokens_see_only_events_of_their_owner(api):
    add(api.redis, "service", "service_started", data={"owner": "alice"})
    add(api.redis, "service", "service_started", data={"owner": "bob"})
    add(api.redis, "system", "streams_trimmed")
    alice = api.token("user", "alice")
    items = api.get("/api/v1/events", alice).json["items"]
    assert [i["data"]["owner"] for i in items] == ["alice"]
    assert len(api.get("/api/v1/events", api.admin).json["items"]) == 3


def test_dead_letters_carry_their_origin(api):
    fields = Event.create("boom", "test", "s", {}, TRACE_A).to_fields()
    api.redis.xadd(keys.DEAD_LETTER_STREAM, {**fields, "dead_stream": keys.stream("request"),
                                             "dead_group": "metrics", "dead_id": "1-0",
                                             "dead_reason": "failed 5 deliveries"})
    api.redis.xadd(keys.DEAD_LETTER_STREAM, {"not": "an envelope"})
    items = api.get("/api/v1/events", api.admin, params={"stream": "dead"}).json["items"]
    assert len(items) == 1
    assert items[0]["dead"] == {"stream": keys.stream("request"), "group": "metrics",
                                "id": "1-0", "reason": "failed 5 deliveries"}


@pytest.mark.parametrize("params, field", [
    ({"stream": "nope"}, "stream"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"before": "yesterday"}, "before"),
    ({"before": "1-2-3"}, "before"),
    ({"before": "99999999999999999999999"}, "before"),
    ({"trace_id": "xyz"}, "trace_id"),
    ({"type": "a" * 101}, "type"),
    ({"subject": "line\nbreak"}, "subject"),
    ({"color": "red"}, "color"),
])
def test_invalid_search_parameters_are_400(api, params, field):
    response = api.get("/api/v1/events", api.admin, params=params)
    assert response.status_code == 400
    assert response.json["field"] == field


def test_before_the_first_possible_id_is_an_empty_last_page(api):
    add(api.redis, "system", "x")
    for before in ("0", "0-0"):
        response = api.get("/api/v1/events", api.admin, params={"before": before})
        assert response.status_code == 200 and response.json == {"items": [], "next": None}


def test_repeated_parameter_is_400(api):
    response = api.get("/api/v1/events", api.admin, query_string="stream=route&stream=service")
    assert response.status_code == 400 and response.json["field"] == "stream"


# -- Server-Sent Events, in process: the response body is a generator we step through -------


class Tail:
    """Reads an SSE response body from the WSGI app directly, with a deadline per wait."""

    def __init__(self, api, secret, query="", headers=None):
        environ = falcon.testing.create_environ(
            "/api/v1/events/stream", query_string=query,
            headers={**bearer(secret), **(headers or {})})
        self.status = None
        self.headers = {}
        self.body = api.app(environ, self._start)
        self.buffer = b""

    def _start(self, status, headers, exc_info=None):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}

    def until(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not predicate(self.buffer):
            assert time.monotonic() < deadline, f"SSE body so far: {self.buffer!r}"
            self.buffer += next(iter(self.body))
        return self.buffer

    def events(self):
        out = []
        for block in self.buffer.decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines()
                         if line and not line.startswith((":", "retry")))
            if "data" in lines:
                out.append({"id": lines["id"], "event": lines["event"],
                            "data": json.loads(lines["data"])})
        return out

    def close(self):
        self.body.close()


@pytest.fixture
def sse_api(settings, redis_client):
    harness = Api(settings, redis_client, sse_ping_s=0.3, sse_block_ms=100)
    yield harness
    harness.close()


def test_tail_replays_from_since_then_follows_new_events(sse_api):
    api = sse_api
    first = add(api.redis, "service", "service_started", subject="a")
    add(api.redis, "route", "route_created", subject="skip-me")
    tail = Tail(api, api.admin, "stream=service&since=0")
    assert tail.status.startswith("200")
    assert tail.headers["content-type"].startswith("text/event-stream")
    tail.until(lambda b: first.encode() in b)
    later = add(api.redis, "service", "service_stopped", subject="a")
    tail.until(lambda b: later.encode() in b)
    tail.close()
    events = tail.events()
    assert [(e["id"], e["event"]) for e in events] == [(first, "service_started"),
                                                       (later, "service_stopped")]
    assert events[0]["data"]["stream"] == "service" and events[0]["data"]["subject"] == "a"


def test_tail_starts_at_now_by_default_and_honours_last_event_id(sse_api):
    api = sse_api
    old = add(api.redis, "system", "old")
    tail = Tail(api, api.admin, "type=new")
    new = add(api.redis, "system", "new")
    add(api.redis, "request", "ignored-type")
    tail.until(lambda b: new.encode() in b)
    tail.close()
    assert [e["id"] for e in tail.events()] == [new]

    resumed = Tail(api, api.admin, "since=0", headers={"Last-Event-ID": old})
    resumed.until(lambda b: new.encode() in b)
    resumed.close()
    assert old not in [e["id"] for e in resumed.events()]


def test_tail_filters_by_owner_for_user_tokens(sse_api):
    api = sse_api
    alice = api.token("user", "alice")
    tail = Tail(api, alice, "since=0")
    add(api.redis, "service", "service_started", data={"owner": "bob"})
    mine = add(api.redis, "service", "service_started", data={"owner": "alice"})
    tail.until(lambda b: mine.encode() in b)
    tail.close()
    assert [e["data"]["data"]["owner"] for e in tail.events()] == ["alice"]


def test_tail_pings_when_idle_and_closing_frees_its_connection(sse_api):
    api = sse_api
    before = len(api.redis.client_list())
    tail = Tail(api, api.admin)
    tail.until(lambda b: b": ping\n\n" in b)
    assert len(api.redis.client_list()) == before + 1  # its own connection for XREAD BLOCK
    tail.close()  # the server notices the closed socket shortly after
    wait_until(lambda: len(api.redis.client_list()) == before, timeout=5, what="disconnect")


@pytest.mark.parametrize("query, headers", [
    ("since=soon", None),
    ("stream=nope", None),
    ("limit=5", None),
    ("", {"Last-Event-ID": "not-an-id"}),
])
def test_tail_rejects_bad_input_as_json(sse_api, query, headers):
    api = sse_api
    response = api.get("/api/v1/events/stream", api.admin, query_string=query,
                       headers=headers or {})
    assert response.status_code == 400
    assert set(response.json) >= {"title", "description"}


# -- Server-Sent Events through the real web process (gunicorn, gevent worker) ---------------


@pytest.fixture(scope="module")
def web(redis_server, tmp_path_factory):
    proc, url = start_web(redis_server.url, tmp_path_factory.mktemp("web"))
    yield url
    code = proc.stop()
    if code not in (0, None):
        print(proc.output())


def test_tail_over_real_gunicorn(web, redis_client, api):
    publisher = Publisher(redis_client, flush_ms=10)
    with requests.get(f"{web}/api/v1/events/stream", params={"stream": "service"},
                      headers=bearer(api.admin), stream=True, timeout=(5, 10)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-trace-id"]
        lines = response.iter_lines(chunk_size=1, decode_unicode=True)
        assert next(lines) == "retry: 3000"
        sent = publisher.emit("service", "service_started", "test", "web", {"n": 1})
        publisher.flush()
        seen = []
        for line in lines:
            seen.append(line)
            if line.startswith("data: "):
                break
        data = json.loads(seen[-1][len("data: "):])
        assert "event: service_started" in seen
        assert data["trace_id"] == sent.trace_id and data["stream"] == "service"
        assert tails(redis_client) == 1
    publisher.close()
    # The client is gone: the server notices within one XREAD block, without writing.
    wait_until(lambda: tails(redis_client) == 0, timeout=10, what="the tail to end")


def tails(client):
    return sum(1 for c in client.client_list() if c.get("name") == TAIL_CLIENT_NAME)
