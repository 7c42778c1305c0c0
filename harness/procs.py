"""Real processes for tests and benchmarks: free ports, readiness waits, stop by PID.

Shared by `tests` and `bench` (neither may import the other), so it lives in its own package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met after {timeout}s")


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin", "/sbin") if (p := Path(d) / name).exists()),
        None)


class Proc:
    """A child process started by a test or a benchmark, logging to a file, stopped by its PID."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None,
                 cwd: Path = ROOT, stdin: int | None = None):
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        # A variable given as None is left out (unset), whatever this process has.
        full_env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
                    **(env or {})}
        full_env = {key: value for key, value in full_env.items() if value is not None}
        self.popen = subprocess.Popen(args, stdin=stdin, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                      start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; also ends the children of its session."""
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        self.popen.wait(5)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)  # its own session: pgid == our child's pid

    def output(self) -> str:
        if not self._log.closed:  # also readable after stop()
            self._log.flush()
        return self.log_path.read_text(errors="replace")


class RedisServer:
    """A real redis-server on a free loopback port, with its data in `workdir`."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = find_binary("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make bootstrap`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Proc([binary, "--bind", "127.0.0.1", "--port", str(self.port),
                          "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                          "--protected-mode", "yes"],
                         self.workdir / f"redis-{self.port}.log")
        wait_for_port(self.port, proc=self.proc.popen)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc = None
