"""The `berth` command line (app/cli/).

Until the management API exists, the CLI runs against StubApi below: a real HTTP server on a
loopback port that answers with the contract's shapes and canned data. It stands in for the
API only, and the tests that use it say so in their names (`..._against_stub_api_...`);
end-to-end tests against the real API come with it. Error cases run the CLI as a subprocess,
as a user would, to prove one `berth:` line on stderr, a non-zero exit and no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from app.cli.client import ApiClient
from app.cli.errors import ApiError, ConnectionFailed, FollowTimeout, UsageError
from app.cli.events import event_line
from app.cli.main import NOUNS, command_of, main, resolve_token
from app.cli.output import ago, clean, stamp, table, when
from app.cli.sse import SseMessage, SseParser, follow_events, parse_sse, split_lines
from app.cli.status import exit_status, render
from app.tracing import parse_traceparent
from tests.support.cli import interruptible
from tests.support.procs import ROOT, free_port

ADMIN = "brt_stub_admin_secret_0123456789abcdef"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_714_000_000_000

EVENTS = [
    {"id": f"{T0}-0", "stream": "service", "type": "service_created",
     "source": "api", "subject": "web", "trace_id": TRACE, "ts_ms": T0,
     "data": {"image": "nginx:1.27", "port": 80}},
    {"id": f"{T0 + 850}-0", "stream": "service", "type": "service_started",
     "source": "worker", "subject": "web", "trace_id": TRACE, "ts_ms": T0 + 850,
     "data": {"container": "3f2a9c1d0b7e"}},
    {"id": f"{T0 + 1200}-0", "stream": "service", "type": "ready",
     "source": "worker", "subject": "web", "trace_id": TRACE, "ts_ms": T0 + 1200,
     "data": {"url": "http://web.localhost"}},
]

STATUS = {
    "redis": {"ok": True, "latency_ms": 0.42},
    "components": [
        {"component": "web", "instance": "host-a:4101", "last_seen_ms": T0, "age_s": 1.2,
         "alive": True},
        {"component": "worker", "instance": "host-a:4102", "last_seen_ms": T0 - 95_000,
         "age_s": 95.0, "alive": False},
    ],
    "streams": {"events:request:stream": 12034, "events:service:stream": 17},
    "consumer_groups": [
        {"stream": "events:request:stream", "group": "metrics", "consumers": 2, "pending": 3,
         "lag": 40, "lag_seconds": 0.8},
        {"stream": "events:alert:stream", "group": "webhooks", "consumers": 1, "pending": 0,
         "lag": None, "lag_seconds": None},
    ],
    "queues": {"default": 0, "acme": 2},
}


def sse(item: dict) -> str:
    return f"id: {item['id']}\nevent: {item['type']}\ndata: {json.dumps(item)}\n\n"


class StubApi:
    """Stands in for the management API: the contract's routes and shapes with canned data.

    `sse_mode` scripts the event stream: "hold" sends the events then pings until the client
    leaves; "drop" cuts the first connection after two events and resumes from Last-Event-ID;
    "drop_always" cuts every connection before any event. `fail` = (status, content type,
    body) answers every request with that instead; `delay` stalls each answer.
    """

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []  # method, path?query, headers
        self.stream_headers: list[dict] = []
        self.tokens = {"tok_0a1b2c3d4e5f": {"id": "tok_0a1b2c3d4e5f", "name": "admin",
                                            "scope": "admin", "owner": "admin",
                                            "created_at": T0 / 1000, "version": 1}}
        self.sse_mode = "hold"
        self.ping_s = 0.2
        self.fail: tuple[int, str, bytes] | None = None
        self.delay = 0.0
        self.stop = threading.Event()
        self.server = _StubServer(("127.0.0.1", 0), _StubHandler)
        self.server.stub = self
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> StubApi:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def traceparents(self) -> list[str]:
        return [headers.get("traceparent", "") for _, _, headers in self.requests]


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up: fine
            super().handle_error(request, client_address)


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def log_message(self, *args):
        pass

    @property
    def stub(self) -> StubApi:
        return self.server.stub  # type: ignore[attr-defined]

    def _trace_id(self) -> str:
        parsed = parse_traceparent(self.headers.get("traceparent"))
        return parsed[0] if parsed else "0" * 31 + "1"

    def _send(self, status: int, body: bytes = b"", kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("X-Trace-Id", self._trace_id())
        if status != 204:
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: object) -> None:
        self._send(status, json.dumps(value).encode())

    def _error(self, status: int, title: str, description: str) -> None:
        self._json(status, {"title": title, "description": description})

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.stub.requests.append((method, self.path, dict(self.headers)))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        time.sleep(self.stub.delay)
        if self.stub.fail:
            status, kind, payload = self.stub.fail
            return self._send(status, payload, kind)
        if self.headers.get("Authorization") != f"Bearer {ADMIN}":
            return self._error(401, "Unauthorized", "missing or unknown token")
        if (method, url.path) == ("GET", "/api/v1/orchestrator/status"):
            return self._json(200, STATUS)
        if (method, url.path) == ("GET", "/api/v1/tokens"):
            return self._json(200, {"items": list(self.stub.tokens.values())})
        if (method, url.path) == ("POST", "/api/v1/tokens"):
            token = {"id": "tok_9f8e7d6c5b4a", "name": body["name"], "scope": body["scope"],
                     "owner": body.get("owner", "admin"), "created_at": time.time(),
                     "version": 1}
            self.stub.tokens[token["id"]] = token
            return self._json(201, {"token": token, "secret": "brt_" + "s3cr3t" * 7})
        if method == "DELETE" and url.path.startswith("/api/v1/tokens/"):
            token_id = url.path.rsplit("/", 1)[1]
            if self.stub.tokens.pop(token_id, None) is None:
                return self._error(404, "Not found", f"no token {token_id}")
            return self._send(204)
        if (method, url.path) == ("GET", "/api/v1/events"):
            items = [e for e in reversed(EVENTS)
                     if query.get("type") in (None, e["type"])
                     and query.get("trace_id") in (None, e["trace_id"])]
            limit = int(query.get("limit", 50))
            more = len(items) > limit
            return self._json(200, {"items": items[:limit],
                                    "next": items[limit - 1]["id"] if more else None})
        if (method, url.path) == ("GET", "/api/v1/events/stream"):
            return self._event_stream(query)
        return self._error(404, "Not found", f"no route {url.path}")

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event_stream(self, query: dict) -> None:
        stub = self.stub
        stub.stream_headers.append(dict(self.headers))
        self.send_response(200)
        self.send_header("X-Trace-Id", self._trace_id())
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        events = [e for e in EVENTS if query.get("trace_id") in (None, e["trace_id"])
                  and query.get("type") in (None, e["type"])
                  and query.get("stream") in (None, e["stream"])]
        last_id = self.headers.get("Last-Event-ID")
        if last_id:
            events = events[[e["id"] for e in events].index(last_id) + 1:]
        try:
            self._chunk("retry: 100\n\n")  # like the API: the client's reconnection delay
            if stub.sse_mode == "drop_always":
                return  # cut off: no terminating chunk
            if stub.sse_mode == "drop" and not last_id:
                for item in events[:2]:
                    self._chunk(sse(item))
                return
            for item in events:
                self._chunk(sse(item))
            while not stub.stop.wait(stub.ping_s):
                self._chunk(": ping\n\n")
        except OSError:
            pass  # the client went away


@pytest.fixture
def stub():
    api = StubApi().start()
    yield api
    api.close()


def run_cli(*args: str, env: dict | None = None, timeout: float = 30,
            command: tuple[str, ...] = (sys.executable, "-m", "app.cli")
            ) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    return subprocess.run([*command, *args], cwd=ROOT, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_failure(result: subprocess.CompletedProcess, starts: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(starts), lines[0]
    assert result.stdout == ""


# -- output ------------------------------------------------------------------------------


def test_table_pads_columns_and_right_aligns_numbers():
    text = table(["ID", "NAME", "COUNT"], [["tok_1", "deploy", 7], ["tok_22", "ci", 1234]])
    assert text.splitlines() == [
        "ID      NAME    COUNT",
        "tok_1   deploy      7",
        "tok_22  ci       1234",
    ]


def test_table_shows_none_as_dash_and_escapes_control_characters():
    text = table(["A", "B"], [[None, "evil\x1b[2Jname\nnext"]], indent="  ")
    assert text.splitlines() == ["  A  B", "  -  evil\\x1b[2Jname next"]
    assert clean("right\u202eleft\x7f") == "right\\u202eleft\\x7f"


def test_time_formats():
    assert when(T0 / 1000, UTC) == "2024-04-24 23:06:40"
    assert when(None) is None
    assert stamp(T0 + 123, tz=UTC) == "23:06:40.123"
    assert stamp(T0 + 123, date=True, tz=UTC) == "2024-04-24 23:06:40.123"
    assert stamp(None) == "-" + " " * 11
    assert ago(1.25) == "1.2s ago" and ago(600) == "10m ago" and ago(7200) == "2.0h ago"


def test_event_line_shows_time_stream_type_subject_trace_and_data():
    line = event_line(EVENTS[0])
    fields = line.split()
    assert fields[1:5] == ["service", "service_created", "web", TRACE]
    assert event_line({**EVENTS[0], "stream": "events:route:stream"}).split()[1] == "route"
    assert line.endswith('{"image":"nginx:1.27","port":80}')
    long = event_line({**EVENTS[0], "data": {"x": "y" * 500}, "subject": "a\x1bb"})
    assert long.endswith("...") and "\x1b" not in long


def test_status_render_marks_a_down_component_and_shows_every_section():
    text = render(STATUS, "http://127.0.0.1:8000")
    assert text.splitlines()[0] == (
        "berth at http://127.0.0.1:8000: 1 of 2 components DOWN: worker (host-a:4102)")
    assert "Redis: ok, 0.42 ms" in text
    assert "  worker     host-a:4102  DOWN   95.0s ago" in text
    assert "events:request:stream   12034" in text
    assert "events:alert:stream    webhooks          1        0    -        -" in text
    assert "acme         2" in text


# -- SSE parsing -------------------------------------------------------------------------


def test_split_lines_handles_lf_crlf_and_cr_across_chunk_boundaries():
    chunks = [b"a\r", b"\nb\rc", b"\n\xc3", b"\xa9\r", b"\r\n", b"tail-without-eol"]
    assert list(split_lines(chunks)) == ["a", "b", "c", "\u00e9", ""]


def test_parse_sse_fields_comments_multiline_data_and_ids():
    stream = (
        ": ping\n"
        "\n"  # a blank line with no data dispatches nothing
        "id: 1-0\n"
        "event: service_started\n"
        "data: {\"a\":\n"
        "data:  1}\n"
        "\n"
        ": a comment between messages\n"
        "data\n"  # a field with no colon: empty value
        "data:x\n"
        "retry: 2500\n"
        "\n"
        "id\n"  # resets the last event id
        "event: ready\n"
        "data: done\n"
        "\n"
        "data: never dispatched, the stream ended first\n"
    )
    messages = list(parse_sse(split_lines([stream.encode()])))
    assert messages == [
        SseMessage("service_started", '{"a":\n 1}', "1-0"),
        SseMessage("message", "\nx", "1-0"),
        SseMessage("ready", "done", ""),
    ]


def test_sse_parser_keeps_last_id_and_retry_across_connections():
    parser = SseParser()
    first = list(parser.messages(split_lines([b"retry: 3000\n\nid: 7-0\ndata: a\n\ndata: cut"])))
    assert first == [SseMessage("message", "a", "7-0")]
    assert (parser.last_id, parser.retry_ms) == ("7-0", 3000)
    second = list(parser.messages(split_lines([b"data: b\n\nretry: soon\n\n"])))
    assert second == [SseMessage("message", "b", "7-0")]  # the cut message is not carried over
    assert parser.retry_ms == 3000  # not a number: ignored


# -- follow_events -----------------------------------------------------------------------


def test_follow_events_against_stub_api_stops_at_a_terminal_type(stub):
    client = ApiClient(stub.url, ADMIN)
    seen = list(follow_events(client, trace_id=TRACE, until={"ready"}, timeout=10))
    assert seen == EVENTS
    headers = stub.stream_headers[0]
    assert headers["Accept"] == "text/event-stream"
    assert parse_traceparent(headers["traceparent"])


def test_follow_events_against_stub_api_resumes_with_last_event_id(stub):
    stub.sse_mode = "drop"
    retries = []
    seen = list(follow_events(ApiClient(stub.url, ADMIN), trace_id=TRACE, until={"ready"},
                              timeout=10, sleep=lambda s: None,
                              on_retry=lambda *a: retries.append(a)))
    assert [e["type"] for e in seen] == ["service_created", "service_started", "ready"]
    assert [h.get("Last-Event-ID") for h in stub.stream_headers] == [None, EVENTS[1]["id"]]
    assert len(retries) == 1 and retries[0][1:] == (1, 0.1)


def test_follow_events_against_stub_api_gives_up_after_consecutive_failures(stub):
    stub.sse_mode = "drop_always"
    delays = []
    with pytest.raises(ConnectionFailed) as caught:
        list(follow_events(ApiClient(stub.url, ADMIN), retries=3, sleep=delays.append))
    assert delays == [0.1, 0.2, 0.4]
    assert len(stub.stream_headers) == 4
    assert caught.value.line().startswith("berth: Event stream lost: ")


def test_follow_events_against_stub_api_times_out_without_terminal_event(stub):
    started = time.monotonic()
    with pytest.raises(FollowTimeout):
        list(follow_events(ApiClient(stub.url, ADMIN), event_type="service_started",
                           until={"ready"}, timeout=0.6))
    assert time.monotonic() - started < 3


def test_follow_events_against_stub_api_times_out_on_a_silent_stream(stub):
    stub.ping_s = 30  # no heartbeat before the deadline: the read timeout ends the wait
    with pytest.raises(FollowTimeout):
        list(follow_events(ApiClient(stub.url, ADMIN), trace_id="1" * 32, until={"ready"},
                           timeout=0.5))


def test_follow_events_fails_at_once_on_refused_connection_and_on_4xx(stub):
    with pytest.raises(ConnectionFailed):
        list(follow_events(ApiClient(f"http://127.0.0.1:{free_port()}"), timeout=5))
    with pytest.raises(ApiError) as caught:
        list(follow_events(ApiClient(stub.url, "brt_wrong"), timeout=5))
    assert caught.value.status == 401


# -- token and URL resolution ------------------------------------------------------------


def _args(**values) -> argparse.Namespace:
    return argparse.Namespace(**{"token": None, "token_file": None, **values})


def test_token_precedence_flag_file_environment_default_file(tmp_path):
    (tmp_path / ".berth").mkdir()
    (tmp_path / ".berth" / "admin-token").write_text("brt_default\n")
    (tmp_path / "other").write_text("  brt_file  \n")
    env = {"BERTH_TOKEN": "brt_env"}
    assert resolve_token(_args(token="brt_flag"), env, tmp_path) == "brt_flag"
    assert resolve_token(_args(token_file=str(tmp_path / "other")), env, tmp_path) == "brt_file"
    assert resolve_token(_args(), env, tmp_path) == "brt_env"
    assert resolve_token(_args(), {}, tmp_path) == "brt_default"
    with pytest.raises(UsageError):
        resolve_token(_args(token="a", token_file="b"), {}, tmp_path)


def test_command_of_skips_global_options_and_their_values():
    assert command_of(["services", "list"]) == "services"
    assert command_of(["--url", "http://h:1", "--json", "routes", "ls"]) == "routes"
    assert command_of(["--url", "services", "status"]) == "status"  # a value, not the command
    assert command_of(["--timeout=3", "certs", "list", "--url", "x"]) == "certs"
    for argv in ([], ["--help"], ["servces"], ["--timeout"]):
        assert command_of(argv) is None  # the full parser answers these


@pytest.mark.parametrize("noun", NOUNS)
def test_every_command_builds_alone_and_shows_its_help(noun, capsys):
    with pytest.raises(SystemExit) as done:
        main([noun, "--help"], environ={})
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: berth {noun}")


def test_a_command_imports_neither_the_models_nor_the_other_commands():
    """Each `berth` run is a new interpreter: what a command imports is its start-up time
    (http.client with the email package, TLS for a plain http:// API, secrets' hashing)."""
    probe = ("import sys; from app.cli.main import build_parser, command_of; "
             "argv = ['services', 'list']; build_parser(command_of(argv)).parse_args(argv); "
             "print(' '.join(m for m in ('app.models', 'dataclasses', 'logging', "
             "'app.cli.routes', 'app.cli.certs', 'http.client', 'email.parser', 'ssl', "
             "'secrets') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.split() == []


def test_full_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"], environ={})
    out = capsys.readouterr().out
    assert all(f"\n    {noun} " in out for noun in NOUNS)


# -- commands, in process ----------------------------------------------------------------


def test_cli_against_stub_api_status_summary_and_json(stub, capsys):
    # The stub's worker is stale: exit status 4, with --json too.
    assert main(["--url", stub.url, "--token", ADMIN, "status"], {}) == 4
    out = capsys.readouterr().out
    assert "1 of 2 components DOWN: worker (host-a:4102)" in out
    assert "Consumer groups:" in out and "Queues:" in out
    assert main(["status", "--json", "--url", stub.url, "--token", ADMIN], {}) == 4
    assert json.loads(capsys.readouterr().out) == STATUS


def test_status_exit_status_healthy_redis_down_refusing_and_degraded():
    alive = {"component": "web", "instance": "h:1", "alive": True, "state": "alive"}
    healthy = {"redis": {"ok": True, "reachable": True}, "components": [alive]}
    assert exit_status(healthy) == 0
    assert exit_status({**healthy, "redis": {"ok": False, "reachable": False}}) == 3
    refusing = {**healthy, "redis": {"ok": False, "reachable": True, "error": "MISCONF"}}
    assert exit_status(refusing) == 3
    degraded = {**alive, "state": "degraded", "reason": "publisher: Redis unreachable"}
    assert exit_status({**healthy, "components": [alive, degraded]}) == 4
    # the container engine and the leader are shown, not counted
    assert exit_status({**healthy, "engine": {"reachable": False}, "scheduler_leader": None}) == 0


def test_status_render_names_leader_engine_refusal_degraded_and_capped_lag():
    status = {
        "redis": {"ok": False, "reachable": True, "latency_ms": None,
                  "error": "refusing writes (MISCONF: it cannot persist to disk)"},
        "components": [{"component": "consumer", "instance": "h:7", "age_s": 1.0,
                        "alive": True, "state": "degraded",
                        "reason": "reader of events:request:stream (consumer): Redis x"}],
        "scheduler_leader": {"instance": "h:9:ab12", "term": 4, "expires_in_ms": 2000},
        "engine": {"reachable": False, "url": "unix:///x.sock", "error": "no engine"},
        "consumer_groups": [{"stream": "events:request:stream", "group": "consumer",
                             "consumers": 1, "pending": 0, "lag": 10000, "lag_capped": True,
                             "lag_seconds": 3.0}],
    }
    text = render(status, "http://127.0.0.1:8000")
    assert text.splitlines()[0].endswith("1 degraded: consumer (h:7)")
    assert "Redis: REFUSING WRITES: refusing writes (MISCONF" in text
    assert "Scheduler leader: h:9:ab12 (term 4)" in text
    assert "Container engine: UNREACHABLE: no engine" in text
    assert "  consumer (h:7): reader of events:request:stream (consumer): Redis x" in text
    assert "10000+" in text
    assert "Scheduler leader: NONE" in render({**status, "scheduler_leader": None}, "u")


def test_status_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["status", "--help"], {})
    out = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 healthy" in out and "3 Redis is unreachable or refusing" in out


def test_cli_against_stub_api_tokens_create_prints_secret_once_and_trace(stub, capsys):
    argv = ["tokens", "create", "deploy", "--scope", "admin", "--owner", "ci"]
    assert main(argv, {"BERTH_URL": stub.url, "BERTH_TOKEN": ADMIN}) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "created token tok_9f8e7d6c5b4a 'deploy' (scope admin, owner ci)"
    assert out[1] == "secret: brt_" + "s3cr3t" * 7
    assert "shown once" in out[2]
    sent_trace = parse_traceparent(stub.traceparents()[-1])[0]
    assert out[3] == f"trace: {sent_trace}"
    assert main(argv + ["--json"], {"BERTH_URL": stub.url, "BERTH_TOKEN": ADMIN}) == 0
    assert json.loads(capsys.readouterr().out)["secret"].startswith("brt_")


def test_cli_against_stub_api_tokens_list_and_revoke(stub, capsys):
    common = ["--url", stub.url, "--token", ADMIN]
    assert main([*common, "tokens", "list"], {}) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SCOPE", "OWNER", "CREATED"]
    assert lines[1].split()[:4] == ["tok_0a1b2c3d4e5f", "admin", "admin", "admin"]
    assert main([*common, "tokens", "revoke", "tok_0a1b2c3d4e5f"], {}) == 0
    assert capsys.readouterr().out.startswith("revoked token tok_0a1b2c3d4e5f\ntrace: ")
    assert main([*common, "tokens", "list"], {}) == 0
    assert capsys.readouterr().out == "no tokens\n"
    assert ("DELETE", "/api/v1/tokens/tok_0a1b2c3d4e5f") in [r[:2] for r in stub.requests]


def test_cli_against_stub_api_events_list_pages_and_filters(stub, capsys):
    common = ["--url", stub.url, "--token", ADMIN]
    assert main([*common, "events", "list", "--limit", "2", "--trace", TRACE.upper()], {}) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines[:2]] == ["ready", "service_started"]
    assert lines[2] == f"(older events: add --before {EVENTS[1]['id']})"
    assert main([*common, "events", "list", "--type", "ready", "--json"], {}) == 0
    assert json.loads(capsys.readouterr().out) == {"items": [EVENTS[2]], "next": None}
    assert stub.requests[0][1] == f"/api/v1/events?trace_id={TRACE}&limit=2"


def test_cli_against_stub_api_sends_a_fresh_traceparent_and_the_token_each_request(stub):
    for _ in range(2):
        assert main(["--url", stub.url, "--token", ADMIN, "status", "--json"], {}) == 4
    traces = [parse_traceparent(t) for t in stub.traceparents()]
    assert all(traces) and traces[0][0] != traces[1][0]
    assert all(h["Authorization"] == f"Bearer {ADMIN}" for _, _, h in stub.requests)


# -- the command line as a user runs it ---------------------------------------------------


def test_cli_wrapper_against_stub_api_reads_url_and_token_from_environment(stub):
    result = run_cli("tokens", "list", "--json", command=(str(ROOT / "berth"),),
                     env={"BERTH_URL": stub.url, "BERTH_TOKEN": ADMIN})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["items"][0]["id"] == "tok_0a1b2c3d4e5f"


def test_cli_against_stub_api_unauthorized_is_one_line(stub):
    result = run_cli("--url", stub.url, "--token", "brt_wrong", "status")
    assert_one_line_failure(result, "berth: Unauthorized: missing or unknown token")


def test_cli_against_stub_api_not_found_is_one_line(stub):
    result = run_cli("tokens", "revoke", "tok_nope", env={"BERTH_URL": stub.url,
                                                          "BERTH_TOKEN": ADMIN})
    assert_one_line_failure(result, "berth: Not found: no token tok_nope")


def test_cli_against_stub_api_500_with_html_body_is_one_line_with_trace(stub):
    stub.fail = (500, "text/html", b"<html>\n<h1>Internal Server Error</h1>\n</html>")
    result = run_cli("--url", stub.url, "--token", ADMIN, "tokens", "list")
    assert_one_line_failure(result, "berth: HTTP 500 Internal Server Error: GET /api/v1/tokens "
                                    "answered text/html, not a JSON error (trace ")


def test_cli_against_stub_api_200_that_is_not_json_is_one_line(stub):
    stub.fail = (200, "text/html", b"<html>a login page</html>")
    result = run_cli("--url", stub.url, "--token", ADMIN, "status")
    assert_one_line_failure(result, "berth: Bad response: GET /api/v1/orchestrator/status "
                                    "answered 200 with text/html, not JSON")


def test_cli_against_stub_api_answer_of_the_wrong_shape_is_one_line(stub):
    stub.fail = (200, "application/json", b'{"unexpected": true}')
    result = run_cli("--url", stub.url, "--token", ADMIN, "tokens", "list")
    assert_one_line_failure(result, "berth: Unexpected error: KeyError: 'items'")


def test_cli_against_stub_api_slow_answer_times_out_in_one_line(stub):
    stub.delay = 3
    result = run_cli("--url", stub.url, "--token", ADMIN, "--timeout", "0.5", "status")
    assert_one_line_failure(result, "berth: Timed out: GET /api/v1/orchestrator/status: "
                                    "no answer after 0.5s")


def test_cli_refused_connection_is_one_line():
    port = free_port()
    result = run_cli("--url", f"http://127.0.0.1:{port}", "status")
    assert_one_line_failure(result, f"berth: Cannot connect: http://127.0.0.1:{port}: "
                                    "connection refused")
    result = run_cli("events", "tail", env={"BERTH_URL": f"http://127.0.0.1:{port}"})
    assert_one_line_failure(result, "berth: Cannot connect: ")


def test_cli_unreadable_token_file_is_one_line(tmp_path):
    result = run_cli("--token-file", str(tmp_path / "missing"), "status")
    assert_one_line_failure(result, "berth: Cannot read token file: ")


def test_cli_bad_flags_exit_2_in_one_line_with_a_help_hint():
    result = run_cli("tokens", "create", "x", "--scope", "root")
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()  # no usage block
    assert line.startswith("berth tokens create: argument --scope: invalid choice: 'root'")
    assert line.endswith("(see 'berth tokens create --help')")


@pytest.mark.parametrize(("argv", "line"), [
    ((), "berth: the following arguments are required: COMMAND (see 'berth --help')"),
    (("routes", "bogus"), "berth routes: argument VERB: invalid choice: 'bogus' (choose from "
                          "'add', 'list', 'show', 'update', 'rm') (see 'berth routes --help')"),
])
def test_cli_missing_or_unknown_command_is_one_line(argv, line):
    result = run_cli(*argv)
    assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", "")


def tail_then_ctrl_c(stub: StubApi, *args: str, count: int) -> tuple[list[str], int, str]:
    """Run `berth events tail ARGS` as a user would, read `count` lines, then press Ctrl-C."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "events", "tail", *args],
                            cwd=ROOT, env={**base, "BERTH_URL": stub.url, "BERTH_TOKEN": ADMIN},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    try:
        # A reader thread, not select(): one read may buffer several lines at once.
        received: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [received.put(line) for line in proc.stdout],
                         daemon=True).start()
        lines: list[str] = []
        deadline = time.monotonic() + 15
        while len(lines) < count and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                lines.append(received.get(timeout=0.2).rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        return lines, proc.wait(10), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_cli_against_stub_api_events_tail_json_lines_then_ctrl_c_exits_130_quietly(stub):
    lines, status, stderr = tail_then_ctrl_c(stub, "--json", "--trace", TRACE,
                                             "--stream", "events:service:stream", count=3)
    assert [json.loads(line) for line in lines] == EVENTS
    assert status == 130
    assert stderr == ""
    assert stub.requests[0][1] == f"/api/v1/events/stream?stream=service&trace_id={TRACE}"


def test_cli_against_stub_api_events_tail_prints_one_line_per_event_for_people(stub):
    lines, status, stderr = tail_then_ctrl_c(stub, "--type", "ready", count=1)
    assert lines[0].split()[1:5] == ["service", "ready", "web", TRACE]
    assert lines[0].endswith('{"url":"http://web.localhost"}')
    assert (status, stderr) == (130, "")


def test_cli_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert all(noun in result.stdout for noun in ("status", "routes", "services", "certs",
                                                  "metrics", "alerts", "tokens", "events"))
