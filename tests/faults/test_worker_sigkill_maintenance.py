"""A worker SIGKILLed in the middle of trim_streams and of a webhook delivery, while a steady
load goes through the proxy: the redelivered job completes once.

- trim_streams is killed with its XTRIM pipeline held by a relay in front of Redis
  (tests/faults/relay.py), which then delivers it: the streams are trimmed by the dead worker
  and again (to no effect) by the redelivery, which alone publishes streams_trimmed.
- deliver_webhook is killed while the receiver holds the POST unanswered; the receiver then
  answers it (to nobody) and gets the redelivered POST: the same delivery id, the same signed
  body, so it applies the alert once; one webhook_delivered, no failure counted.
Dramatiq requeues a dead worker's messages after a 60 s heartbeat timeout; the test runs that
requeue step at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import redis as keys
from app.events import Event
from app.jobs import DELIVER_WEBHOOK, TRIM_STREAMS, enqueue
from app.settings import Settings
from app.tracing import trace_context
from harness.procs import free_port, wait_until
from tests.acme.conftest import start_worker
from tests.acme.test_certificates_e2e import _requeue_messages_of_dead_workers
from tests.faults.load import SteadyLoad
from tests.faults.platform import Processes, explain, process_tree
from tests.faults.relay import HoldingRelay
from workers.broker import create_broker

pytestmark = pytest.mark.faults

SECRET = "fault-suite webhook secret"


class HoldingReceiver:
    """A webhook receiver that holds the first POST unanswered until `release()`, answers
    204 to every POST, and applies each delivery id once (as receivers are told to)."""

    def __init__(self):
        self.port = free_port()
        self.posts: list[tuple[dict, bytes]] = []
        self.applied: dict[str, bytes] = {}
        self.arrived = threading.Event()
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append((dict(self.headers), body))
                if len(receiver.posts) == 1:
                    receiver.arrived.set()
                    receiver._released.wait(60)
                receiver.applied.setdefault(self.headers["X-Berth-Delivery"], body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?key=secret-in-the-url"

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def steady(proxy, routes, backend, redis_client):
    routes.add("steady.test", [backend.url])
    with SteadyLoad(proxy.port, "steady.test") as load:
        yield load
        load.wait_for(20)
    assert load.failed == 0, explain(redis_client, load.failures)


def deliver_held(broker, receiver: HoldingReceiver, body: str, delivery: str) -> str:
    """Send a webhook delivery to `receiver` and wait until its POST is held there; returns
    the trace id."""
    with trace_context(None) as trace:
        enqueue(broker, DELIVER_WEBHOOK, url=receiver.url, body=body, delivery=delivery,
                event_type="alert_fired")
    wait_until(receiver.arrived.is_set, timeout=30, what="the webhook POST")
    return trace


def events(redis_client, domain: str, event_type: str, trace: str) -> list[Event]:
    return [e for e in (Event.from_entry(*x) for x in redis_client.xrange(keys.stream(domain)))
            if e.type == event_type and e.trace_id == trace]


def test_trim_streams_killed_after_its_xtrim_left_publishes_once(
        redis_server, redis_client, steady, tmp_path, figures):
    env = {"REDIS_URL": redis_server.url, "BERTH_LOG_FORMAT": "text",
           "BERTH_EVENTS_RETENTION_HOURS": "1"}
    settings = Settings.from_env(env)
    old_ms = int((time.time() - 2 * 3600) * 1000)  # past the retention
    for i in range(500):  # on a stream the load does not write to
        redis_client.xadd(keys.stream("certificate"), {"type": "old"}, id=f"{old_ms}-{i}")
    steady.wait_for(20)  # and recent entries, from the load
    relay = HoldingRelay(redis_server.port).start()
    broker = create_broker(settings)
    try:
        with Processes() as procs:
            procs["worker-1"] = start_worker({**env, "REDIS_URL": relay.url},
                                             tmp_path / "worker-1.log")
            trimming = relay.hold(b"XTRIM")
            with trace_context(None) as trace:
                enqueue(broker, TRIM_STREAMS)
            wait_until(trimming.is_set, timeout=30, what="the trim pipeline sent")
            procs["worker-1"].kill()
            relay.release()  # Redis trims for a worker that is gone
            _requeue_messages_of_dead_workers(settings, "maintenance")
            procs["worker-2"] = start_worker(env, tmp_path / "worker-2.log")
            [trimmed] = wait_until(lambda: events(redis_client, "system", "streams_trimmed", trace),
                                   timeout=30, what="streams_trimmed")
            time.sleep(0.5)  # a second event would come at once
            left_old = redis_client.xlen(keys.stream("certificate"))
            recent = redis_client.xlen(keys.stream("request"))
            count = len(events(redis_client, "system", "streams_trimmed", trace))
            figures(old_entries=500, old_left=left_old, recent_kept=recent, trimmed_events=count,
                    removed_by_redelivery=trimmed.data["removed"][keys.stream("certificate")],
                    steady_sent=steady.sent, steady_failed=steady.failed)
            assert count == 1 and left_old == 0 and recent >= 20
    finally:
        broker.close()
        relay.stop()


def test_webhook_delivery_killed_mid_post_is_delivered_once(
        redis_server, redis_client, steady, tmp_path, figures):
    env = {"REDIS_URL": redis_server.url, "BERTH_LOG_FORMAT": "text",
           "BERTH_ALERT_WEBHOOK_SECRET": SECRET}
    settings = Settings.from_env(env)
    receiver = HoldingReceiver()
    broker = create_broker(settings)
    body = json.dumps({"id": "1700000000000-0", "type": "alert_fired",
                       "alert": {"rule": "service_failed", "subject": "web"}})
    try:
        with Processes() as procs:
            procs["worker-1"] = start_worker(env, tmp_path / "worker-1.log")
            trace = deliver_held(broker, receiver, body, "1700000000000-0")
            procs["worker-1"].kill()
            receiver.release()  # the receiver applies it and answers a worker that is gone
            _requeue_messages_of_dead_workers(settings, "alerts")
            procs["worker-2"] = start_worker(env, tmp_path / "worker-2.log")
            wait_until(lambda: events(redis_client, "alert", "webhook_delivered", trace),
                       timeout=30, what="webhook_delivered")
            time.sleep(0.5)  # a second event would come at once
            delivered = events(redis_client, "alert", "webhook_delivered", trace)
            failed = events(redis_client, "alert", "webhook_failed", trace)
            signature = "sha256=" + hmac.new(SECRET.encode(), body.encode(),
                                             hashlib.sha256).hexdigest()
            figures(posts=len(receiver.posts), applied=len(receiver.applied),
                    delivered_events=len(delivered), failed_events=len(failed),
                    failures_counted=int(redis_client.get(keys.WEBHOOK_FAILURES) or 0),
                    steady_sent=steady.sent, steady_failed=steady.failed)
            assert len(receiver.posts) == 2  # the killed attempt and its redelivery
            assert {h["X-Berth-Delivery"] for h, _b in receiver.posts} == {"1700000000000-0"}
            assert {h["X-Berth-Signature"] for h, _b in receiver.posts} == {signature}
            assert {b for _h, b in receiver.posts} == {body.encode()}
            assert receiver.applied == {"1700000000000-0": body.encode()}
            assert len(delivered) == 1 and failed == []
            assert not redis_client.get(keys.WEBHOOK_FAILURES)
    finally:
        broker.close()
        receiver.stop()


def test_sigterm_to_the_process_group_finishes_the_message_in_hand(
        redis_server, redis_client, tmp_path, figures):
    """Supervisors (honcho under `make run`, systemd) stop a worker with SIGTERM to its whole
    process group, and Dramatiq's main process forwards it again to the worker process, which
    takes a second SIGTERM as "exit now". Here the forwarded one comes late, as on a loaded
    machine: the worker still finishes the delivery in hand and acknowledges it."""
    env = {"REDIS_URL": redis_server.url, "BERTH_LOG_FORMAT": "text",
           "BERTH_ALERT_WEBHOOK_SECRET": SECRET}
    receiver = HoldingReceiver()
    broker = create_broker(Settings.from_env(env))
    body = json.dumps({"id": "1700000000001-0", "type": "alert_fired"})
    try:
        with Processes() as procs:
            worker = procs["worker"] = start_worker(env, tmp_path / "worker.log")
            trace = deliver_held(broker, receiver, body, "1700000000001-0")
            [worker_process] = process_tree(worker.pid) - {worker.pid}  # Dramatiq's only one
            os.killpg(worker.pid, signal.SIGTERM)
            time.sleep(0.3)
            os.kill(worker_process, signal.SIGTERM)  # the forwarded one, late
            time.sleep(0.3)
            receiver.release()
            code = worker.popen.wait(30)
            delivered = events(redis_client, "alert", "webhook_delivered", trace)
            unacknowledged = redis_client.hlen(keys.dramatiq_messages("alerts"))
            figures(exit_code=code, delivered_events=len(delivered), posts=len(receiver.posts),
                    unacknowledged=unacknowledged)
            assert "Killing worker process" not in worker.output()
            assert code == 0 and len(delivered) == 1 and unacknowledged == 0
    finally:
        broker.close()
        receiver.stop()
