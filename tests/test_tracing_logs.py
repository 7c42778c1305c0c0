import io
import json
import logging
import threading

from app.logs import redact, setup_logging
from app.tracing import (
    current_trace_id,
    format_traceparent,
    parse_traceparent,
    trace_context,
    trace_id_from_headers,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_traceparent_parsing():
    assert parse_traceparent(f"00-{TRACE}-00f067aa0ba902b7-01") == (TRACE, "00f067aa0ba902b7")
    for bad in (None, "", "garbage", f"ff-{TRACE}-00f067aa0ba902b7-01",
                f"00-{'0' * 32}-00f067aa0ba902b7-01", f"00-{TRACE}-{'0' * 16}-01",
                f"00-{TRACE[:-1]}-00f067aa0ba902b7-01"):
        assert parse_traceparent(bad) is None
    assert parse_traceparent(format_traceparent(TRACE))[0] == TRACE


def test_trace_id_precedence():
    assert trace_id_from_headers(f"00-{TRACE}-00f067aa0ba902b7-01", "a" * 32) == TRACE
    assert trace_id_from_headers(None, TRACE.upper()) == TRACE
    generated = trace_id_from_headers("bad", "also bad\r\n")
    assert len(generated) == 32 and generated != TRACE


def test_trace_id_is_per_context_not_global():
    seen = {}

    def work(name, trace):
        with trace_context(trace):
            seen[name] = current_trace_id.get()

    threads = [threading.Thread(target=work, args=(n, f"{n:x}" * 32)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {n: f"{n:x}" * 32 for n in range(1, 5)}
    assert current_trace_id.get() is None


def test_json_lines_carry_the_trace_id_and_mask_secrets():
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    log = logging.getLogger("berth.test")
    with trace_context(TRACE):
        log.info("token %s used with Authorization: Bearer abc.def", "brt_" + "x" * 20)
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["trace_id"] == TRACE
    assert "brt_" not in line["msg"] and "abc.def" not in line["msg"]


def test_text_format_is_readable():
    out = io.StringIO()
    setup_logging("info", "text", stream=out)
    with trace_context(TRACE):
        logging.getLogger("berth.test").warning("hello")
    assert f"[{TRACE}] hello" in out.getvalue()


def test_exceptions_are_masked_too():
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    try:
        raise ValueError("bad key -----BEGIN EC PRIVATE KEY-----\nAAAA\n"
                         "-----END EC PRIVATE KEY-----")
    except ValueError:
        logging.getLogger("berth.test").exception("failed")
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert "AAAA" not in line["exc"] and "[redacted]" in line["exc"]


def test_redact_leaves_ordinary_text():
    assert redact("GET /index.html 200") == "GET /index.html 200"
