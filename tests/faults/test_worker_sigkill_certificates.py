"""A worker SIGKILLed in the middle of renew, revoke and delete: the redelivered message
completes the job once, with no second order, revocation or event, while a steady load goes
through the proxy (that pebble also validates through).

Each kill lands while the worker waits on a request it sent: to the CA, held by the ACME front
(tests/faults/acme_front.py), or to Redis, held by a relay (tests/faults/relay.py). The held
request then goes on as if the worker had died just after sending it, or is dropped (just
before). Dramatiq requeues a dead worker's messages after a 60 s heartbeat timeout; the test
runs that same requeue step at once. Issue is covered by tests/acme/test_certificates_e2e.py.
"""

from __future__ import annotations

import contextlib

import pytest

from app import redis as keys
from harness.procs import wait_until
from tests.acme.conftest import start_worker
from tests.acme.test_certificates_e2e import Platform, _requeue_messages_of_dead_workers
from tests.faults.acme_front import AcmeFront
from tests.faults.load import SteadyLoad
from tests.faults.platform import explain
from tests.faults.relay import HoldingRelay

pytestmark = pytest.mark.faults


def all_acknowledged(certs: Platform) -> None:
    """Every certificate message acknowledged (the redelivered one too): any event it would
    publish is published."""
    wait_until(lambda: certs.redis.hlen(keys.dramatiq_messages("certificates")) == 0,
               what="every certificate message acknowledged")


@pytest.fixture
def certs(redis_client, pebble, proxy, backend, routes, tmp_path):
    """A worker whose ACME directory is a front of pebble, one active certificate "c", and a
    steady load through the proxy, checked to lose nothing."""
    front = AcmeFront(pebble, tmp_path / "front").start()
    platform = Platform(redis_client, pebble, tmp_path, BERTH_ACME_STAGING_URL=front.directory_url,
                        BERTH_ACME_PRODUCTION_URL=front.directory_url,
                        BERTH_ACME_CA_BUNDLE=str(front.ca_bundle), BERTH_ACME_LOCK_TTL_S="3")
    platform.front = front
    try:
        routes.add("steady.test", [backend.url])
        platform.start("worker")
        platform.create("c", "c.example.com")
        platform.issued = platform.wait_for("c", lambda c: c.status == "active", "issuance")
        # The record is active a moment before the issue message is acknowledged. A test
        # stops or kills this worker next, and the forced requeue would redeliver an issue
        # message still unacknowledged then: a second issuance after a revoke.
        all_acknowledged(platform)
        with SteadyLoad(proxy.port, "steady.test") as platform.load:
            yield platform
            platform.load.wait_for(20)
        assert platform.load.failed == 0, explain(redis_client, platform.load.failures)
    except BaseException:
        print(platform.logs())
        raise
    finally:
        platform.close()
        front.stop()


def kill_and_redeliver(platform: Platform) -> None:
    """SIGKILL the worker; requeue what it held, as Dramatiq would a minute later; start a
    new one."""
    platform.procs.pop("worker").kill()
    _requeue_messages_of_dead_workers(platform.settings, "certificates")
    platform.start("worker-again")


def test_renew_killed_while_finalizing_completes_the_same_order_once(certs, pebble, figures):
    front = certs.front
    orders = len(front.new_orders())
    finalizing = front.hold("/finalize-order/")
    certs.commands.renew(certs.store.get("c"))
    wait_until(finalizing.is_set, timeout=30, what="the renewal finalizing")
    order_url = certs.store.get("c").order_url
    kill_and_redeliver(certs)
    front.release()  # the CA finalizes the order of a worker that is gone
    renewed = certs.wait_for("c", lambda c: c.serial != certs.issued.serial and not c.order_url,
                             "the redelivered renewal")
    wait_until(lambda: "renewed" in certs.types("c"), what="renewed event")
    types = certs.types("c")
    figures(new_orders=len(front.new_orders()) - orders,
            renewal_started=types.count("renewal_started"), renewed=types.count("renewed"),
            steady_sent=certs.load.sent, steady_failed=certs.load.failed)
    assert order_url and len(front.new_orders()) == orders + 1  # the one order, resumed
    assert types == ["generation_started", "ready", "renewal_started", "renewed"]
    assert renewed.status == "active" and renewed.failures == 0
    assert pebble.cert_status(renewed.serial)["Status"] == "Valid"


def test_revoke_killed_while_the_ca_revokes_is_recorded_once(certs, pebble, figures):
    front = certs.front
    revoking = front.hold("/revoke-cert")
    certs.commands.revoke(certs.store.get("c"))
    wait_until(revoking.is_set, timeout=30, what="the revocation sent")
    kill_and_redeliver(certs)
    front.release()  # the CA revokes for a worker that is gone; the retry meets alreadyRevoked
    revoked = certs.wait_for("c", lambda c: c.status == "revoked", "the redelivered revoke")
    wait_until(lambda: "revoked" in certs.types("c"), what="revoked event")
    types = certs.types("c")
    revocations = [p for m, p, _s in front.requests if m == "POST" and "/revoke-cert" in p]
    figures(revocations_sent=len(revocations), revoked_events=types.count("revoked"),
            steady_sent=certs.load.sent, steady_failed=certs.load.failed)
    assert types == ["generation_started", "ready", "revoked"]
    assert revoked.serial == certs.issued.serial and not revoked.key_pem
    assert pebble.cert_status(revoked.serial)["Status"] == "Revoked"


@contextlib.contextmanager
def worker_through_relay(certs: Platform, redis_server, tmp_path):
    """Replace the worker with one whose Redis connections pass through a HoldingRelay."""
    certs.procs.pop("worker").stop()
    relay = HoldingRelay(redis_server.port).start()
    try:
        certs.procs["worker"] = start_worker({**certs.env, "REDIS_URL": relay.url},
                                             tmp_path / "worker-relayed.log")
        yield relay
    finally:
        relay.stop()


def kill_at_the_write(certs: Platform, relay: HoldingRelay, held, when: str) -> None:
    """Once the worker waits on the held transaction, SIGKILL it; the transaction then reaches
    Redis (after_the_write) or not (before_the_write); the message is redelivered and a new
    worker runs it to the end."""
    wait_until(held.is_set, timeout=30, what="the transaction sent")
    certs.procs.pop("worker").kill()
    relay.release() if when == "after_the_write" else relay.discard()
    _requeue_messages_of_dead_workers(certs.settings, "certificates")
    certs.start("worker-again")


# After the write, the redelivered message finds the job done and stops: the event must have
# been written with the change (the same transaction), or it is lost.
WHEN = ["before_the_write", "after_the_write"]


@pytest.mark.parametrize("when", WHEN)
def test_delete_killed_at_its_redis_write_completes_once(certs, redis_server, redis_client,
                                                        tmp_path, when, figures):
    with worker_through_relay(certs, redis_server, tmp_path) as relay:
        # The transaction that removes the record and its index entries.
        deleting = relay.hold(b"MULTI", b"ZREM", keys.record("certificate", "c").encode())
        certs.commands.delete(certs.store.get("c"))
        kill_at_the_write(certs, relay, deleting, when)
        wait_until(lambda: certs.store.find("c") is None, what="the record deleted")
        all_acknowledged(certs)
        with contextlib.suppress(TimeoutError):  # a missing event is asserted below
            wait_until(lambda: "deleted" in certs.types("c"), timeout=5, what="deleted event")
        figures(when=when, deleted_events=certs.types("c").count("deleted"),
                steady_sent=certs.load.sent, steady_failed=certs.load.failed)
        assert certs.types("c") == ["generation_started", "ready", "deleted"]
        assert not redis_client.exists(keys.certificate_job_guard("c"))


@pytest.mark.parametrize("when", WHEN)
def test_revoke_killed_at_its_redis_write_is_recorded_once(certs, pebble, redis_server,
                                                          tmp_path, when, figures):
    with worker_through_relay(certs, redis_server, tmp_path) as relay:
        # The transaction that stores the revoked record (the CA has revoked it by then).
        revoking = relay.hold(b"MULTI", keys.record("certificate", "c").encode(),
                              b'"status":"revoked"')
        certs.commands.revoke(certs.store.get("c"))
        kill_at_the_write(certs, relay, revoking, when)
        revoked = certs.wait_for("c", lambda c: c.status == "revoked", "the revoked record")
        all_acknowledged(certs)
        with contextlib.suppress(TimeoutError):  # a missing event is asserted below
            wait_until(lambda: "revoked" in certs.types("c"), timeout=5, what="revoked event")
        revocations = [p for m, p, _s in certs.front.requests
                       if m == "POST" and "/revoke-cert" in p]
        figures(when=when, revocations_sent=len(revocations),
                revoked_events=certs.types("c").count("revoked"),
                steady_sent=certs.load.sent, steady_failed=certs.load.failed)
        assert certs.types("c") == ["generation_started", "ready", "revoked"]
        assert revoked.serial == certs.issued.serial and not revoked.key_pem
        assert pebble.cert_status(revoked.serial)["Status"] == "Revoked"
