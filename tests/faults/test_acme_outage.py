"""The ACME server down, then rate-limiting, while proxy-tls serves a steady HTTPS load with the
certificate due for renewal: every attempt is recorded with its backoff, the scheduler sends no
renewal while one runs, the old certificate keeps serving, and each failure raises an alert.

Pebble cannot answer rateLimited itself, so the worker's directory is an HTTPS front of pebble
(tests/faults/acme_front.py) that refuses connections while "down" and turns new-order requests
into `urn:ietf:params:acme:error:rateLimited` problems while rate-limiting.
"""

from __future__ import annotations

import ssl
import time

import pytest

from app import redis as keys
from app.events import Event
from app.models import Route
from app.stores.routes import RouteStore
from harness.procs import wait_until
from harness.proxy import ProxyProcess
from tests.acme.test_certificates_e2e import Platform
from tests.faults.acme_front import AcmeFront
from tests.faults.load import SteadyLoad
from tests.faults.platform import explain
from tests.support.observability import start_consumer

pytestmark = pytest.mark.faults

RETRY_AFTER_S = 3600


def fired(redis_client, subject: str) -> list[Event]:
    alerts = (Event.from_entry(*x) for x in redis_client.xrange(keys.stream("alert")))
    return [e for e in alerts if e.type == "alert_fired" and e.subject.endswith(subject)
            and e.data.get("rule") == "certificate_renewal_failed"]


def scheduler_cycles(redis_client) -> int:
    """Trims the scheduler enqueued so far: each is one more cycle of its 1-second jobs."""
    entries = redis_client.xrange(keys.stream("system"))
    return sum(1 for _id, fields in entries if fields.get("type") == "streams_trimmed")


def test_acme_down_then_rate_limiting_with_rate_limiting_front(
        redis_server, redis_client, pebble, proxy, backend, tmp_path, figures):
    front = AcmeFront(pebble, tmp_path / "front").start()
    platform = Platform(redis_client, pebble, tmp_path, BERTH_ACME_STAGING_URL=front.directory_url,
                        BERTH_ACME_PRODUCTION_URL=front.directory_url,
                        BERTH_ACME_CA_BUNDLE=str(front.ca_bundle), BERTH_ACME_BACKOFF_S="2",
                        BERTH_RENEWAL_SCAN_S="1", BERTH_TRIM_INTERVAL_S="1")
    tls = ProxyProcess(tmp_path / "tls", redis_server.url,
                       {"BERTH_SECRET_KEY": platform.env["BERTH_SECRET_KEY"],
                        "BERTH_TLS_DIR": str(tmp_path / "tls" / "files")},
                       workers=1, config="proxy/gunicorn_tls.py", module="proxy.wsgi_tls:app",
                       port_variable="BERTH_HTTPS_PORT")
    consumer = None
    try:
        platform.start("worker")
        consumer = start_consumer(redis_server.url, tmp_path / "consumer.log")
        platform.create("site", "site.example.com")
        platform.create("other", "other.example.com")
        old = platform.wait_for("site", lambda c: c.status == "active", "issuance")
        platform.wait_for("other", lambda c: c.status == "active", "issuance")
        routes = RouteStore(redis_client)
        routes.create(routes.new("alice", Route.clean({"host": "site.example.com",
                                                       "targets": [backend.url]})))
        tls.start()
        trust = ssl.create_default_context(cadata=pebble.root_pem())
        # A new TLS connection every 20 requests: each handshake shows the certificate served.
        with SteadyLoad(tls.port, "site.example.com", tls=trust, per_connection=20) as load:
            load.wait_for(50)
            platform.start("scheduler")

            # 1. The CA is down when the renewal is due: recorded, backed off, alerted.
            front.down()
            platform.store.update(platform.store.get("site").replace(renew_after=time.time() - 1))
            down = platform.wait_for("site", lambda c: c.backoff_reason == "unavailable",
                                     "a failed renewal")
            wait_until(lambda: fired(redis_client, "site"), timeout=20, what="alert for site")

            # 2. The CA is back but rate-limits new orders: the next attempt (once the backoff
            # is over) meets it; the Retry-After becomes the backoff.
            front.rate_limit(RETRY_AFTER_S)
            front.up()
            platform.store.update(platform.store.get("other").replace(renew_after=time.time() - 1))
            limited = {name: platform.wait_for(name, lambda c: c.backoff_reason == "rate_limited",
                                               f"{name} rate-limited")
                       for name in ("site", "other")}
            wait_until(lambda: fired(redis_client, "other"), timeout=20, what="alert for other")
            orders = len(front.new_orders())
            cycles = scheduler_cycles(redis_client)
            wait_until(lambda: scheduler_cycles(redis_client) >= cycles + 3, timeout=30,
                       what="three more scheduler cycles")
            load.wait_for(50)

        site = platform.store.get("site")
        types = platform.types("site")
        figures(requests_sent=load.sent, failed=load.failed, handshakes=sum(load.serials.values()),
                certificates_served=len(load.serials), renewal_failed=types.count("renewal_failed"),
                rate_limited=types.count("rate_limited"),
                new_orders_refused=front.new_orders().count(429),
                new_orders_during_backoff=len(front.new_orders()) - orders,
                backoff_left_s=round(site.backoff_until - time.time()))
        assert load.failed == 0, explain(redis_client, load.failures)
        assert set(load.serials) == {old.serial}  # the old certificate, every handshake
        assert down.failures >= 1 and down.backoff_until > 0 and down.serial == old.serial
        assert "cannot be reached" in down.last_error
        assert all(c.status == "active" and c.backoff_until >= time.time() + RETRY_AFTER_S - 60
                   for c in limited.values())
        assert site.serial == old.serial and site.cert_pem == old.cert_pem
        assert "renewed" not in types and "rate_limited" in types
        # One refused order per certificate, and none asked for during the backoff.
        assert front.new_orders().count(429) == 2 and len(front.new_orders()) == orders
    except BaseException:
        print(platform.logs())
        if consumer is not None:
            print(f"----- consumer -----\n{consumer.output()[-3000:]}")
        raise
    finally:
        platform.close()
        if consumer is not None:
            consumer.stop()
        tls.stop()
        front.stop()
