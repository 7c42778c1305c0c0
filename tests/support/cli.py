"""Helpers for the command line's tests: the real API app served over HTTP in this process,
`berth` run in process or as a user runs it (a subprocess), and the one-line failure check."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from app.cli.main import main
from tests.support.procs import ROOT


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # an event stream the client left must not hold up shutdown


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer,
                         handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def berth(url: str, token: str, *argv: str) -> int:
    """`berth --url URL --token TOKEN ARGV...` in this process; returns the exit status."""
    return main(["--url", url, "--token", token, *argv], environ={})


def _env(url: str, token: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    return {**base, "BERTH_URL": url, "BERTH_TOKEN": token}


def run_berth(*args: str, url: str, token: str, timeout: float = 60
              ) -> subprocess.CompletedProcess:
    """`./berth ARGS` as a user runs it, with BERTH_URL and BERTH_TOKEN set."""
    return subprocess.run([str(ROOT / "berth"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=_env(url, token))


def spawn_berth(*args: str, url: str, token: str) -> subprocess.Popen:
    """`./berth ARGS` started as `run_berth` runs it, its output on text pipes; returns at
    once (the caller waits for it)."""
    return subprocess.Popen([str(ROOT / "berth"), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(url, token))


def assert_one_line_failure(result: subprocess.CompletedProcess, starts: str) -> str:
    """Exit 1, nothing on stdout, one `berth:` line on stderr starting with `starts`."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(starts), lines[0]
    assert result.stdout == ""
    return lines[0]


def interruptible() -> None:
    """preexec_fn for a `berth` the test will Ctrl-C: a shell that starts the test run in the
    background (`cmd &`) leaves SIGINT ignored, which every child would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
