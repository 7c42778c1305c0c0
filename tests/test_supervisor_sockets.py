"""app/supervisor_sockets.py with the pinned supervisor, in a real supervisord: an
fcgi-program's listening socket stays open while its program is stopped or restarted, so a
connection made meanwhile waits in the backlog and is answered by the next program. Without
the holder, supervisord closes the socket with its last process and the port refuses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import xmlrpc.client

import pytest
from supervisor.xmlrpc import SupervisorTransport

from harness.procs import ROOT, VENV_BIN, Proc, free_port, wait_until

pytestmark = pytest.mark.e2e

# Answers "ok" on every connection accepted from the socket supervisord passes as fd 0.
SERVER = """\
import socket
listener = socket.socket(fileno=0)
while True:
    conn, _ = listener.accept()
    conn.sendall(b"ok\\n")
    conn.close()
"""

CONF = """\
[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}

[unix_http_server]
file={dir}/sock
chmod=0700

[supervisorctl]
serverurl=unix://{dir}/sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
{holder}
[fcgi-program:echo]
socket=tcp://127.0.0.1:{port}
command={python} {dir}/server.py
autorestart=true
startsecs=1
redirect_stderr=true
stdout_logfile={dir}/echo.log
"""

HOLDER = """
[rpcinterface:berth]
supervisor.rpcinterface_factory = app.supervisor_sockets:make_holder
"""


class Supervisor:
    def __init__(self, workdir, holder: bool):
        self.dir = workdir
        self.port = free_port()
        (workdir / "server.py").write_text(SERVER)
        (workdir / "supervisord.conf").write_text(CONF.format(
            dir=workdir, port=self.port, python=sys.executable, holder=HOLDER if holder else ""))
        self.proc = Proc([str(VENV_BIN / "supervisord"), "-c", str(workdir / "supervisord.conf")],
                         workdir / "out.log", env={"PYTHONPATH": str(ROOT)})
        wait_until(self.running, timeout=20, what="the echo program running")

    @property
    def rpc(self) -> xmlrpc.client.ServerProxy:
        """supervisord's XML-RPC interface (a new connection each time: a failed call leaves
        the transport unusable)."""
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{self.dir}/sock"))

    def ctl(self, *args: str) -> str:
        return subprocess.run([str(VENV_BIN / "supervisorctl"), "-c",
                               str(self.dir / "supervisord.conf"), *args],
                              capture_output=True, text=True, timeout=20).stdout

    def running(self) -> bool:
        try:
            return self.rpc.supervisor.getProcessInfo("echo")["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def pid(self) -> int:
        return self.rpc.supervisor.getProcessInfo("echo")["pid"]

    def stop(self) -> None:
        self.proc.stop(timeout=20)


def ask(sock: socket.socket) -> bytes:
    sock.settimeout(20)
    return sock.makefile("rb").readline()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


@pytest.fixture
def held(tmp_path):
    supervisor = Supervisor(tmp_path, holder=True)
    yield supervisor
    supervisor.stop()


def test_the_socket_outlives_its_program_and_waiting_connections_are_answered(held):
    assert held.rpc.berth.heldSockets() == [f"tcp://127.0.0.1:{held.port}"]
    with connect(held.port) as sock:
        assert ask(sock) == b"ok\n"

    # Stopped: nothing accepts, but the kernel completes the handshake into the backlog.
    assert "stopped" in held.ctl("stop", "echo")
    waiting = connect(held.port)
    held.ctl("start", "echo")
    with waiting:
        assert ask(waiting) == b"ok\n"

    # SIGKILLed: supervisord starts it again over the same socket.
    old = held.pid()
    os.kill(old, signal.SIGKILL)
    with connect(held.port) as sock:
        assert ask(sock) == b"ok\n"
    assert held.pid() != old

    # supervisord's stop releases it: the port closes with the last process.
    held.stop()
    with pytest.raises(ConnectionRefusedError):
        connect(held.port).close()


def test_without_the_holder_supervisord_closes_the_socket_with_its_program(tmp_path):
    """Why the holder exists (supervisor/socket_manager.py's reference count): should a
    supervisor upgrade keep the socket itself, this fails and the holder can go."""
    supervisor = Supervisor(tmp_path, holder=False)
    try:
        assert "stopped" in supervisor.ctl("stop", "echo")
        with pytest.raises(ConnectionRefusedError):
            connect(supervisor.port).close()
    finally:
        supervisor.stop()
