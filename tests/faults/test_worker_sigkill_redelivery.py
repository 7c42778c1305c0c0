"""How long a dead worker's message takes to reach another worker: a worker SIGKILLed while
the CA finalizes its order, with a second worker idle beside it. Nothing forces the requeue
here (unlike tests/faults/test_worker_sigkill_certificates.py): the live worker's own broker
finds the dead one's unacknowledged message after BERTH_WORKER_HEARTBEAT_TIMEOUT_MS and runs
it to the end, once, within 15 s of the kill. The figure printed is that time.
"""

from __future__ import annotations

import time

import pytest

from app import redis as keys
from harness.procs import wait_until
from tests.faults.platform import beating_since, process_tree
from tests.faults.test_worker_sigkill_certificates import all_acknowledged, certs  # noqa: F401

pytestmark = pytest.mark.faults

REDELIVERY_DEADLINE_S = 15


def test_issue_of_a_sigkilled_worker_completes_once_on_another_worker_within_15s(
        certs, figures):  # noqa: F811 - the fixture imported above
    front = certs.front
    orders = len(front.new_orders())
    finalizing = front.hold("/finalize-order/")
    certs.create("d", "d.example.com")
    wait_until(finalizing.is_set, timeout=30, what="the issue finalizing")
    since_ms = int(time.time() * 1000)
    certs.start("worker-b")  # idle: the issue message is the first worker's
    wait_until(lambda: beating_since(certs.redis, process_tree(certs.procs["worker-b"].pid),
                                     since_ms), timeout=30, what="the second worker beating")
    certs.procs.pop("worker").kill()
    killed = time.monotonic()
    front.release()  # the CA finalizes the order of a worker that is gone
    done = wait_until(lambda: (c := certs.store.find("d")) and c.status == "active"
                      and not c.order_url and c, timeout=REDELIVERY_DEADLINE_S,
                      interval=0.05, what=f"the issue redelivered within "
                                          f"{REDELIVERY_DEADLINE_S} s of the kill")
    redelivered_s = time.monotonic() - killed
    all_acknowledged(certs)
    wait_until(lambda: "ready" in certs.types("d"), what="ready event")
    types = certs.types("d")
    figures(redelivery_s=round(redelivered_s, 1),
            heartbeat_timeout_ms=certs.settings.worker_heartbeat_timeout_ms,
            new_orders=len(front.new_orders()) - orders, ready=types.count("ready"),
            steady_sent=certs.load.sent, steady_failed=certs.load.failed)
    assert certs.procs["worker-b"].alive()
    assert len(front.new_orders()) == orders + 1  # the one order, resumed
    assert types == ["generation_started", "ready"]
    assert done.failures == 0 and done.cert_pem
    assert certs.redis.hlen(keys.dramatiq_messages("certificates")) == 0
