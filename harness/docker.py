"""A Docker engine for tests and benchmarks, and the busybox HTTP image they run.

`DockerDaemon.start()` uses an engine that already answers (DOCKER_HOST, else
/var/run/docker.sock); otherwise, as root, it starts Debian's /usr/sbin/dockerd privately:
data, exec root, socket and pid file under a temporary directory, and its own Linux bridge
with a free 10.213.x.0/24 subnet, so it never shares docker0 with another daemon. It runs
without iptables, IP forwarding or masquerading: containers cannot reach beyond the machine,
and published ports work through docker-proxy (the userland proxy) on 127.0.0.1.

Everything the harness creates carries the label `berth-test=1` and is removed by it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import docker
import docker.errors
import requests

from app.bridge import create_bridge, delete_bridge
from harness.procs import Proc, find_binary, wait_until

TEST_LABEL = "berth-test"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
BUSYBOX = Path("/usr/bin/busybox")
IMAGE_REPOSITORY = "berth-test/busybox-httpd"

# Serves /www on $PORT (default 8080). /www/id.txt holds the container's hostname (its short
# id), so a client can tell which replica answered; /www/version.txt holds $VERSION. PID 1 is
# this shell: it forwards SIGTERM so `docker stop` ends the container at once instead of
# waiting out the grace period (a PID 1 without a handler ignores SIGTERM).
_START = """\
hostname > /www/id.txt
echo "${VERSION:-1}" > /www/version.txt
echo "serving on ${PORT:-8080} as $(hostname) version ${VERSION:-1}"
httpd -f -v -p "${PORT:-8080}" -h /www &
pid=$!
trap 'kill -TERM $pid; wait $pid; exit 0' TERM INT
wait $pid
"""

_DOCKERFILE = f"""\
FROM scratch
COPY busybox /bin/busybox
COPY start.sh /start.sh
COPY www /www
LABEL {TEST_LABEL}=1
ENTRYPOINT ["/bin/busybox"]
CMD ["sh", "/start.sh"]
"""

_INDEX = "<html><body>berth test service</body></html>\n"


def engine_answers(url: str, timeout: float = 3.0) -> bool:
    try:
        client = docker.DockerClient(base_url=url, version="auto", timeout=timeout)
    except (docker.errors.DockerException, requests.RequestException):
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.RequestException):
        return False
    finally:
        client.close()


class DockerDaemon:
    """An engine to run tests against: a reachable one, or a private dockerd (root only)."""

    def __init__(self, workdir: Path | None = None, *, private: bool = False,
                 live_restore: bool = False):
        self.workdir = workdir
        self.private = private  # always start our own dockerd, even when one answers
        self.live_restore = live_restore  # containers keep running while dockerd is down
        self.url = ""
        self.started = False  # True when this object started (and so must stop) dockerd
        self.proc: Proc | None = None
        self.bridge = ""
        self._root: Path | None = None

    def start(self) -> DockerDaemon:
        candidate = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        if not self.private and engine_answers(candidate):
            self.url = candidate
            return self
        if os.geteuid() != 0:
            raise PermissionError(
                f"no Docker engine answers at {candidate} and starting dockerd needs root")
        binary = find_binary("dockerd")
        if binary is None:
            raise FileNotFoundError("dockerd is not installed: run `make bootstrap` (docker.io)")
        driver = os.environ.get("BERTH_TEST_DOCKER_STORAGE_DRIVER", "")
        try:
            self._start_private(binary, driver)
        except RuntimeError:
            log = self.log_tail()
            self.stop()
            # overlay2 can be refused inside some sandboxes (overlay on overlay): vfs works
            # everywhere, only slower.
            if driver or "overlay" not in log.lower():
                raise
            self._start_private(binary, "vfs")
        return self

    def _start_private(self, binary: str, driver: str) -> None:
        # Short path: containerd puts unix sockets under the exec root (108-byte limit).
        self._root = Path(tempfile.mkdtemp(prefix="brtd-", dir="/tmp"))
        socket_path = self._root / "docker.sock"
        # Our own configuration, ignoring /etc/docker/daemon.json.
        (self._root / "daemon.json").write_text(
            json.dumps({"live-restore": True} if self.live_restore else {}))
        self.bridge = _create_bridge()
        args = [binary, "--host", f"unix://{socket_path}",
                "--data-root", str(self._root / "data"), "--exec-root", str(self._root / "exec"),
                "--pidfile", str(self._root / "docker.pid"),
                "--config-file", str(self._root / "daemon.json"),
                "--bridge", self.bridge, "--iptables=false", "--ip6tables=false",
                "--ip-forward=false", "--ip-masq=false", "--userland-proxy=true"]
        if driver:
            args += ["--storage-driver", driver]
        self.proc = Proc(args, (self.workdir or self._root) / "dockerd.log")
        self.url = f"unix://{socket_path}"
        self.started = True
        self._wait_answering()

    def _wait_answering(self) -> None:
        try:
            wait_until(lambda: not self.proc.alive() or engine_answers(self.url, 1.0),
                       timeout=60, interval=0.1, what="dockerd answering")
        except TimeoutError as ex:
            raise RuntimeError(f"dockerd did not answer within 60 s:\n{self.log_tail()}") from ex
        if not self.proc.alive():
            raise RuntimeError(f"dockerd exited during start-up:\n{self.log_tail()}")

    def stop_engine(self) -> None:
        """Stop the dockerd this object started (SIGTERM, by its PID), keeping its data,
        socket path and bridge for `start_engine`. With live_restore its containers run on."""
        if not self.started or self.proc is None:
            raise RuntimeError("only a dockerd started by this object may be stopped")
        self.proc.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.popen.wait(30)
        self.proc.stop(timeout=5)

    def start_engine(self) -> None:
        """Start the same dockerd again after `stop_engine`."""
        if not self.started or self.proc is None or self.proc.alive():
            raise RuntimeError("start_engine follows stop_engine")
        self.proc = Proc(self.proc.args, self.proc.log_path)
        self._wait_answering()

    def client(self, timeout: float = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, version="auto", timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        if self.proc is None:
            return ""
        return "\n".join(self.proc.output().splitlines()[-lines:])

    def stop(self) -> None:
        """Remove what the harness labelled; stop a dockerd we started (by its PID)."""
        if self.live_restore and self.proc is not None and not self.proc.alive():
            # Left stopped: its containers outlived it; bring it back to remove them.
            with contextlib.suppress(RuntimeError):
                self.start_engine()
        if self.url and (self.proc is None or self.proc.alive()):
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                remove_labelled(self.client(timeout=30))
        if self.proc is not None:
            # dockerd alone first: it stops its containerd and shims in order.
            self.proc.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.popen.wait(30)
            self.proc.stop(timeout=5)
            self.proc = None
        if self.bridge:
            delete_bridge(self.bridge)
            self.bridge = ""
        if self._root is not None:
            _unmount_under(self._root)
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


def remove_test_containers(client: docker.DockerClient) -> None:
    """Remove every container that carries the test label (the images stay)."""
    for container in client.containers.list(all=True, filters={"label": TEST_LABEL}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def remove_labelled(client: docker.DockerClient) -> None:
    """Remove every container and image that carries the test label."""
    remove_test_containers(client)
    for image in client.images.list(filters={"label": TEST_LABEL}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.images.remove(image.id, force=True)


def _create_bridge() -> str:
    name = "brt" + secrets.token_hex(4)  # at most 15 characters
    # 10.213.x for test engines; scripts/run.sh's private engine takes 10.214.x.
    create_bridge(name, "10.213")
    return name


def _unmount_under(root: Path) -> None:
    """Lazily unmount anything a crashed dockerd left mounted under `root`, so removing the
    directory cannot reach into a mounted filesystem."""
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(str(root))), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def build_test_image(client: docker.DockerClient) -> str:
    """Build (once per content) the busybox HTTP image FROM scratch; returns its tag."""
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} is missing: install busybox-static")
    files = {"Dockerfile": _DOCKERFILE.encode(), "start.sh": _START.encode(),
             "www/index.html": _INDEX.encode(), "busybox": BUSYBOX.read_bytes()}
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name])
    tag = f"{IMAGE_REPOSITORY}:{digest.hexdigest()[:12]}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name == "busybox" else 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                        forcerm=True)
    return tag
