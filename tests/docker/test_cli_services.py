"""`berth services ...` against a real dockerd: first in process against the real API app
(with a real engine, no worker: what the options send and how answers print), then as a user
runs `./berth` against the real web process, the real worker and the real proxy."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from app import redis as keys
from app.stores.services import ServiceStore
from app.stores.tokens import TokenStore
from harness.docker import TEST_LABEL, remove_test_containers
from harness.procs import wait_until
from harness.proxy import ProxyProcess
from harness.worker import start_worker
from tests.support.api import Api, start_web
from tests.support.cli import ROOT, berth, interruptible, run_berth, serve, spawn_berth

pytestmark = [pytest.mark.docker]

LABEL = f"{TEST_LABEL}=1"  # so the fixtures remove whatever a test leaves behind
HEALTH = ["--health-path", "/id.txt", "--health-interval", "1", "--health-timeout", "1"]


@pytest.fixture
def served(settings, redis_client, engine, docker_client):
    api = Api(settings, redis_client, engine=engine)
    with serve(api.app) as url:
        yield url, api
    api.close()


def test_create_sends_every_option_and_prints_the_answer(served, redis_client, test_image,
                                                         capsys):
    url, api = served
    assert berth(url, api.admin, "services", "create", "web", "--image", test_image,
                 "--port", "8080", "--replicas", "2", "-e", "A=1", "--env", "B=x=y",
                 "--label", LABEL, "--command", "sh -c 'echo hi; sleep 1'",
                 "--memory-mb", "64", "--cpus", "0.5", "--restart-policy", "always",
                 "--hostname", "shop.localhost", "--bind", "127.0.0.1", *HEALTH) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"create: accepted for web ({test_image}, 2 x port 8080, "
                      "http://shop.localhost/)")
    assert out[1].startswith("trace: ") and "berth events tail --trace" in out[1]
    svc = ServiceStore(redis_client).get("web")
    assert (svc.image, svc.port, svc.replicas, svc.hostname) == (test_image, 8080, 2,
                                                                  "shop.localhost")
    assert svc.env == {"A": "1", "B": "x=y"} and svc.labels == {TEST_LABEL: "1"}
    assert svc.command == ("sh", "-c", "echo hi; sleep 1")
    assert (svc.memory_mb, svc.cpus, svc.restart) == (64, 0.5, "always")
    assert svc.health == {"path": "/id.txt", "interval_s": 1, "timeout_s": 1}

    assert berth(url, api.admin, "services", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "IMAGE", "REPLICAS", "HOSTNAME", "REVISION",
                                "ERROR"]
    assert lines[1].split() == ["web", "pending", test_image, "2", "shop.localhost", "1"]

    assert berth(url, api.admin, "services", "show", "web") == 0
    shown = capsys.readouterr().out.splitlines()
    assert f"{'env':14}  A, B (values: --json)" in shown  # values may be secrets
    assert f"{'command':14}  sh -c 'echo hi; sleep 1'" in shown
    assert f"{'health check':14}  GET /id.txt every 1s, timeout 1s" in shown
    assert shown[-1] == "containers: none"
    assert berth(url, api.admin, "services", "show", "web", "--json") == 0
    assert json.loads(capsys.readouterr().out)["env"] == {"A": "1", "B": "x=y"}


def test_commands_refused_by_the_api_are_one_line(served, test_image, capsys):
    url, api = served
    assert berth(url, api.admin, "services", "create", "web", "--image", "Not An Image",
                 "--port", "8080") == 1
    assert capsys.readouterr().err.startswith("berth: Invalid input: image must be an image "
                                              "reference")
    assert berth(url, api.admin, "services", "create", "web", "--image", test_image,
                 "--port", "8080", "--label", LABEL) == 0
    capsys.readouterr()
    assert berth(url, api.admin, "services", "scale", "web", "3") == 1
    assert capsys.readouterr().err == (
        "berth: Conflict: service 'web' is pending; it can be scaled once it runs (start it "
        "first)\n")
    assert berth(url, api.admin, "services", "redeploy", "web", "--env", "A=2") == 1
    assert "it can be redeployed once it runs" in capsys.readouterr().err
    assert berth(url, api.admin, "services", "logs", "nope") == 1
    assert capsys.readouterr().err.startswith("berth: Not found: ")
    assert berth(url, api.admin, "services", "rm", "web", "--json") == 0
    assert json.loads(capsys.readouterr().out)["service"]["status"] == "deleting"


def test_without_an_engine_commands_fail_in_one_line(api, capsys):
    """The API without a container engine: commands answer 503; berth says so in one line."""
    with serve(api.app) as url:
        assert berth(url, api.admin, "services", "create", "web", "--image", "busybox:1",
                     "--port", "8080") == 1
    err = capsys.readouterr().err
    assert err.startswith("berth: Service unavailable: ") and err.count("\n") == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["create", "web", "--port", "80"], "the following arguments are required: --image"),
    (["create", "web", "--image", "x", "--port", "80", "--env", "A"], "'A' is not NAME=VALUE"),
    (["scale", "web", "0"], "'0' is not a positive integer"),
    (["logs", "web", "--tail", "ten"], "'ten' is not a number of lines or 'all'"),
    (["create", "web", "--image", "x", "--port", "80", "--wait-timeout", "-1"],
     "'-1' is not a positive number of seconds"),
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        berth("http://127.0.0.1:9", "brt_unused", "services", *argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


# -- as a user runs it: web process, worker, proxy ----------------------------------------------


@pytest.fixture(scope="module")
def proxy(redis_server, tmp_path_factory):
    process = ProxyProcess(tmp_path_factory.mktemp("proxy"), redis_server.url,
                           {"BERTH_PROXY_CONNECT_TIMEOUT_S": "1"})
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def web(redis_server, docker_daemon, tmp_path_factory):
    proc, url = start_web(redis_server.url, tmp_path_factory.mktemp("web"),
                          {"DOCKER_HOST": docker_daemon.url, "BERTH_IMAGE_PULL": "never"})
    yield proc, url
    proc.stop()


@pytest.fixture
def platform(request, redis_server, redis_client, docker_daemon, docker_client, web, proxy,
             tmp_path):
    """The web process, a fresh worker and the proxy; yields (API URL, admin token)."""
    worker = start_worker(worker_env(redis_server, docker_daemon), tmp_path / "worker.log",
                          threads=4)
    try:
        wait_until(lambda: worker.alive() and any(
            m.startswith("worker/") for m in redis_client.hkeys(keys.HEARTBEATS)),
            timeout=30, what="the worker beating")
        _token, admin = TokenStore(redis_client).issue(name="ops", scope="admin", owner="ops")
        proxies_reporting(redis_client, proxy)
        yield web[1], admin
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(f"----- worker -----\n{worker.output()}\n----- web -----\n"
                  f"{web[0].output()[-5000:]}\n----- proxy -----\n{proxy.output()[-3000:]}")
        worker.stop()
        remove_test_containers(docker_client)


def worker_env(redis_server, docker_daemon) -> dict[str, str]:
    return {"REDIS_URL": redis_server.url, "DOCKER_HOST": docker_daemon.url,
            "BERTH_IMAGE_PULL": "never", "BERTH_SERVICE_DRAIN_MS": "300",
            "BERTH_SERVICE_START_TIMEOUT_S": "20", "BERTH_SERVICE_STOP_TIMEOUT_S": "5",
            "BERTH_LOG_FORMAT": "text"}


def proxies_reporting(redis_client, proxy: ProxyProcess) -> None:
    """Until both proxy workers report what they serve again: the test's Redis was just
    emptied, and `--wait` waits for the proxy workers it knows of."""
    def reporting() -> bool:
        beating = {m for m in redis_client.hkeys(keys.HEARTBEATS) if m.startswith("proxy/")}
        return len(beating & set(redis_client.hkeys(keys.PROXY_SERVED))) >= proxy.workers
    # A worker beats every 5 s; on a machine that is still starting its first proxy, longer.
    wait_until(reporting, timeout=30, what="both proxy workers reporting")


def get(port: int, host: str, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def following(url: str, token: str, *args: str):
    """`./berth ARGS` running, its stdout lines arriving on the yielded queue; Ctrl-C at the
    end, whose exit status and stderr land in the dict yielded alongside."""
    proc = subprocess.Popen([str(ROOT / "berth"), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=interruptible,
                            env={**{k: v for k, v in os.environ.items()
                                    if not k.startswith("BERTH_")},
                                 "BERTH_URL": url, "BERTH_TOKEN": token})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout],
                     daemon=True).start()
    result: dict = {}
    try:
        yield lines, result
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            result["status"] = proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        result["stderr"] = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()


def line_with(lines: queue.Queue, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            line = lines.get(timeout=0.2)
            if text in line:
                return line
    raise TimeoutError(f"no line with {text!r} within {timeout}s")


@pytest.mark.e2e
def test_services_cli_create_wait_logs_scale_rm(platform, proxy, test_image, docker_client):
    url, admin = platform

    def run(*args, timeout=120):
        return run_berth("services", *args, url=url, token=admin, timeout=timeout)

    created = run("create", "web", "--image", test_image, "--port", "8080", "--label", LABEL,
                  *HEALTH, "--wait")
    assert created.returncode == 0, created.stderr
    out = created.stdout.splitlines()
    assert out[0].startswith("service_created: web containers created: berth-web.")
    assert out[-1].startswith("service_started: web healthy and routed at "
                              "http://web.localhost/: berth-web.")
    # "Routed" means served: right away, every request on a new connection (so on either
    # proxy worker) reaches the container.
    statuses = [get(proxy.port, "web.localhost", "/id.txt")[0] for _ in range(40)]
    print(f"services create --wait: {statuses.count(404)} of {len(statuses)} requests right "
          "after it 404")
    assert set(statuses) == {200}

    logs = run("logs", "web", "--tail", "all")  # the requests above logged 40 lines
    assert logs.returncode == 0, logs.stderr
    assert "serving on 8080 as " in logs.stdout

    # --follow prints lines as the container writes them: httpd logs `response:404` for a
    # request made after the stream opened (--tail 0; its health checks only get 200s).
    with following(url, admin, "services", "logs", "web", "--follow", "--tail", "0") as (
            lines, result):
        line_with(lines, "response:200")  # a health check: the stream is open
        assert get(proxy.port, "web.localhost", "/missing")[0] == 404
        line_with(lines, "response:404")
    assert (result["status"], result["stderr"]) == (130, "")

    scaled = run("scale", "web", "2", "--wait")
    assert scaled.returncode == 0, scaled.stderr
    assert scaled.stdout.splitlines()[-1] == "service_scaled: web 2 replicas (were 1)"
    shown = run("show", "web")
    rows = [line.split() for line in shown.stdout.splitlines() if line.startswith("berth-web.")]
    assert len(rows) == 2 and all(r[1] == "running" and "healthy" in r for r in rows), \
        shown.stdout
    listed = run("list").stdout.splitlines()
    assert listed[1].split()[:4] == ["web", "running", test_image, "2"]

    removed = run("rm", "web", "--wait")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines()[-1] == "service_deleted: web"
    assert run("list").stdout == "no services\n"
    assert docker_client.containers.list(all=True, filters={"label": "berth.service=web"}) == []


@pytest.mark.e2e
def test_services_cli_create_wait_reports_a_failure_in_one_line(platform):
    url, admin = platform
    failed = run_berth("services", "create", "bad", "--image", "berth-test/missing:1",
                       "--port", "8080", "--label", LABEL, "--wait", url=url, token=admin,
                       timeout=120)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    [line] = failed.stderr.splitlines()
    assert line.startswith("berth: Service not started: ") and "(trace " in line
    assert failed.stdout.splitlines()[-1].startswith("service_failed: bad ")
    listed = run_berth("services", "list", url=url, token=admin).stdout.splitlines()
    assert listed[1].split()[:2] == ["bad", "failed"]


@pytest.mark.e2e
def test_services_cli_stops_waiting_on_ctrl_c_or_its_timeout_and_says_so(platform, test_image):
    """A service whose health check never passes: the worker keeps trying (up to its start
    timeout) while the command line stops waiting, on Ctrl-C or after --wait-timeout."""
    url, admin = platform
    unhealthy = ["--image", test_image, "--port", "8080", "--label", LABEL,
                 "--health-path", "/never", "--health-interval", "1", "--wait"]
    with following(url, admin, "services", "create", "slow", *unhealthy) as (lines, result):
        line_with(lines, "service_created: slow")
    assert result["status"] == 130
    [note] = result["stderr"].splitlines()
    assert note.startswith("berth: stopped waiting; the command goes on (berth events tail "
                           "--trace ")

    timed_out = run_berth("services", "create", "slower", *unhealthy, "--wait-timeout", "2",
                          url=url, token=admin)
    assert timed_out.returncode == 1
    assert timed_out.stderr == "berth: Timed out: no terminal event within 2s\n"


@pytest.mark.e2e
def test_services_cli_wait_says_when_no_worker_runs_the_command(
        web, proxy, redis_server, redis_client, docker_daemon, docker_client, test_image,
        tmp_path):
    """No worker runs: `--wait` says so once; a worker started then runs the command (the
    API says a worker holds it meanwhile, and `--wait` that a worker runs it). SIGKILLed with
    it, `--wait` says again that it waits; the next worker gets it redelivered and `--wait`
    finishes as usual."""
    url = web[1]
    _token, admin = TokenStore(redis_client).issue(name="ops", scope="admin", owner="ops")
    proxies_reporting(redis_client, proxy)
    # Serving starts 5 s late: a silence in the events while a worker holds the command.
    waiting = spawn_berth("services", "create", "web", "--image", test_image, "--port", "8080",
                          "--label", LABEL, *HEALTH, "--command",
                          "sh -c 'sleep 5; exec sh /start.sh'", "--wait", url=url, token=admin)
    notes: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [notes.put(line) for line in waiting.stderr],
                              daemon=True)
    reader.start()
    worker = None
    try:
        note = line_with(notes, "waiting for a worker", timeout=20)
        assert note.startswith("berth: waiting for a worker: no worker runs this command yet")
        worker = start_worker(worker_env(redis_server, docker_daemon), tmp_path / "worker.log",
                              threads=4)
        created = wait_until(lambda: next(
            (fields for _id, fields in redis_client.xrange(keys.stream("service"))
             if fields["type"] == "service_created"), None), timeout=30,
            what="the worker creating the containers")
        job = f"/api/v1/jobs/{created['trace_id']}"

        def running() -> bool:
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
            try:
                conn.request("GET", job, headers={"Authorization": f"Bearer {admin}"})
                return json.loads(conn.getresponse().read())["running"]
            finally:
                conn.close()

        assert running()  # inside the 5 s health wait
        assert line_with(notes, "berth: ") == "berth: a worker runs the command now\n"
        worker.kill()  # SIGKILL: the message stays unacknowledged until redelivery
        assert line_with(notes, "berth: ", timeout=20).startswith(
            "berth: waiting for a worker: ")
        assert not running()
        worker = start_worker(worker_env(redis_server, docker_daemon),
                              tmp_path / "worker-2.log", threads=4)
        assert waiting.wait(90) == 0, worker.output()
        out = waiting.stdout.read()
        assert out.splitlines()[-1].startswith("service_started: web healthy and routed")
        reader.join(5)
        rest = [notes.get() for _ in range(notes.qsize())]
        assert set(rest) <= {"berth: a worker runs the command now\n"}, rest
        wait_until(lambda: not running(), what="the held marker gone once done")
        statuses = {get(proxy.port, "web.localhost", "/id.txt")[0] for _ in range(20)}
        assert statuses == {200}
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait(5)
        if worker is not None:
            worker.stop()
        remove_test_containers(docker_client)
