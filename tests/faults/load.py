"""A steady request load through the real proxy, recording the outcome of every request.

`SteadyLoad` is a thread sending GETs to one host, one after another over a keep-alive
connection, until stopped. A request fails when it gets no complete answer or a status outside
`expect`. As a browser would, a request that meets a keep-alive connection the proxy closed
while it sat idle is sent again on a new connection (counted in `reconnects`, not a failure);
a request that fails on a fresh connection is never retried.

With `tls` (an ssl.SSLContext) it speaks HTTPS with SNI `host` and records the serial number
of the certificate each connection was shown (`serials`).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass

from cryptography import x509


@dataclass(frozen=True)
class Outcome:
    at: float  # time.monotonic() when the answer (or the error) came
    status: int  # 0 when no complete answer came
    error: str
    trace_id: str
    took: float = 0.0  # seconds from sending the request to its answer (or error)


class _Connection(http.client.HTTPConnection):
    """To 127.0.0.1:port; with `tls`, TLS with SNI `server_name` (not the address)."""

    def __init__(self, port: int, timeout: float, tls: ssl.SSLContext | None,
                 server_name: str):
        super().__init__("127.0.0.1", port, timeout=timeout)
        self._tls = tls
        self._server_name = server_name
        self.serial = ""

    def connect(self) -> None:
        super().connect()
        if self._tls is not None:
            self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)
            der = self.sock.getpeercert(binary_form=True)
            self.serial = format(x509.load_der_x509_certificate(der).serial_number, "x")


class SteadyLoad(threading.Thread):
    def __init__(self, port: int, host: str, path: str = "/echo", *,
                 expect: frozenset[int] = frozenset({200}), tls: ssl.SSLContext | None = None,
                 pause_s: float = 0.005, timeout: float = 10.0, per_connection: int = 0):
        super().__init__(name=f"load-{host}", daemon=True)
        self.port, self.host, self.path = port, host, path
        self.expect = expect
        self.tls = tls
        self.pause_s = pause_s  # between requests: a steady rate, not a saturating one
        self.timeout = timeout  # a bounded wait per request: a hang counts as a failure
        self.per_connection = per_connection  # >0: a new connection after that many requests
        self.outcomes: list[Outcome] = []
        self.reconnects = 0
        self.serials: Counter[str] = Counter()
        self._halt = threading.Event()

    # -- figures ---------------------------------------------------------------------------

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error or o.status not in self.expect]

    @property
    def failed(self) -> int:
        return len(self.failures)

    def served_since(self, since: float) -> int:
        return sum(1 for o in self.outcomes if o.at >= since and o.status in self.expect)

    def summary(self) -> str:
        codes = Counter(o.status for o in self.outcomes)
        return (f"{self.host}: sent={self.sent} failed={self.failed} "
                f"reconnects={self.reconnects} statuses={dict(sorted(codes.items()))}")

    # -- running ---------------------------------------------------------------------------

    def __enter__(self) -> SteadyLoad:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._halt.set()
        self.join(self.timeout + 5)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until `count` more requests have been answered as expected (a bounded wait)."""
        target = len([o for o in self.outcomes if o.status in self.expect]) + count
        deadline = time.monotonic() + timeout
        while sum(1 for o in self.outcomes if o.status in self.expect) < target:
            if time.monotonic() > deadline or not self.is_alive():
                raise TimeoutError(f"{self.summary()}: {count} more answers not seen")
            time.sleep(0.02)

    def run(self) -> None:
        conn: _Connection | None = None
        used = 0
        n = 0
        while not self._halt.is_set():
            if conn is None or (self.per_connection and used >= self.per_connection):
                if conn is not None:
                    conn.close()
                conn, used = self._connect(), 0
            n += 1
            outcome, reusable = self._one(conn, used, n)
            used += 1
            if outcome is None:  # a stale keep-alive connection: again on a new one
                self.reconnects += 1
                conn.close()
                conn, used = self._connect(), 0
                outcome, reusable = self._one(conn, used, n)
                used += 1
            self.outcomes.append(outcome)
            if not reusable:
                conn.close()
                conn = None
            if self.pause_s:
                time.sleep(self.pause_s)
        if conn is not None:
            conn.close()

    def _connect(self) -> _Connection:
        return _Connection(self.port, self.timeout, self.tls, self.host)

    def _one(self, conn: _Connection, used: int, n: int) -> tuple[Outcome | None, bool]:
        """One request; (None, False) when a reused connection turned out closed before
        any byte of an answer came."""
        sent = time.monotonic()
        try:
            conn.request("GET", f"{self.path}?n={n}", headers={"Host": self.host})
            if used == 0 and conn.serial:  # each TLS handshake: which certificate
                self.serials[conn.serial] += 1
            resp = conn.getresponse()
            resp.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as ex:
            if used > 0:
                return None, False
            return self._error(ex, sent), False
        except (OSError, http.client.HTTPException, ssl.SSLError) as ex:
            return self._error(ex, sent), False
        reusable = not resp.will_close
        now = time.monotonic()
        return Outcome(now, resp.status, "", resp.headers.get("X-Trace-Id", ""), now - sent), \
            reusable

    @staticmethod
    def _error(ex: Exception, sent: float) -> Outcome:
        name = "timeout" if isinstance(ex, socket.timeout | TimeoutError) else type(ex).__name__
        now = time.monotonic()
        return Outcome(now, 0, f"{name}: {ex}", "", now - sent)
