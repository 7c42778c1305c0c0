"""Request smuggling and framing against the real proxy, over raw sockets.

Every case sends one request whose framing is hostile or unusual, followed on the same
connection by a request for the guarded host. If the proxy parses that second request itself
it refuses it (401, admin token missing); it reaches the recording backend only when it was
smuggled inside the first request's body. So: the backend must never see a `/smuggled/` path,
and each case gets the exact answer listed for it.
"""

from __future__ import annotations

import json
import runpy
import sys
import types
from pathlib import Path

import pytest
from gunicorn.config import Config
from gunicorn.http import message

from tests.e2e.conftest import raw_exchange
from tests.hostile.conftest import GUARDED
from tests.hostile.wire import responses

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

BODY = b"5\r\nhello\r\n0\r\n\r\n"  # "hello", chunked


def smuggled(case: str) -> bytes:
    return (f"GET /smuggled/{case} HTTP/1.1\r\nHost: {GUARDED}\r\n"
            "Connection: close\r\n\r\n").encode()


def send(proxy, case: str, head_lines: bytes, body: bytes, *, version: bytes = b"HTTP/1.1",
         target: bytes | None = None) -> bytes:
    target = target or f"/echo/first/{case}".encode()
    return raw_exchange(proxy.port, b"POST " + target + b" " + version + b"\r\nHost: h.test\r\n"
                        + head_lines + b"\r\n" + body + smuggled(case))


def backend_paths(backend, case: str) -> list[str]:
    return [path for _method, path in backend.requests if path.endswith(f"/{case}")]


# (id, framing header lines, body): the proxy must refuse each with 400 and close, and the
# backend must see neither request.
REFUSED = [
    ("cl-te", b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", BODY),
    ("te-cl", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", BODY),
    ("cl-te-zero", b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", BODY),
    ("cl-cl-same", b"Content-Length: 15\r\nContent-Length: 15\r\n", BODY),
    ("cl-cl-differing", b"Content-Length: 15\r\nContent-Length: 0\r\n", BODY),
    ("cl-list", b"Content-Length: 15, 15\r\n", BODY),
    ("cl-plus", b"Content-Length: +15\r\n", BODY),
    ("cl-negative", b"Content-Length: -1\r\n", BODY),
    ("cl-hex", b"Content-Length: 0xf\r\n", BODY),
    ("cl-space-inside", b"Content-Length: 1 5\r\n", BODY),
    # Beyond 2**63 - 1 a backend's 64-bit parser could wrap it round to a small length.
    ("cl-overflow", b"Content-Length: 99999999999999999999999\r\n", BODY),
    ("cl-2-pow-64-plus-15", b"Content-Length: 18446744073709551631\r\n", BODY),
    ("te-chunked-identity", b"Transfer-Encoding: chunked, identity\r\n", BODY),
    ("te-chunked-chunked", b"Transfer-Encoding: chunked, chunked\r\n", BODY),
    ("te-two-lines", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", BODY),
    ("te-then-identity-line", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
     BODY),
    ("te-obs-fold", b"Transfer-Encoding:\r\n chunked\r\n", BODY),
    ("te-obs-fold-tab", b"Transfer-Encoding: identity\r\n\tchunked\r\n", BODY),
    ("te-space-before-colon", b"Transfer-Encoding : chunked\r\n", BODY),
    ("te-vertical-tab", b"Transfer-Encoding: \x0bchunked\r\n", BODY),
    ("te-nul", b"Transfer-Encoding: chunked\x00\r\n", BODY),
    ("te-bare-cr", b"Transfer-Encoding: chunked\rX: y\r\n", BODY),
    ("obs-fold-other-header", b"X-Folded: a\r\n b\r\n", BODY),
    ("header-name-space", b"X Bad: 1\r\n", BODY),
    ("header-no-colon", b"Transfer-Encoding chunked\r\n", BODY),
    ("bare-lf-header", b"X-A: 1\nTransfer-Encoding: chunked\r\n", BODY),
]


@pytest.mark.parametrize("case,lines,body", REFUSED, ids=[c[0] for c in REFUSED])
def test_ambiguous_or_malformed_framing_is_refused(proxy, site, backend, case, lines, body):
    answer = send(proxy, case, lines, body)
    got = responses(answer)
    assert [status for status, _h, _b in got] == [400], answer[:300]
    assert backend_paths(backend, case) == []


def test_an_unknown_transfer_coding_is_refused(proxy, site, backend):
    # RFC 9112 6.1: a transfer coding the server does not understand gets 501; "xchunked"
    # must not pass for chunked anywhere (the proxy's own check looks for "chunked" in it).
    for case, coding in (("te-xchunked", b"xchunked"), ("te-gzip-chunked", b"gzip, chunked"),
                         ("te-chunked-x", b"chunkedx")):
        answer = send(proxy, case, b"Transfer-Encoding: " + coding + b"\r\n", BODY)
        assert [s for s, _h, _b in responses(answer)] == [501], (case, answer[:300])
        assert backend_paths(backend, case) == []


# (id, framing lines): harmless spellings of chunked that every parser reads the same way.
CHUNKED_SPELLINGS = [
    ("te-plain", b"Transfer-Encoding: chunked\r\n"),
    ("te-uppercase", b"Transfer-Encoding: CHUNKED\r\n"),
    ("te-name-uppercase", b"TRANSFER-ENCODING: chunked\r\n"),
    ("te-trailing-space", b"Transfer-Encoding: chunked \r\n"),
    ("te-tabs", b"Transfer-Encoding:\tchunked\t\r\n"),
    ("te-identity-first", b"Transfer-Encoding: identity, chunked\r\n"),
]


@pytest.mark.parametrize("case,lines", CHUNKED_SPELLINGS, ids=[c[0] for c in CHUNKED_SPELLINGS])
def test_chunked_spellings_are_parsed_as_chunked(proxy, site, backend, case, lines):
    """Read unambiguously as chunked: the body is "hello", and what follows it is a request
    of its own, which the proxy itself answers (401), so it never reaches the backend."""
    got = responses(send(proxy, case, lines, BODY))
    assert [status for status, _h, _b in got] == [200, 401]
    echoed = json.loads(got[0][2])
    assert (echoed["path"], echoed["body_length"]) == (f"/echo/first/{case}", 5)
    assert backend_paths(backend, case) == [f"/echo/first/{case}"]


def test_a_plain_pipelined_request_is_seen_by_the_proxy(proxy, site, backend):
    """The control for the cases above: a Content-Length body followed by the guarded request
    is two requests, the second refused by the proxy."""
    got = responses(send(proxy, "control", b"Content-Length: 5\r\n", b"hello"))
    assert [status for status, _h, _b in got] == [200, 401]
    assert backend_paths(backend, "control") == ["/echo/first/control"]


def test_chunk_extensions_and_trailers_are_parsed_unambiguously(proxy, site, backend):
    for case, body, length in (
            ("ext", b"5;name=value\r\nhello\r\n0\r\n\r\n", 5),
            ("ext-quoted", b'5;name="a;b\\"c"\r\nhello\r\n0\r\n\r\n', 5),
            ("ext-many", b"2;a;b=1\r\nhe\r\n3;c\r\nllo\r\n0;d\r\n\r\n", 5),
            ("trailer", b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n", 5),
            ("uppercase-hex", b"A\r\nhellohello\r\n0\r\n\r\n", 10),
            ("leading-zeros", b"0005\r\nhello\r\n0\r\n\r\n", 5)):
        got = responses(send(proxy, case, b"Transfer-Encoding: chunked\r\n", body))
        assert [status for status, _h, _b in got] == [200, 401], case
        assert json.loads(got[0][2])["body_length"] == length, case
        assert backend_paths(backend, case) == [f"/echo/first/{case}"], case


# Chunked bodies the proxy cannot parse. The head has been forwarded by then (bodies stream),
# so the backend may see the first request line, but never its end nor what follows.
INVALID_CHUNKS = [
    ("chunk-negative", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-hex-overflow", b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
    ("chunk-huge", b"ffffffffffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ("chunk-non-hex", b"zz\r\nhello\r\n0\r\n\r\n"),
    ("chunk-0x-prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-empty-size", b"\r\nhello\r\n0\r\n\r\n"),
    ("chunk-space-in-size", b"5 \r\nhello\r\n0\r\n\r\n"),
    ("chunk-missing-crlf", b"5\r\nhelloX0\r\n\r\n"),
    ("chunk-too-long-data", b"3\r\nhello\r\n0\r\n\r\n"),
    ("chunk-bare-lf-size", b"5\nhello\r\n0\r\n\r\n"),
    ("chunk-bare-lf-data", b"5\r\nhello\n0\r\n\r\n"),
]


@pytest.mark.parametrize("case,body", INVALID_CHUNKS, ids=[c[0] for c in INVALID_CHUNKS])
def test_invalid_chunks_never_complete_a_request(proxy, site, backend, case, body):
    answer = send(proxy, case, b"Transfer-Encoding: chunked\r\n", body)
    [(status, headers, text)] = responses(answer)
    assert status == 400, answer[:300]
    assert json.loads(text)["description"] == "the request body's chunked framing is malformed"
    assert headers["Connection"] == "close"
    assert f"/smuggled/{case}" not in backend_paths(backend, case)


BAD_REQUEST_LINES = [
    ("lf-only-line", b"GET /echo/bad HTTP/1.1\nHost: h.test\r\n\r\n"),
    ("lf-only-everywhere", b"GET /echo/bad HTTP/1.1\nHost: h.test\n\n"),
    ("double-space", b"GET  /echo/bad HTTP/1.1\r\nHost: h.test\r\n\r\n"),
    ("trailing-word", b"GET /echo/bad HTTP/1.1 x\r\nHost: h.test\r\n\r\n"),
    ("no-version", b"GET /echo/bad\r\nHost: h.test\r\n\r\n"),
    ("version-2", b"GET /echo/bad HTTP/2.0\r\nHost: h.test\r\n\r\n"),
    ("version-junk", b"GET /echo/bad HTTP/1.x\r\nHost: h.test\r\n\r\n"),
    ("nul-in-target", b"GET /echo/b\x00ad HTTP/1.1\r\nHost: h.test\r\n\r\n"),
    ("space-in-target", b"GET /echo/b ad HTTP/1.1\r\nHost: h.test\r\n\r\n"),
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("chunked-http10", b"POST /echo/bad HTTP/1.0\r\nHost: h.test\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n" + BODY),
    ("no-host-http11", b"GET /echo/bad HTTP/1.1\r\nConnection: close\r\n\r\n"),
]


@pytest.mark.parametrize("case,data", BAD_REQUEST_LINES, ids=[c[0] for c in BAD_REQUEST_LINES])
def test_malformed_request_lines_are_400(proxy, site, backend, case, data):
    before = len(backend.requests)
    answer = raw_exchange(proxy.port, data)
    assert [status for status, _h, _b in responses(answer)] == [400], answer[:300]
    assert not [p for _m, p in backend.requests[before:] if "bad" in p]


def test_the_proxy_logged_no_traceback(proxy, site):
    """Runs after the cases above (same proxy process): none of them made it fail inside."""
    raw_exchange(proxy.port, b"POST /echo/last HTTP/1.1\r\nHost: h.test\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    output = proxy.output()
    assert "Traceback" not in output, output[-3000:]
    assert "Error handling request" not in output, output[-3000:]


@pytest.mark.parametrize("config", ["proxy/gunicorn_http.py", "proxy/gunicorn_tls.py"])
def test_the_proxy_keeps_gunicorns_python_parser_with_a_stand_in_c_parser_installed(
        monkeypatch, config):
    """gunicorn 27 parses with gunicorn_h1c whenever it is importable, and that parser accepts
    request lines the cases above refuse; the proxy's config must keep the Python parser."""
    stand_in = types.ModuleType("gunicorn_h1c")
    stand_in.LimitRequestLine = type("LimitRequestLine", (Exception,), {})
    monkeypatch.setitem(sys.modules, "gunicorn_h1c", stand_in)
    # gunicorn caches what it found on first use; start afresh and leave no stand-in behind.
    monkeypatch.setattr(message, "_fast_parser_available", None)
    monkeypatch.setattr(message, "_fast_parser_module", None)
    assert message._check_fast_parser(Config())  # gunicorn's default would take it
    cfg = Config()
    cfg.set("http_parser", runpy.run_path(str(ROOT / config))["http_parser"])
    assert not message._check_fast_parser(cfg)
