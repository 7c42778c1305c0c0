"""The proxy's request events: their hand-written JSON must read back as json.dumps' would."""

from __future__ import annotations

import json

import pytest

from app.events import Event, Publisher
from app.redis import stream
from proxy.events import Journal, RequestEvent, request_json
from proxy.headers import TrustedProxies

HOSTILE = ['', 'plain', 'quote " and \\ backslash', 'line\nbreak\ttab\r\x00\x1f\x7f',
           'unicode é ☃ 😀 \u2028', '</script>', '{"not": "json"}']


def request_data(**changes) -> dict:
    data = {"host": "a.test", "route_id": "r1", "method": "GET", "path": "/", "status": 200,
            "duration_ms": 0.123, "bytes_in": 0, "bytes_out": 13, "upstream": "http://b:1",
            "client_ip": "127.0.0.1", "error": ""}
    return {**data, **changes}


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("field", ["host", "method", "path", "error", "client_ip"])
def test_hostile_strings_read_back_unchanged(field, text):
    data = request_data(**{field: text})
    assert json.loads(request_json(data)) == data


@pytest.mark.parametrize("numbers", [{}, {"status": 502, "duration_ms": 12345.678,
                                          "bytes_in": 2**40, "bytes_out": 0},
                                     {"duration_ms": 0.0}, {"duration_ms": 1e-05}])
def test_the_same_text_as_the_json_module(numbers):
    data = request_data(**numbers)
    assert request_json(data) == json.dumps(data, separators=(",", ":"))


def test_a_request_event_has_the_envelope_of_any_event():
    data = request_data(host='a"b.test', status=502, error="upstream_closed")
    fields = dict(type="proxy_request_failed", source="proxy", subject="a.test", data=data,
                  trace_id="0" * 31 + "1", ts_ms=1700000000000)
    ours, generic = RequestEvent(**fields).to_fields(), Event(**fields).to_fields()
    assert ours.keys() == generic.keys()
    assert {k: v for k, v in ours.items() if k != "data"} == \
        {k: v for k, v in generic.items() if k != "data"}
    assert json.loads(ours["data"]) == json.loads(generic["data"]) == data


def test_request_events_land_in_redis_with_secrets_masked(redis_client):
    publisher = Publisher(redis_client, flush_ms=10)
    journal = Journal(publisher, "proxy", TrustedProxies())
    ex = journal.begin({"RAW_URI": "/x/brt_0123456789abcdefghij?q=1", "HTTP_HOST": "h.test",
                        "REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET"})
    ex.status, ex.bytes_out = 200, 13
    journal.record(ex)
    assert publisher.flush()
    [(entry_id, fields)] = redis_client.xrange(stream("request"))
    event = Event.from_entry(entry_id, fields)
    assert event.type == "proxy_request_completed" and event.trace_id == ex.trace_id
    assert event.data["host"] == "h.test" and event.data["bytes_out"] == 13
    assert "brt_0123456789abcdefghij" not in event.data["path"]
    assert "q=1" not in event.data["path"]  # never the query string
