"""berth as `make run` runs it: scripts/run.sh, which runs the Procfile under supervisord,
here with the test's own Redis (REDIS_URL), free ports for every listener and its own state
directory (BERTH_STATE_DIR), so nothing is shared with a developer's `make run`.

The PIDs come from supervisorctl, over the state directory's own socket: only processes this
platform started are ever signalled.
"""

from __future__ import annotations

import http.client
import ssl
import subprocess
from pathlib import Path

from harness.procs import ROOT, VENV_BIN, Proc, free_port, wait_for_port, wait_until

# Procfile name -> supervisord program (honcho's exporter numbers each copy: web-1, ...).
KINDS = ("web", "worker", "scheduler", "proxy", "consumer", "proxy-tls")
# The proxies are fcgi-programs (supervisord holds their sockets), which are in no group.
PROXIES = ("proxy", "proxy-tls")


def program(kind: str) -> str:
    """supervisorctl's name for the first copy of `kind`."""
    return f"{kind}-1" if kind in PROXIES else f"berth:{kind}-1"


def answered(port: int, tls: bool = False, timeout: float = 60) -> int:
    """The status of one GET to the proxy on `port` (any host: berth answers 404 for a host
    it has no route for), waited for up to `timeout` seconds."""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the proxy's self-signed default certificate
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Host": "ready.invalid"})
        return conn.getresponse().status
    finally:
        conn.close()


class SupervisedPlatform:
    def __init__(self, workdir: Path, redis_url: str,
                 env: dict[str, str | None] | None = None):
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.web_port, self.http_port, self.https_port = free_port(), free_port(), free_port()
        self.env = {
            "REDIS_URL": redis_url,
            "BERTH_STATE_DIR": str(self.state_dir),
            "BERTH_WEB_PORT": str(self.web_port),
            "BERTH_HTTP_PORT": str(self.http_port),
            "BERTH_HTTPS_PORT": str(self.https_port),
            # An engine address that does not answer: run.sh then starts no private dockerd
            # (it does only when DOCKER_HOST is unset); nothing here runs containers. A test
            # passing DOCKER_HOST=None leaves it unset.
            "DOCKER_HOST": f"unix://{workdir}/no-engine.sock",
            "BERTH_LOG_FORMAT": "text",
            "BERTH_PROCESSES": "",
            **(env or {}),
        }
        self.proc: Proc | None = None

    @property
    def conf(self) -> Path:
        return self.state_dir / "supervisor" / "berth.conf"

    def start(self) -> SupervisedPlatform:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Proc(["bash", str(ROOT / "scripts" / "run.sh")],
                         self.workdir / "run.log", env=self.env)
        try:
            for port in (self.web_port, self.http_port, self.https_port):
                wait_for_port(port, timeout=60, proc=self.proc.popen)
            wait_until(lambda: all(self.pid(kind) for kind in KINDS), timeout=30,
                       what="every program running")
            # supervisord listens for the proxies before gunicorn runs: an open port is not yet
            # a serving proxy. One request each, answered once gunicorn accepts it.
            answered(self.http_port)
            answered(self.https_port, tls=True)
        except BaseException:
            print(self.logs())
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        """SIGTERM to run.sh and supervisord (their session), as a terminal's Ctrl-C or a
        service manager stops them; returns run.sh's exit status."""
        if self.proc is None:
            return None
        return self.proc.stop(timeout=60)

    def pid(self, kind: str) -> int | None:
        """The PID supervisord runs for `kind` now (starting or running), else None."""
        done = subprocess.run([str(VENV_BIN / "supervisorctl"), "-c", str(self.conf), "pid",
                               program(kind)], capture_output=True, text=True, timeout=10)
        text = done.stdout.strip()
        return int(text) if text.isdigit() and int(text) > 0 else None

    def log(self, kind: str) -> str:
        path = self.state_dir / "logs" / f"{kind}-1.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, tail: int = 3000) -> str:
        parts = [f"----- run.sh -----\n{self.proc.output()[-tail:] if self.proc else ''}"]
        parts += [f"----- {kind} -----\n{self.log(kind)[-tail:]}" for kind in KINDS]
        return "\n".join(parts)
