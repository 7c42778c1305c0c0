"""Alert webhooks end to end: the consumer process fires an alert, the dramatiq worker process
delivers it, signed, to receivers run by the test; a failing receiver is retried."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import redis as keys
from app.alerts.rules import RuleStore
from app.events import Event
from harness.worker import start_worker
from tests.support.procs import Proc, free_port, wait_until

pytestmark = pytest.mark.e2e

SECRET = "webhook-secret-for-tests"


class Receiver:
    """Records every POST; /flaky fails its first two, /down fails them all."""

    def __init__(self):
        self.port = free_port()
        self.requests: list[tuple[str, dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.partition("?")[0]
                receiver.requests.append((path, dict(self.headers), body))
                seen = sum(1 for p, _h, _b in receiver.requests if p == path)
                failing = path == "/down" or (path == "/flaky" and seen <= 2)
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[tuple[dict, bytes]]:
        return [(h, b) for p, h, b in self.requests if p == path]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def test_alert_is_delivered_signed_and_a_failing_receiver_is_retried(
        redis_server, redis_client, settings, receiver, tmp_path):
    RuleStore(redis_client, settings).save(
        {"webhooks": [receiver.url("/ok"), receiver.url("/flaky"), receiver.url("/down?key=x")]})
    env = {"REDIS_URL": redis_server.url, "BERTH_LOG_FORMAT": "text",
           "BERTH_ALERT_WEBHOOK_SECRET": SECRET, "BERTH_ALERT_WEBHOOK_BACKOFF_MS": "50",
           "BERTH_ALERT_WEBHOOK_RETRIES": "2", "BERTH_CONSUMER_CLAIM_IDLE_MS": "500"}
    procs = [Proc([sys.executable, "-m", "workers.consumers"], tmp_path / "consumer.log", env),
             start_worker(env, tmp_path / "worker.log", threads=2)]
    try:
        failed = Event.create("service_failed", "worker", "web", {"error": "exited"},
                              trace_id="ab" * 16)
        redis_client.xadd(keys.stream("service"), failed.to_fields())
        wait_until(lambda: len(receiver.to("/ok")) == 1 and len(receiver.to("/flaky")) == 3
                   and len(receiver.to("/down")) == 3, timeout=60, what="deliveries")
        wait_until(lambda: redis_client.get(keys.WEBHOOKS_ABANDONED) == "1", timeout=30,
                   what="the failing delivery abandoned")
    except BaseException:
        for proc in procs:
            print(proc.output())
        print([(p, h.get("X-Berth-Delivery")) for p, h, _b in receiver.requests])
        raise
    finally:
        for proc in procs:
            proc.stop()

    headers, body = receiver.to("/ok")[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Berth-Signature"] == expected
    assert headers["X-Berth-Event"] == "alert_fired"
    alert = json.loads(body)
    assert alert["type"] == "alert_fired" and alert["trace_id"] == "ab" * 16
    assert alert["alert"]["rule"] == "service_failed" and alert["alert"]["subject"] == "web"
    # Retries carry the same delivery id and the same signed body.
    deliveries = {h["X-Berth-Delivery"] for _p, h, _b in receiver.requests}
    assert deliveries == {alert["id"]}
    assert {b for _p, _h, b in receiver.requests} == {body}

    # Every failed attempt is counted and published; the URL's path and query never are.
    assert redis_client.get(keys.WEBHOOK_FAILURES) == "5"  # flaky 2 + down 3
    events = [Event.from_entry(*e) for e in redis_client.xrange(keys.stream("alert"))]
    failures = [e for e in events if e.type == "webhook_failed"]
    assert len(failures) == 5 and {e.data["error"] for e in failures} == {"HTTP 500"}
    assert {e.data["url"] for e in failures} == {f"http://127.0.0.1:{receiver.port}"}
    abandoned = [e for e in events if e.type == "webhook_abandoned"]
    assert len(abandoned) == 1 and abandoned[0].data["retries"] == 2
    assert len([e for e in events if e.type == "webhook_delivered"]) == 2
    assert [e.trace_id for e in failures + abandoned] == ["ab" * 16] * 6
