"""The real berth proxy (gunicorn, gevent workers) on a free loopback port, for tests and
benchmarks, with access to its worker processes' memory figures."""

from __future__ import annotations

import socket
from pathlib import Path

from harness.procs import VENV_BIN, Proc, free_port, wait_for_port, wait_until


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class ProxyProcess:
    """`gunicorn -c proxy/gunicorn_http.py proxy.wsgi:app` with `env` on top of the
    environment; BERTH_HTTP_PORT is chosen here. With `inherit_socket`, the listening socket
    is made here and passed as fd 0 (BERTH_PROXY_LISTEN_FD=0), as supervisord passes it under
    `make run`: one socket shared by the workers instead of one per worker."""

    def __init__(self, workdir: Path, redis_url: str, env: dict[str, str] | None = None,
                 workers: int = 2, config: str = "proxy/gunicorn_http.py",
                 module: str = "proxy.wsgi:app", port_variable: str = "BERTH_HTTP_PORT",
                 inherit_socket: bool = False):
        self.workdir = workdir
        self.port = free_port()
        self.listener: socket.socket | None = None
        if inherit_socket:
            self.listener = socket.socket()
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", self.port))
            self.listener.listen(2048)  # supervisord's socket_backlog in make run
            env = {**(env or {}), "BERTH_PROXY_LISTEN_FD": "0"}
        self.env = {"REDIS_URL": redis_url, "BERTH_PROXY_WORKERS": str(workers),
                    "BERTH_LOG_FORMAT": "text", "BERTH_PUBLISHER_FLUSH_MS": "20",
                    **(env or {}), port_variable: str(self.port)}
        self.args = [str(VENV_BIN / "gunicorn"), "-c", config, module]
        self.workers = workers
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProxyProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Proc(self.args, self.workdir / f"proxy-{self.port}.log", env=self.env,
                         stdin=self.listener.fileno() if self.listener else None)
        try:
            wait_for_port(self.port, proc=self.proc.popen)
            wait_until(lambda: len(self.worker_pids()) == self.workers, what="proxy workers")
        except BaseException:
            print(self.output())
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def output(self) -> str:
        return self.proc.output() if self.proc else ""

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the children of the arbiter."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except FileNotFoundError:
            return []

    def rss_kib(self) -> dict[int, int]:
        """Resident memory of each worker now (KiB)."""
        return {pid: _status_kib(pid, "VmRSS") for pid in self.worker_pids()}

    def peak_rss_kib(self) -> dict[int, int]:
        """The high-water mark of each worker's resident memory (KiB)."""
        return {pid: _status_kib(pid, "VmHWM") for pid in self.worker_pids()}
