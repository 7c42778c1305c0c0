"""Bodies are streamed both ways, never buffered: 1 GiB each way with the workers' resident
memory staying flat, chunked uploads, and Server-Sent Events arriving one by one."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import zlib

import pytest

from app.tracing import new_trace_id
from tests.e2e.backends import pattern_bytes
from tests.e2e.conftest import request_events

pytestmark = pytest.mark.e2e

GIB = 1 << 30
# What a worker may grow by while relaying a GiB: its buffers are 64 KiB, so anything near the
# body size would mean buffering. (Measured growth is a few MiB.)
RSS_BOUND_KIB = 48 * 1024


def growth_kib(proxy, before: dict[int, int]) -> int:
    peaks = proxy.peak_rss_kib()
    return max(peaks[pid] - rss for pid, rss in before.items())


def expected_crc(count: int) -> int:
    crc = 0
    for piece in pattern_bytes(count):
        crc = zlib.crc32(piece, crc)
    return crc


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_one_gib_download_streams_with_flat_memory(proxy, routes, backend, redis_client,
                                                   chunked):
    routes.add("download.test", [backend.url])
    size = GIB
    before = proxy.rss_kib()
    trace = new_trace_id()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.request("GET", f"/bytes/{size}?chunked={int(chunked)}",
                 headers={"Host": "download.test", "X-Trace-Id": trace})
    resp = conn.getresponse()
    assert resp.status == 200
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    total, crc = 0, 0
    while count := resp.readinto(buffer):
        crc = zlib.crc32(view[:count], crc)
        total += count
    conn.close()
    assert total == size
    assert crc == expected_crc(size)
    grew = growth_kib(proxy, before)
    print(f"download {size >> 20} MiB chunked={chunked}: worker RSS before "
          f"{sorted(before.values())} KiB, peak growth {grew} KiB")
    assert grew < RSS_BOUND_KIB
    [event] = request_events(redis_client, trace)
    assert event.data["bytes_out"] == size


def _send_upload(port: int, host: str, size: int, chunked: bool, trace: str) -> dict:
    head = [f"POST /upload HTTP/1.1\r\nHost: {host}\r\nX-Trace-Id: {trace}\r\n"]
    head.append("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("".join(head) + "\r\n").encode())
        for piece in pattern_bytes(size):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 200
        return json.loads(resp.read())


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_one_gib_upload_streams_with_flat_memory(proxy, routes, backend, redis_client, chunked):
    routes.add("upload.test", [backend.url])
    size = GIB
    before = proxy.rss_kib()
    trace = new_trace_id()
    answer = _send_upload(proxy.port, "upload.test", size, chunked, trace)
    assert answer["body_length"] == size
    digest = hashlib.sha256()
    for piece in pattern_bytes(size):
        digest.update(piece)
    assert answer["body_sha256"] == digest.hexdigest()
    if chunked:
        assert ("Transfer-Encoding", "chunked") in [tuple(h) for h in answer["headers"]]
    grew = growth_kib(proxy, before)
    print(f"upload {size >> 20} MiB chunked={chunked}: worker RSS before "
          f"{sorted(before.values())} KiB, peak growth {grew} KiB")
    assert grew < RSS_BOUND_KIB
    [event] = request_events(redis_client, trace)
    assert event.data["bytes_in"] == size


def test_server_sent_events_arrive_one_by_one(proxy, routes, backend):
    routes.add("sse.test", [backend.url])
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /sse?n=4&gap=0.4 HTTP/1.1\r\nHost: sse.test\r\n"
                     b"Accept: text/event-stream\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        received = []
        # Each read returns as soon as one event is there: had the proxy buffered the stream,
        # the first read would only return once all four were sent (the backend pauses
        # between events), and it would carry them all.
        for i in range(4):
            data = resp.read1(65536)
            assert data.startswith(f"id: {i}\n".encode()), data
            assert data.count(b"\n\n") == 1
            received.append(data)
        assert resp.read() == b""
