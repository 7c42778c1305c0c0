"""/api/v1/orchestrator/*, /healthz and component heartbeats, against a real Redis."""

import time

import dramatiq
import pytest
from falcon.testing import TestClient

from app import jobs
from app import redis as keys
from app.api import create_api
from app.events import Event
from app.heartbeat import Heartbeat, read_heartbeats
from app.redis import create_client
from app.tracing import format_traceparent
from tests.support.api import Api, bearer
from tests.support.procs import free_port, wait_until
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
        "worker/host:2": int((NOW - 600) * 1000),
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
