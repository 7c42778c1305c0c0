"""Redis refusing writes for 10 s (a real MISCONF: its snapshot fails, as on a full or
read-only disk), under a steady load, with the platform run the way `make run` runs it
(scripts/run.sh, supervisord over the Procfile).

- the proxy keeps serving every request (its tables are in memory);
- the API answers 503 with Retry-After to what needs a write, never 500, and `berth status`
  exits 3 saying Redis refuses writes;
- no process exits (the same PIDs throughout), each one recovers by itself once Redis
  accepts writes again: every process beats again, none degraded, `berth status` exits 0;
- every answered request's event either landed (and is counted by the consumer exactly once)
  or is counted as dropped (the proxy's buffer is bounded at 300 to make sure some are).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections import Counter

import pytest
import requests

from app import redis as keys
from app.cli.main import main as berth
from app.metrics.aggregate import ROUTER
from app.redis import create_client
from app.stores.tokens import TokenStore
from harness.procs import wait_until
from tests.faults.load import SteadyLoad
from tests.faults.platform import beating_since, explain, process_tree
from tests.faults.supervised import KINDS, SupervisedPlatform
from tests.support.observability import serve_route
from tests.support.refusing_redis import RefusingRedis
from tests.test_consumer import counted

pytestmark = pytest.mark.faults

OUTAGE_S = 10
HOST = "misconf.test"
LOAD_PATH = "/load"
COMPONENTS = {"proxy", "web", "worker", "scheduler", "consumer"}


class ApiProbe(threading.Thread):
    """Writes (a new route) and reads through the API every 50 ms, counting the statuses."""

    def __init__(self, url: str, token: str, target: str):
        super().__init__(daemon=True, name="api-probe")
        self.url, self.target = url, target
        self.headers = {"Authorization": f"Bearer {token}"}
        self.statuses: Counter = Counter()
        self.without_retry_after = 0
        self.bad_bodies: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            for n in itertools.count():
                if self.stopped.wait(0.05):
                    return
                if n % 2:
                    answer = session.get(f"{self.url}/api/v1/routes", headers=self.headers,
                                         timeout=10)
                else:
                    answer = session.post(f"{self.url}/api/v1/routes", headers=self.headers,
                                          json={"host": f"probe-{n}.test",
                                                "targets": [self.target]}, timeout=10)
                self.statuses[answer.status_code] += 1
                if answer.status_code >= 500:
                    if "Retry-After" not in answer.headers:
                        self.without_retry_after += 1
                    body = answer.json()
                    if set(body) != {"title", "description"} or "Traceback" in answer.text:
                        self.bad_bodies.append(answer.text[:300])


def status_exit(web_url: str, token: str) -> tuple[int, dict]:
    """`berth status --json` as a user runs it: (its exit status, the document)."""
    with contextlib.redirect_stdout(buffer := _Buffer()):
        code = berth(["--url", web_url, "--token", token, "status", "--json"], {})
    return code, json.loads(buffer.text or "{}")


class _Buffer:
    def __init__(self):
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def load_events(client) -> int:
    return sum(1 for _id, fields in client.xrange(keys.stream("request"))
               if json.loads(fields["data"]).get("path") == LOAD_PATH)


def test_redis_refusing_writes_misconf_10_s_under_supervisord(tmp_path, backend, figures):
    server = RefusingRedis(tmp_path / "redis").start()
    client = create_client(server.url)
    platform = SupervisedPlatform(tmp_path / "platform", server.url, {
        "BERTH_PUBLISHER_FLUSH_MS": "20", "BERTH_PUBLISHER_BUFFER": "300",
        "BERTH_CONSUMER_CLAIM_IDLE_MS": "500", "BERTH_USER_TARGET_NETWORKS": "127.0.0.0/8"})
    probe = None
    try:
        platform.start()
        web_url = f"http://127.0.0.1:{platform.web_port}"
        admin = TokenStore(client).issue(name="admin", scope="admin", owner="root")[1]
        probes = serve_route(client, platform.http_port, HOST, backend.url)
        pids = {kind: process_tree(platform.pid(kind)) for kind in KINDS}
        every_pid = set().union(*pids.values())
        wait_until(lambda: beating_since(client, every_pid, 0) >= COMPONENTS, timeout=30,
                   what="every component beating")
        probe = ApiProbe(web_url, admin, backend.url)
        probe.start()

        with SteadyLoad(platform.http_port, HOST, LOAD_PATH) as load:
            load.wait_for(100)
            refused_at = time.monotonic()
            server.refuse_writes()
            time.sleep(1)  # every process meets it
            during_code, during = status_exit(web_url, admin)
            wait_until(lambda: probe.statuses[503] >= 5, timeout=OUTAGE_S,
                       what="the API answering 503")
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - refused_at)))
            served_during = load.served_since(refused_at)
            server.accept_writes()
            accepted_ms = int(time.time() * 1000)
            accepted = time.monotonic()

            def healthy() -> bool:
                code, doc = status_exit(web_url, admin)
                beating = beating_since(client, every_pid, accepted_ms)
                ours = [c for c in doc.get("components", [])
                        if int(c["instance"].rsplit(":", 1)[1]) in every_pid]
                return (code == 0 and beating >= COMPONENTS
                        and all(c["state"] == "alive" for c in ours))

            wait_until(healthy, timeout=30, interval=0.2, what="every process healthy")
            recovered_s = time.monotonic() - accepted
            load.wait_for(100)
        probe.stopped.set()
        probe.join(timeout=15)
        sent, failed = load.sent, load.failed

        def accounted() -> bool:
            return load_events(client) + int(client.get(keys.EVENTS_DROPPED) or 0) >= sent

        with contextlib.suppress(TimeoutError):  # a shortfall is reported and asserted below
            wait_until(accounted, timeout=30, what="the buffered events written")
        landed = load_events(client)
        dropped = int(client.get(keys.EVENTS_DROPPED) or 0)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: counted(client, ROUTER, [HOST]) >= probes + landed, timeout=30,
                       what="the consumer caught up")
        got = counted(client, ROUTER, [HOST])
        wait_until(lambda: client.xpending(keys.stream("request"), "consumer")["pending"] == 0,
                   timeout=30, what="nothing pending")
        exited = {kind: sorted(p for p in before if p not in process_tree(platform.pid(kind)))
                  for kind, before in pids.items()}
        exited = {kind: dead for kind, dead in exited.items() if dead}
        tracebacks = {kind: text[text.find("Traceback"):][:1500] for kind in KINDS
                      if "Traceback" in (text := platform.log(kind))}
        leader = status_exit(web_url, admin)[1].get("scheduler_leader")
        figures(fault="MISCONF", outage_s=OUTAGE_S, requests_sent=sent, requests_failed=failed,
                served_during=served_during, api_503=probe.statuses[503],
                api_500=probe.statuses[500], api_2xx=sum(n for s, n in probe.statuses.items()
                                                         if s < 300),
                status_exit_during=during_code, recovered_s=round(recovered_s, 1),
                events_landed=landed, events_dropped=dropped, events_lost=sent - landed - dropped,
                consumer_counted=got - probes, doubled=max(0, got - probes - landed),
                processes_exited=len(exited), logs_with_tracebacks=len(tracebacks))
        assert failed == 0, explain(client, load.failures)
        assert probe.statuses[500] == 0 and probe.without_retry_after == 0, probe.statuses
        assert set(probe.statuses) <= {200, 201, 503} and not probe.bad_bodies, probe.bad_bodies
        # Non-zero while Redis refuses: 3, its own report (Redis reachable, refusing writes),
        # or, seen in about one run in three, 1: the status read itself answered 503 in the
        # first moment of the refusal (which command refused it is not known yet).
        assert during_code in (1, 3), during_code
        if during_code == 3:
            assert during["redis"]["reachable"] is True and "MISCONF" in during["redis"]["error"]
        assert landed + dropped == sent and dropped > 0
        assert got == probes + landed  # every landed event counted once
        assert client.xlen(keys.DEAD_LETTER_STREAM) == 0
        assert exited == {}, exited
        assert tracebacks == {}, tracebacks
        assert leader is not None
    except BaseException:
        print(platform.logs())
        raise
    finally:
        if probe is not None:
            probe.stopped.set()
        platform.stop()
        client.close()
        server.stop()
