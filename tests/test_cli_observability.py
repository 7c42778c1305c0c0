"""`berth metrics` and `berth alerts` against the real API app served over HTTP (wsgiref, in a
thread) on the test Redis."""

from __future__ import annotations

import json
import re
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from app.alerts.rules import merge
from app.alerts.state import Signal, apply_signals
from app.cli import main as cli_main
from app.events import Event
from app.metrics.aggregate import aggregate, apply
from tests.support.api import Api


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(settings, redis_client):
    api = Api(settings, redis_client)
    server = make_server("127.0.0.1", 0, api.app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", api
    server.shutdown()
    server.server_close()
    api.close()


def berth(url: str, token: str, *argv: str) -> int:
    return cli_main.main(["--url", url, "--token", token, *argv], environ={})


def test_berth_metrics(served, redis_client, capsys):
    url, api = served
    now = time.time()
    events = [Event(type="proxy_request_completed", source="proxy", subject="shop.test",
                    ts_ms=int(now * 1000),
                    data={"host": "shop.test", "route_id": "rt_1", "method": "GET",
                          "status": 500 if i < 2 else 200, "duration_ms": 12.5,
                          "upstream": "http://127.0.0.1:9001"}) for i in range(8)]
    pipe = redis_client.pipeline(transaction=True)
    apply(aggregate(events), pipe)
    pipe.execute()

    assert berth(url, api.admin, "metrics", "--window", "1m") == 0
    out = capsys.readouterr().out
    # A window holds its whole minutes and the current one so far: 60 to 119 s for 1m.
    assert re.match(r"8 requests, 2 errors over the last 1m \((\d+) s\)\n", out)
    assert 60 <= int(re.match(r".*\((\d+) s\)", out).group(1)) <= 120
    row = next(line for line in out.splitlines() if line.strip().startswith("shop.test"))
    assert row.split()[2:5] == ["8", "2", "25.0%"] and row.split()[-1] == "12.5"
    assert "http://127.0.0.1:9001" in out

    assert berth(url, api.admin, "metrics", "--host", "other.test", "--json") == 0
    assert json.loads(capsys.readouterr().out)["routers"] == []


def test_berth_alerts_list_and_ack(served, redis_client, capsys):
    url, api = served
    apply_signals(redis_client, [Signal(merge().rules["service_failed"], "web", True,
                                        message="service web: service failed")],
                  int(time.time() * 1000))
    assert berth(url, api.admin, "alerts") == 0
    out = capsys.readouterr().out
    alert_id = out.splitlines()[1].split()[0]
    assert alert_id.startswith("al_") and "service_failed" in out and "firing" in out

    assert berth(url, api.admin, "alerts", "ack", alert_id) == 0
    assert capsys.readouterr().out.startswith(f"acknowledged {alert_id}: service_failed web")
    assert berth(url, api.admin, "alerts", "--all") == 0
    assert "firing (acked)" in capsys.readouterr().out

    assert berth(url, api.admin, "alerts", "ack", "al_missing") == 1
    assert capsys.readouterr().err.startswith("berth: Not found:")
    assert berth(url, api.token("user", "alice"), "alerts") == 1
    assert "admin token" in capsys.readouterr().err
