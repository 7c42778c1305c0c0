"""A fixed-rate (open-loop) HTTP/1.1 load generator that does not hide queueing.

wrk measures how long each request took once it was sent; when the server stalls, wrk sends
less, so the slow period is under-represented (coordinated omission). Here requests are
scheduled at a fixed rate from the start, whatever the server does, and each latency is
measured from the request's *scheduled* send time to the end of its response: a request that
had to wait for a free connection, or for the client, carries that wait.

One thread, non-blocking keep-alive connections and `select` (microsecond timeouts; epoll
and poll only take milliseconds). Responses must be framed by Content-Length or chunked
encoding. Requests go round robin over the connections, and one the server closed while it
was idle is replaced before use, as a browser would.

Debian's h2load (nghttp2-client 1.52) has `--rate`, but it sets how many *connections* open
per period, not a request rate, and measures from the actual send, so it cannot do this.

    from bench.fixed_rate import run
    result = run("127.0.0.1", 8080, "/", rate=2000, duration=8, headers={"Host": "a.test"})
    print(result.p99_ms, result.achieved_rate)

or from the shell:

    .venv/bin/python -m bench.fixed_rate --port 8080 --rate 2000 --duration 8 --host a.test
"""

from __future__ import annotations

import argparse
import math
import select
import socket
import time
from collections import deque
from dataclasses import dataclass, field

_HEAD_END = b"\r\n\r\n"
IDLE_CHECK_S = 0.5  # a connection idle this long is checked for a server-side close first


@dataclass
class Result:
    rate: float  # requested, per second
    duration: float
    sent: int = 0
    completed: int = 0
    errors: int = 0  # non-2xx/3xx answers, broken or closed connections
    dropped: int = 0  # scheduled but never answered before the drain deadline
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # sorted, from schedule
    service_ms: list[float] = field(default_factory=list, repr=False)  # sorted, from send
    max_queue: int = 0  # most requests waiting at once for a free connection

    @property
    def achieved_rate(self) -> float:
        return self.completed / self.duration if self.duration else 0.0

    def percentile(self, p: float, values: list[float] | None = None) -> float:
        values = self.latencies_ms if values is None else values
        if not values:
            return math.nan
        return values[min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))]

    @property
    def p50_ms(self) -> float:
        return self.percentile(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    @property
    def p999_ms(self) -> float:
        return self.percentile(99.9)

    @property
    def max_ms(self) -> float:
        return self.latencies_ms[-1] if self.latencies_ms else math.nan

    @property
    def overloaded(self) -> bool:
        """The target could not keep up: the queue grew or answers went missing."""
        return self.dropped > 0 or self.achieved_rate < 0.95 * self.rate

    def summary(self) -> dict:
        return {"rate": self.rate, "achieved_rate": round(self.achieved_rate, 1),
                "sent": self.sent, "completed": self.completed, "errors": self.errors,
                "dropped": self.dropped, "max_queue": self.max_queue,
                "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "p999_ms": self.p999_ms,
                "max_ms": self.max_ms, "service_p99_ms": self.percentile(99, self.service_ms)}


class _Conn:
    """One keep-alive connection and the response it is reading."""

    __slots__ = ("sock", "buf", "scheduled", "sent_at", "need", "chunked", "status", "close",
                 "idle_since")

    def __init__(self, address: tuple[str, int]):
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.scheduled = self.sent_at = 0.0
        self.need = -1  # body bytes still to come; -1 while the head is incomplete
        self.chunked = False
        self.status = 0
        self.close = False
        self.idle_since = time.perf_counter()

    def closed_while_idle(self, now: float) -> bool:
        """True when a connection idle for a while has been closed by the server (it is
        readable: EOF), so a request sent on it would fail for no fault of the server."""
        if now - self.idle_since < IDLE_CHECK_S:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def send(self, request: bytes, scheduled: float, now: float) -> None:
        if self.sock.send(request) != len(request):  # a small request fits an empty buffer
            raise OSError("short send")
        self.scheduled, self.sent_at = scheduled, now
        self.need, self.chunked = -1, False

    def feed(self) -> bool | None:
        """Read what arrived: True once the response is complete, None when the peer closed."""
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return False
        if not data:
            return None
        self.buf += data
        return self._complete()

    def _complete(self) -> bool:
        if self.need < 0:
            end = self.buf.find(_HEAD_END)
            if end < 0:
                return False
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[:end + 4]
            self.status = int(lines[0].split(" ", 2)[1])
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip().lower()
            self.close = fields.get("connection") == "close"
            self.chunked = fields.get("transfer-encoding") == "chunked"
            if self.chunked or self.status in (204, 304):
                self.need = 0
            elif "content-length" in fields:
                self.need = int(fields["content-length"])
            else:
                raise OSError("a response without Content-Length or chunked framing")
        if self.chunked:
            return self._chunks_complete()
        if len(self.buf) < self.need:
            return False
        del self.buf[:self.need]
        return True

    def _chunks_complete(self) -> bool:
        while True:  # drop whole chunks; the last (size 0) ends with an empty line
            line_end = self.buf.find(b"\r\n")
            if line_end < 0:
                return False
            size = int(bytes(self.buf[:line_end]).split(b";")[0], 16)
            if size == 0:
                if self.buf.find(_HEAD_END, line_end) < 0:  # trailers, then CRLF
                    return False
                self.buf.clear()
                return True
            if len(self.buf) < line_end + 2 + size + 2:
                return False
            del self.buf[:line_end + 2 + size + 2]


def run(host: str, port: int, path: str, *, rate: float, duration: float,
        connections: int = 32, headers: dict[str, str] | None = None,
        warmup: float = 1.0, drain: float = 5.0) -> Result:
    """Send GET `path` at `rate` per second for `warmup` + `duration` seconds over up to
    `connections` keep-alive connections; latencies of the warm-up are not recorded.
    Waits at most `drain` seconds for the last answers."""
    head = {"Host": f"{host}:{port}", **(headers or {})}
    request = (f"GET {path} HTTP/1.1\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode("latin-1")
    address = (host, port)
    # Round robin over every connection (the least recently used first), as wrk spreads its
    # requests: reusing the same few would load whichever server worker holds them.
    idle = deque(_Conn(address) for _ in range(connections))
    busy: dict[socket.socket, _Conn] = {}
    waiting: deque[float] = deque()  # scheduled times of requests without a connection yet
    result = Result(rate=rate, duration=duration)
    interval = 1.0 / rate
    total = int((warmup + duration) * rate)
    start = time.perf_counter() + 0.05
    measure_from = start + warmup
    latencies, service = result.latencies_ms, result.service_ms
    issued = 0
    deadline = start + warmup + duration + drain
    try:
        while issued < total or waiting or busy:
            now = time.perf_counter()
            if now > deadline:
                break
            while issued < total and start + issued * interval <= now:
                waiting.append(start + issued * interval)
                issued += 1
            while waiting and idle:
                conn = idle.popleft()
                if conn.closed_while_idle(now):
                    conn.sock.close()
                    conn = _Conn(address)
                conn.send(request, waiting.popleft(), time.perf_counter())
                busy[conn.sock] = conn
                result.sent += 1
            result.max_queue = max(result.max_queue, len(waiting))
            timeout = (start + issued * interval - time.perf_counter()) if issued < total \
                else deadline - time.perf_counter()
            if not busy:
                if timeout > 0:
                    time.sleep(timeout)
                continue
            readable, _, _ = select.select(list(busy), [], [], max(0.0, timeout))
            for sock in readable:
                conn = busy[sock]
                try:
                    done = conn.feed()
                except (OSError, ValueError):
                    done = None
                if done is False:
                    continue
                del busy[sock]
                finished = time.perf_counter()
                if done and conn.scheduled >= measure_from:
                    result.completed += 1
                    latencies.append((finished - conn.scheduled) * 1000)
                    service.append((finished - conn.sent_at) * 1000)
                result.errors += not done or not 200 <= conn.status < 400
                if not done or conn.close:  # replace a connection the server closed
                    conn.sock.close()
                    conn = _Conn(address)
                conn.idle_since = finished
                idle.append(conn)
    finally:
        result.dropped = len(waiting) + len(busy)
        for conn in (*idle, *busy.values()):
            conn.sock.close()
    latencies.sort()
    service.sort()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--host", help="Host header (default: address:port)")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    result = run(args.address, args.port, args.path, rate=args.rate, duration=args.duration,
                 connections=args.connections,
                 headers={"Host": args.host} if args.host else None)
    for key, value in result.summary().items():
        print(f"{key:<16} {value:.3f}" if isinstance(value, float) else f"{key:<16} {value}")


if __name__ == "__main__":
    main()
