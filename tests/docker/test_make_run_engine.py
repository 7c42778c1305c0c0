"""The first hour: `make run` as root on a machine where no container engine answers starts a
private dockerd (scripts/run.sh), and `berth services create` works against it end to end,
beside the test harness's own dockerd; SIGTERM to run.sh stops that dockerd too."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

import docker
import pytest

from app.bridge import delete_bridge
from harness.docker import DEFAULT_SOCKET, DockerDaemon, build_test_image, engine_answers
from harness.procs import find_binary, wait_until
from tests.docker.test_cli_services import HEALTH, LABEL, get
from tests.faults.supervised import SupervisedPlatform
from tests.support.cli import run_berth

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(") ", 1)[1][0] != "Z"


def bridges() -> set[str]:
    return set(os.listdir("/sys/class/net"))


@pytest.fixture
def workdir():
    # Short: containerd's sockets live under the private engine's exec root, and a unix socket
    # path has at most 107 bytes (run.sh refuses a longer state directory).
    path = Path(tempfile.mkdtemp(prefix="brr-", dir="/tmp"))
    yield path
    with open("/proc/mounts") as mounts:
        if not any(line.split()[1].startswith(str(path)) for line in mounts):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def test_engine(tmp_path):
    """The harness's private dockerd, running beside run.sh's."""
    if os.geteuid() != 0 or find_binary("dockerd") is None:
        pytest.skip("run.sh starts a private dockerd only as root, with dockerd installed")
    if engine_answers(os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET):
        pytest.skip("an engine answers already: run.sh would use it, not start its own")
    daemon = DockerDaemon(tmp_path, private=True).start()
    yield daemon
    daemon.stop()


def test_run_starts_a_private_engine_that_services_use_and_stops_it(
        redis_server, test_engine, workdir):
    platform = SupervisedPlatform(workdir / "platform", redis_server.url, {
        "DOCKER_HOST": None,  # as on a fresh machine: nothing set, nothing answers
        "BERTH_IMAGE_PULL": "never", "BERTH_SERVICE_DRAIN_MS": "300",
        "BERTH_SERVICE_START_TIMEOUT_S": "20", "BERTH_SERVICE_STOP_TIMEOUT_S": "5",
    })
    engine_dir = platform.state_dir / "engine"
    # run.sh names its bridge after the state directory.
    bridge = "brb" + hashlib.sha256(str(platform.state_dir).encode()).hexdigest()[:8]
    pid_file = engine_dir / "docker.pid"
    platform.start()
    dockerd = None
    try:
        out = platform.proc.output()
        assert "started a private one (dockerd pid " in out, out
        dockerd = int(pid_file.read_text())
        assert alive(dockerd)
        url = f"unix://{engine_dir}/docker.sock"
        assert f"engine     {url}, a private dockerd (pid {dockerd}," in out
        assert f"bridge {bridge} 10.214." in out and bridge in bridges()

        # Two engines side by side: their own sockets, bridges and pid files.
        assert url != test_engine.url and bridge != test_engine.bridge
        assert engine_answers(test_engine.url)

        with contextlib.closing(docker.DockerClient(base_url=url, timeout=60)) as client:
            image = build_test_image(client)
        token = (platform.state_dir / "admin-token").read_text().strip()
        api = f"http://127.0.0.1:{platform.web_port}"
        created = run_berth("services", "create", "hello", "--image", image, "--port", "8080",
                            "--label", LABEL, *HEALTH, "--wait", url=api, token=token,
                            timeout=120)
        assert created.returncode == 0, created.stderr + platform.logs()
        assert created.stdout.splitlines()[-1].startswith("service_started: hello healthy")
        wait_until(lambda: get(platform.http_port, "hello.localhost", "/index.html")[0] == 200,
                   timeout=15, what="hello.localhost served through the proxy")
        with contextlib.closing(docker.DockerClient(base_url=url, timeout=60)) as client:
            [container] = client.containers.list(filters={"label": "berth.service=hello"})
            # Published on loopback only.
            assert {b["HostIp"] for bs in container.ports.values() for b in bs} == {"127.0.0.1"}

        assert platform.stop() == 0, platform.proc.output()[-3000:]
        assert not alive(dockerd), "run.sh left its dockerd running"
        assert bridge not in bridges(), "run.sh left its bridge behind"
        assert engine_answers(test_engine.url), "stopping run.sh's engine stopped another"
    except BaseException:
        print(platform.logs())
        print((engine_dir / "dockerd.log").read_text(errors="replace")[-3000:]
              if (engine_dir / "dockerd.log").exists() else "")
        raise
    finally:
        platform.stop()
        # run.sh's engine is this test's child's child: stop it by its PID if run.sh could not.
        if dockerd is not None and alive(dockerd):
            os.kill(dockerd, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: not alive(dockerd), timeout=30, what="dockerd stopped")
        delete_bridge(bridge)
