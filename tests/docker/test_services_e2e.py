"""Docker services end to end: a real dockerd, a real `dramatiq workers.main` process, the
real proxy (gunicorn) routing by hostname, and `create_api` in process (falcon TestClient) with
the real engine, as the web process builds it.

Covered: create -> healthy -> served through the proxy by hostname; scale to 3 spreads
requests over 3 containers; a redeploy under a steady request loop fails no request; delete
leaves no container, no port, no route; a worker SIGKILLed during create leaves, after
redelivery, exactly one container set and no leaked port; a container killed behind berth's
back is noticed by the engine watcher, reported, and restarted."""

from __future__ import annotations

import http.client
import threading
import time

import dramatiq.brokers.redis
import pytest

from app import redis as keys
from app.events import Event
from harness.docker import TEST_LABEL, remove_test_containers
from harness.procs import Proc, wait_until
from harness.proxy import ProxyProcess
from harness.worker import start_worker
from tests.support.api import Api

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

BASE = "/api/v1/services"
HEALTH = {"path": "/id.txt", "interval_s": 1, "timeout_s": 1}


@pytest.fixture(scope="module")
def proxy(redis_server, tmp_path_factory):
    process = ProxyProcess(tmp_path_factory.mktemp("proxy"), redis_server.url,
                           {"BERTH_PROXY_CONNECT_TIMEOUT_S": "1"})
    process.start()
    yield process
    process.stop()


class Worker:
    """The real worker process; start() again after kill() for a fresh one."""

    def __init__(self, redis_url: str, docker_url: str, log_dir):
        # The drain (2 s by default) must outlast the proxies' route reload and a request in
        # flight on a loaded 2-core machine: 500 ms did not, and a redeploy cut a response.
        self.env = {"REDIS_URL": redis_url, "DOCKER_HOST": docker_url,
                    "BERTH_IMAGE_PULL": "never", "BERTH_SERVICE_DRAIN_MS": "1500",
                    "BERTH_SERVICE_START_TIMEOUT_S": "20", "BERTH_SERVICE_STOP_TIMEOUT_S": "5",
                    "BERTH_SERVICE_LOCK_TTL_S": "3", "BERTH_LOG_FORMAT": "text"}
        self.log_dir = log_dir
        self.proc: Proc | None = None
        self.runs = 0

    def start(self) -> Worker:
        self.runs += 1
        self.proc = start_worker(self.env, self.log_dir / f"worker-{self.runs}.log", threads=4)
        return self

    def wait_ready(self, redis_client) -> Worker:
        """Until a worker process beats (it has booted, and its engine watcher with it)."""
        def beating() -> bool:
            if not self.proc.alive():
                raise RuntimeError(f"the worker exited:\n{self.output()}")
            return any(m.startswith("worker/") for m in redis_client.hkeys(keys.HEARTBEATS))
        wait_until(beating, timeout=30, what="the worker beating")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.log_dir.glob("worker-*.log")))


@pytest.fixture
def worker(redis_server, docker_daemon, tmp_path, redis_client):
    process = Worker(redis_server.url, docker_daemon.url, tmp_path).start()
    process.wait_ready(redis_client)
    yield process
    process.stop()


@pytest.fixture
def platform(request, service_settings, redis_client, engine, worker, proxy, test_image,
             docker_client):
    api = Api(service_settings, redis_client, engine=engine)  # as the web process builds it
    api.image = test_image
    try:
        yield api
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(f"----- worker -----\n{worker.output()}\n----- proxy -----\n"
                  f"{proxy.output()[-5000:]}")
        # Records first: the worker's reconciler would otherwise revive the containers
        # removed below (their restart policy) and leak them into the next test.
        redis_client.flushdb()
        remove_test_containers(docker_client)
        api.close()


def create(api, name: str = "web", **extra) -> str:
    body = {"name": name, "image": api.image, "port": 8080, "health": HEALTH,
            "labels": {TEST_LABEL: "1"}, **extra}
    answer = api.post(BASE, api.admin, json=body)
    assert answer.status_code == 202, answer.text
    return answer.json["trace_id"]


def command(api, name: str, action: str, **body) -> str:
    answer = api.post(f"{BASE}/{name}/{action}", api.admin, json=body or None)
    assert answer.status_code == 202, answer.text
    return answer.json["trace_id"]


def event(redis_client, trace_id: str, *types: str, timeout: float = 60) -> Event:
    """The first service event of one of `types` carrying `trace_id` (waits for it)."""
    def found():
        for entry_id, fields in redis_client.xrange(keys.stream("service")):
            candidate = Event.from_entry(entry_id, fields)
            if candidate.trace_id == trace_id and candidate.type in types:
                return candidate
        return None
    return wait_until(found, timeout=timeout, interval=0.1, what=f"{types} for {trace_id}")


def service_events(redis_client, event_type: str) -> list[Event]:
    return [Event.from_entry(entry_id, fields)
            for entry_id, fields in redis_client.xrange(keys.stream("service"))
            if fields["type"] == event_type]


def get(proxy: ProxyProcess, host: str, path: str = "/id.txt") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode().strip()
    finally:
        conn.close()


def serving(proxy: ProxyProcess, host: str) -> str | None:
    """The container id that answered, once the proxy routes `host` (new connections land
    on either proxy worker: both must have the route)."""
    answers = [get(proxy, host) for _ in range(4)]
    return answers[-1][1] if all(status == 200 for status, _ in answers) else None


class RequestLoop(threading.Thread):
    """Requests through the proxy, one after another, until stopped; counts failures."""

    def __init__(self, proxy: ProxyProcess, host: str):
        super().__init__(daemon=True)
        self.proxy, self.host = proxy, host
        self.halt = threading.Event()
        self.versions: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                status, body = get(self.proxy, self.host, "/version.txt")
            except (OSError, http.client.HTTPException) as ex:
                self.failures.append(repr(ex))
                continue
            if status == 200:
                self.versions.append(body)
            else:
                self.failures.append(f"{status} {body[:100]}")

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def test_create_scale_redeploy_delete_through_the_proxy(platform, redis_client, proxy,
                                                        engine):
    api = platform
    trace = create(api)
    started = event(redis_client, trace, "service_started", "service_failed")
    assert started.type == "service_started", started.data
    assert event(redis_client, trace, "service_created").data["containers"]
    first = wait_until(lambda: serving(proxy, "web.localhost"), what="web.localhost served")
    assert first == started.data["containers"][0]["id"]

    scaled = event(redis_client, command(api, "web", "scale", replicas=3), "service_scaled",
                   "service_failed")
    assert scaled.type == "service_scaled" and scaled.data["previous"] == 1
    ids = {c["id"] for c in scaled.data["containers"]}
    assert len(ids) == 3
    wait_until(lambda: {get(proxy, "web.localhost")[1] for _ in range(30)} == ids,
               what="requests spread over the 3 containers")

    loop = RequestLoop(proxy, "web.localhost")
    loop.start()
    try:
        wait_until(lambda: len(loop.versions) >= 20, what="the loop under way")
        redeployed = event(redis_client, command(api, "web", "redeploy", env={"VERSION": "2"}),
                           "service_redeployed", "service_failed")
        assert redeployed.type == "service_redeployed", redeployed.data
        served = len(loop.versions)
        wait_until(lambda: len(loop.versions) >= served + 20, what="requests after the switch")
    finally:
        loop.stop()
    assert loop.failures == []
    assert loop.versions[0] == "1" and loop.versions[-1] == "2"
    assert len(redeployed.data["removed"]) == 3

    deleted = event(redis_client, api.delete(f"{BASE}/web", api.admin).json["trace_id"],
                    "service_deleted", "service_failed")
    assert deleted.type == "service_deleted"
    assert engine.list({"berth.service": "web"}) == []
    assert redis_client.hgetall(keys.ports_allocated()) == {}
    assert redis_client.zcard(keys.index("route")) == 0
    assert api.get(f"{BASE}/web", api.admin).status_code == 404
    wait_until(lambda: get(proxy, "web.localhost")[0] == 404, what="web.localhost unrouted")


def test_worker_killed_during_create_leaves_one_container_set(platform, redis_client, proxy,
                                                              engine, worker):
    api = platform
    # Serving starts 3 s late, so the worker is inside the health wait when it dies.
    trace = create(api, replicas=2,
                   command=["sh", "-c", "sleep 3; exec sh /start.sh"])
    wait_until(lambda: len(engine.list({"berth.service": "web"})) == 2, timeout=30,
               what="the first attempt's containers")
    worker.proc.kill()  # SIGKILL: no acknowledgement, no clean-up
    # Dramatiq requeues a dead worker's messages once its heartbeat is older than the
    # broker's heartbeat_timeout (60 s by default, checked by a random 0.1 % of calls).
    # Run that same maintenance now, with a 1 s timeout, instead of waiting a minute.
    time.sleep(1.5)
    requeue = dramatiq.brokers.redis.RedisBroker(
        url=api.settings.redis_url, heartbeat_timeout=1000,
        maintenance_chance=dramatiq.brokers.redis.MAINTENANCE_SCALE)
    requeue.do_qsize("services")
    requeue.close()
    worker.start()
    started = event(redis_client, trace, "service_started", "service_failed")
    assert started.type == "service_started", started.data
    assert "create web: done" in (worker.log_dir / "worker-2.log").read_text()
    containers = engine.list({"berth.service": "web"})
    assert sorted(c.name for c in containers) == ["berth-web.1.0", "berth-web.1.1"]
    assert all(c.running for c in containers)
    ports = redis_client.hgetall(keys.ports_allocated())
    assert sorted(ports.values()) == ["berth-web.1.0", "berth-web.1.1"]
    assert sorted(int(p) for p in ports) == sorted(int(c.labels["berth.port"])
                                                   for c in containers)
    wait_until(lambda: serving(proxy, "web.localhost"), what="web.localhost served")


def test_a_container_killed_behind_the_back_is_restarted(platform, redis_client, proxy,
                                                         engine, docker_client):
    api = platform
    started = event(redis_client, create(api, restart="on-failure"), "service_started",
                    "service_failed")
    assert started.type == "service_started"
    [container] = engine.list({"berth.service": "web"})
    wait_until(lambda: serving(proxy, "web.localhost"), what="web.localhost served")
    docker_client.containers.get(container.id).kill()

    def restarts() -> list[Event]:
        return [e for e in service_events(redis_client, "service_started")
                if e.data.get("reason") == "restarted"]

    [restarted] = wait_until(restarts, timeout=30, what="the kill noticed and repaired")
    [unhealthy] = service_events(redis_client, "service_unhealthy")
    assert unhealthy.data["exit_code"] == 137 and unhealthy.data["restart"] is True
    assert unhealthy.trace_id == restarted.trace_id  # one reconciliation, one trace
    assert engine.inspect(container.id).running
    assert wait_until(lambda: serving(proxy, "web.localhost")) == container.id[:12]
