"""/api/v1/orchestrator/*, /healthz and component heartbeats, against a real Redis."""

import logging
import time

import dramatiq
import pytest
import redis
from falcon.testing import TestClient

from app import jobs
from app import redis as keys
from app.api import create_api
from app.background import Backoff
from app.events import Event, consumer_lag
from app.heartbeat import Heartbeat, read_heartbeats
from app.redis import create_client
from app.settings import Settings
from app.tracing import format_traceparent
from scheduler.app import Leadership
from tests.support.api import Api, bearer
from tests.support.procs import free_port, wait_until
from tests.support.refusing_redis import RefusingRedis
from workers.broker import create_broker

TRACE = "0af7651916cd43dd8448eb211c80319c"
NOW = 1_800_000_000.0


@pytest.fixture
def clocked(settings, redis_client):
    harness = Api(settings, redis_client, clock=lambda: NOW)
    yield harness
    harness.close()


def test_status_reports_heartbeats_against_the_clock(clocked):
    api = clocked
    api.redis.hset(keys.HEARTBEATS, mapping={
        "worker/host:1": int((NOW - 2) * 1000),
        "worker/host:2": int((NOW - 60) * 1000),
        "web/host:3": int(NOW * 1000),
    })
    response = api.get("/api/v1/orchestrator/status", api.admin)
    assert response.status_code == 200
    body = response.json
    assert body["redis"]["ok"] is True and body["redis"]["latency_ms"] >= 0
    # Processes the session keeps running (the e2e proxy) beat into the same Redis: only the
    # entries written here are this test's.
    written = [c for c in body["components"] if c["instance"].startswith("host:")]
    assert [(c["component"], c["instance"], c["alive"]) for c in written] == [
        ("web", "host:3", True), ("worker", "host:1", True), ("worker", "host:2", False)]
    assert written[1]["age_s"] == 2.0
    assert [c["state"] for c in written] == ["alive", "alive", "stale"]


def test_status_reports_streams_and_consumer_lag(api):
    for _ in range(3):
        api.redis.xadd(keys.stream("request"), Event.create("x", "t", "s").to_fields())
    api.redis.xgroup_create(keys.stream("request"), "metrics", id="0")
    api.redis.xreadgroup("metrics", "c1", {keys.stream("request"): ">"}, count=1)
    body = api.get("/api/v1/orchestrator/status", api.admin).json
    assert body["streams"][keys.stream("request")] == 3
    assert set(body["streams"]) == set(keys.ALL_STREAMS)
    (group,) = body["consumer_groups"]
    assert group["stream"] == keys.stream("request") and group["group"] == "metrics"
    assert group["pending"] == 1 and group["lag"] == 2 and group["consumers"] == 1


def test_status_reports_dramatiq_queue_depths(api):
    for _ in range(2):
        assert api.post("/api/v1/orchestrator/jobs/trim-streams", api.admin).status_code == 202
    delayed = dramatiq.Message(queue_name="maintenance", actor_name="trim_streams", args=(),
                               kwargs={}, options={})
    api.broker.enqueue(delayed, delay=60_000)
    body = api.get("/api/v1/orchestrator/status", api.admin).json
    assert {j.queue_name for j in jobs.ALL_JOBS} <= set(body["queues"])
    assert body["queues"]["maintenance"] == 2
    assert body["queues"]["maintenance.DQ"] == 1
    assert body["queue_details"]["maintenance"] == {"ready": 2, "in_progress": 0,
                                                    "delayed": 1, "dead": 0}


def test_every_job_is_listed_for_the_status_endpoint():
    defined = {v for v in vars(jobs).values() if isinstance(v, jobs.Job)}
    assert defined == set(jobs.ALL_JOBS)


def test_status_is_open_to_user_tokens(api):
    assert api.get("/api/v1/orchestrator/status", api.token()).status_code == 200


def test_trim_streams_is_enqueued_under_the_callers_trace(api):
    response = api.post("/api/v1/orchestrator/jobs/trim-streams", api.admin,
                        headers={"traceparent": format_traceparent(TRACE)})
    assert response.status_code == 202
    body = response.json
    assert body["job"] == "trim_streams" and body["trace_id"] == TRACE
    assert response.headers["x-trace-id"] == TRACE
    stored = api.broker.client.hvals(keys.dramatiq_messages("maintenance"))
    (message,) = [dramatiq.Message.decode(raw) for raw in stored]
    assert message.actor_name == "trim_streams"
    assert message.options["trace_id"] == TRACE
    assert message.message_id == body["message_id"]


def test_trim_streams_accepts_an_empty_object_and_nothing_else(api):
    ok = api.post("/api/v1/orchestrator/jobs/trim-streams", api.admin, json={})
    assert ok.status_code == 202
    for body in ({"now": True}, [], "x"):
        bad = api.post("/api/v1/orchestrator/jobs/trim-streams", api.admin, json=body)
        assert bad.status_code == 400, body


def test_trim_streams_needs_an_admin_token(api):
    response = api.post("/api/v1/orchestrator/jobs/trim-streams", api.token())
    assert response.status_code == 403
    assert api.broker.client.llen(keys.dramatiq_queue("maintenance")) == 0


def test_healthz_needs_no_token(api):
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "redis": True}


def test_redis_down_is_json_503(settings):
    dead = create_client(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    broker = create_broker(settings)
    try:
        client = TestClient(create_api(settings, dead, broker))
        health = client.simulate_get("/healthz")
        assert health.status_code == 503
        assert health.json == {"status": "unavailable", "redis": False}
        status = client.simulate_get("/api/v1/orchestrator/status",
                                     headers=bearer("brt_" + "x" * 43))
        assert status.status_code == 503
        assert set(status.json) == {"title", "description"}
        assert "Traceback" not in status.text
    finally:
        broker.close()
        dead.close()


def test_heartbeat_beats_and_removes_itself(redis_client):
    beat = Heartbeat(redis_client, "tester", every_s=0.05)
    beat.ensure_started()
    beat.ensure_started()  # idempotent within one process
    wait_until(lambda: redis_client.hexists(keys.HEARTBEATS, beat.member), timeout=5)
    # Session-wide processes (the e2e proxy) beat into the same Redis: only ours counts here.
    (me,) = [b for b in read_heartbeats(redis_client, time.time(), stale_s=30)
             if b["component"] == "tester"]
    assert me["alive"] is True
    beat.stop()
    assert not redis_client.hexists(keys.HEARTBEATS, beat.member)


def test_the_web_app_starts_its_heartbeat_on_first_request(settings, redis_client):
    beat = Heartbeat(redis_client, "web", every_s=0.05)
    harness = Api(settings, redis_client, heartbeat=beat)
    try:
        assert not redis_client.hexists(keys.HEARTBEATS, beat.member)  # nothing at build time
        harness.get("/healthz")
        wait_until(lambda: redis_client.hexists(keys.HEARTBEATS, beat.member), timeout=5)
        components = harness.get("/api/v1/orchestrator/status", harness.admin).json[
            "components"]
        assert any(c["component"] == "web" and c["alive"] for c in components)
    finally:
        beat.stop()
        harness.close()


# -- stale, degraded and forgotten heartbeats; leader, engine, lag ------------------------------


def test_status_shows_stale_and_degraded_and_forgets_the_long_dead(clocked):
    api = clocked
    stale_s = api.settings.heartbeat_stale_s
    api.redis.hset(keys.HEARTBEATS, mapping={
        "web/host:1": int((NOW - 1) * 1000),
        "consumer/host:2": int((NOW - 1) * 1000),
        "worker/host:3": int((NOW - stale_s - 1) * 1000),
        "worker/host:4": int((NOW - 601) * 1000),  # dead for over 10 minutes
    })
    api.redis.hset(keys.HEARTBEAT_STATES, mapping={
        "consumer/host:2": "reader of events:request:stream (consumer): Redis refusing writes",
        "worker/host:4": "something"})
    body = api.get("/api/v1/orchestrator/status", api.admin).json
    written = {c["instance"]: c for c in body["components"] if c["instance"].startswith("host:")}
    assert {i: c["state"] for i, c in written.items()} == {
        "host:1": "alive", "host:2": "degraded", "host:3": "stale"}
    assert written["host:2"]["alive"] is True and "refusing writes" in written["host:2"]["reason"]
    assert written["host:3"]["alive"] is False and written["host:3"]["reason"] == ""
    # The long-dead entry is removed from Redis, its state too.
    assert not api.redis.hexists(keys.HEARTBEATS, "worker/host:4")
    assert not api.redis.hexists(keys.HEARTBEAT_STATES, "worker/host:4")


def test_a_beat_reports_the_loops_that_fail_and_forgets_the_long_dead(redis_client):
    redis_client.hset(keys.HEARTBEATS, "worker/gone:9", int((time.time() - 700) * 1000))
    beat = Heartbeat(redis_client, "tester", every_s=60)
    loop = Backoff("test loop", logging.getLogger("test"))
    try:
        loop.failed(redis.ResponseError("MISCONF Redis is configured to save RDB snapshots"))
        beat.beat()
        (me,) = [b for b in read_heartbeats(redis_client, time.time(), stale_s=30)
                 if b["component"] == "tester"]
        assert me["state"] == "degraded"
        # The registry is per process: loops of earlier tests in this one may be listed too.
        assert "test loop: Redis refusing writes (MISCONF: it cannot persist to disk)" in \
            me["reason"].split("; ")
        assert not redis_client.hexists(keys.HEARTBEATS, "worker/gone:9")
        loop.succeeded()
        beat.beat()
        (me,) = [b for b in read_heartbeats(redis_client, time.time(), stale_s=30)
                 if b["component"] == "tester"]
        assert "test loop" not in me["reason"]
        assert me["state"] == ("degraded" if me["reason"] else "alive")
    finally:
        loop.succeeded()


def test_status_names_the_scheduler_leader_and_the_engine(api, settings):
    assert api.get("/api/v1/orchestrator/status", api.admin).json["scheduler_leader"] is None
    leadership = Leadership(api.redis, ttl_s=5, instance="host-a:42:beef")
    assert leadership.try_lead()
    body = api.get("/api/v1/orchestrator/status", api.admin).json
    leader = body["scheduler_leader"]
    assert leader["instance"] == "host-a:42:beef" and leader["term"] == leadership.fence.token
    assert 0 < leader["expires_in_ms"] <= 5000
    # This harness's API has no engine: said so, not an error.
    assert body["engine"]["reachable"] is False and body["engine"]["error"]


def test_lag_is_counted_from_ids_not_from_a_corrupted_entries_read(redis_client):
    stream = keys.stream("request")
    for _ in range(5):
        redis_client.xadd(stream, Event.create("x", "t", "s").to_fields())
    redis_client.xgroup_create(stream, "g", id="0")
    redis_client.xreadgroup("g", "c1", {stream: ">"}, count=5)
    redis_client.xack(stream, "g", *[e[0] for e in redis_client.xrange(stream)])
    # What a restart or a trim can leave: Redis's own counter says 5 are unread.
    last = redis_client.xrevrange(stream, count=1)[0][0]
    redis_client.execute_command("XGROUP", "SETID", stream, "g", last, "ENTRIESREAD", "0")
    assert redis_client.xinfo_groups(stream)[0]["lag"] == 5
    (group,) = consumer_lag(redis_client, [stream])
    assert (group["lag"], group["pending"], group["lag_seconds"]) == (0, 0, 0)
    for _ in range(3):
        redis_client.xadd(stream, Event.create("x", "t", "s").to_fields())
    (group,) = consumer_lag(redis_client, [stream])
    assert group["lag"] == 3 and group["lag_capped"] is False


# -- Redis refusing writes: 503 with Retry-After, never 500 --------------------------------------


@pytest.fixture
def refusing(tmp_path):
    server = RefusingRedis(tmp_path / "refusing").start()
    yield server
    server.stop()


def test_api_answers_503_with_retry_after_while_redis_refuses_writes(refusing):
    client = create_client(refusing.url)
    api = Api(Settings.from_env({}, redis_url=refusing.url), client)  # its broker too
    try:
        route = {"host": "app.example.test", "targets": ["http://127.0.0.1:9"]}
        with refusing.refusing():  # a real MISCONF
            for answer in (api.post("/api/v1/routes", api.admin, json=route),
                           api.post("/api/v1/tokens", api.admin, json={"name": "x"}),
                           api.post("/api/v1/orchestrator/jobs/trim-streams", api.admin),
                           api.get("/healthz")):
                assert answer.status_code == 503, answer.text
                assert "Traceback" not in answer.text
            refused = api.post("/api/v1/routes", api.admin, json=route)
            assert refused.headers["retry-after"] == "5"
            assert set(refused.json) == {"title", "description"}
            assert "MISCONF" in refused.json["description"]
            # Reads still work, and status says Redis refuses writes.
            assert api.get("/api/v1/routes", api.admin).status_code == 200
            status = api.get("/api/v1/orchestrator/status", api.admin)
            assert status.status_code == 200
            assert status.json["redis"]["ok"] is False
            assert status.json["redis"]["reachable"] is True
            assert "MISCONF" in status.json["redis"]["error"]
        assert api.post("/api/v1/routes", api.admin, json=route).status_code == 201
        assert api.get("/api/v1/orchestrator/status", api.admin).json["redis"]["ok"] is True
    finally:
        api.close()
        client.close()


def test_other_redis_errors_stay_500(api):
    api.redis.set(keys.HEARTBEATS, "not a hash")  # WRONGTYPE: a bug, not an outage
    answer = api.get("/api/v1/orchestrator/status", api.admin)
    assert answer.status_code == 500 and "retry-after" not in answer.headers
