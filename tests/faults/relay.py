"""A TCP relay in front of a real server (Redis here) that can stop a client mid-command.

Every byte is relayed unchanged, both ways, until `hold(*markers)` is armed: the first chunk a
client sends that contains every marker (a Redis command name such as b"XTRIM", a key) is then
kept back, and `arrived` is set. The process that sent it is stuck waiting for the answer: the
point where a test SIGKILLs it. `release()` then delivers the held bytes to the server (as
when a process dies right after its command left), `discard()` drops them (as when it dies
right before). redis-py writes a command or a pipeline in one send, so a marker is not split.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from harness.procs import free_port


class HoldingRelay:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.arrived = threading.Event()
        self._markers: tuple[bytes, ...] = ()
        self._decided = threading.Event()
        self._deliver = False
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(128)
        self._closed = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> HoldingRelay:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._closed = True
        self.discard()
        self._sock.close()

    def hold(self, *markers: bytes) -> threading.Event:
        self.arrived.clear()
        self._decided.clear()
        self._markers = markers
        return self.arrived

    def release(self) -> None:
        self._decide(deliver=True)

    def discard(self) -> None:
        self._decide(deliver=False)

    def _decide(self, deliver: bool) -> None:
        self._deliver = deliver
        self._markers = ()
        self._decided.set()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        upstream = threading.Thread(target=self._pump, args=(client, server, True), daemon=True)
        upstream.start()
        self._pump(server, client, False)
        upstream.join()
        client.close()
        server.close()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if from_client and self._held(chunk):
                    self.arrived.set()
                    self._decided.wait()
                    if not self._deliver:
                        raise ConnectionAbortedError("held bytes discarded")
                sink.sendall(chunk)
            # End of stream: pass the half-close on, so the server still answers (and so
            # executes) what it was sent before the client went away.
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _held(self, chunk: bytes) -> bool:
        """True for the first chunk carrying the armed markers (it disarms them)."""
        with self._lock:
            if self._markers and all(marker in chunk for marker in self._markers):
                self._markers = ()
                return True
            return False
