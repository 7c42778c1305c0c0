"""Header injection through routes' header rules: the routes API refuses any rule that could
end a header line early (CR, LF, NUL and other controls, in names or values), and what it
accepts crosses the real proxy as exactly one header each way."""

from __future__ import annotations

import json

import pytest

from harness.procs import wait_until
from tests.e2e.conftest import request

pytestmark = pytest.mark.e2e

BAD_VALUES = ["a\r\nX-Injected: 1", "a\nX-Injected: 1", "a\rX-Injected: 1", "a\n", "a\r\n",
              "\n", "a\x00b", "a\x0bb", "a\x1bb", "a\x7fb", "a\u2028b", "a\u0100b", "x" * 4097]
BAD_NAMES = ["X-A\r\nX-Injected", "X-A\n", "X-A\r", "X A", "X-A:", ":authority", "", "X-\x00",
             "X-\u00e9", "X" * 101, "X-A\t"]
RULE_FIELDS = ("request_headers", "response_headers")


def _route(rules_field: str, rules: dict) -> dict:
    return {"host": "rules.test", "targets": ["http://127.0.0.1:9"], rules_field: rules}


def _assert_refused(response, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json
    assert set(body) >= {"title", "description"} and body["field"] == field
    assert "Traceback" not in response.text


@pytest.mark.parametrize("field", RULE_FIELDS)
def test_rules_with_line_breaks_or_controls_are_refused(api, field):
    routes_before = api.get("/api/v1/routes", api.admin).json["items"]
    for value in BAD_VALUES:
        _assert_refused(api.post("/api/v1/routes", api.admin,
                                 json=_route(field, {"X-Rule": value})), field)
    for name in BAD_NAMES:
        _assert_refused(api.post("/api/v1/routes", api.admin,
                                 json=_route(field, {name: "v"})), field)
    # Not through an update either.
    created = api.post("/api/v1/routes", api.admin, json=_route(field, {"X-Rule": "ok"})).json
    for value in BAD_VALUES:
        _assert_refused(api.client.simulate_patch(
            f"/api/v1/routes/{created['id']}", headers={"Authorization": f"Bearer {api.admin}"},
            json={"version": created["version"], field: {"X-Rule": value}}), field)
    stored = api.get(f"/api/v1/routes/{created['id']}", api.admin).json
    assert stored[field] == {"X-Rule": "ok"}
    assert len(api.get("/api/v1/routes", api.admin).json["items"]) == len(routes_before) + 1


def test_accepted_rules_cross_the_proxy_as_one_header_each(api, proxy, backend):
    """Values the API accepts (tabs, obs-text, 4096 characters) arrive as written, and no
    header appears that no rule and no client asked for."""
    tricky = {"X-Tab": "a\tb", "X-Obs-Text": "caf\u00e9 \u00ff", "X-Long": "L" * 4096,
              "X-Colon": "a: b", "X-Semicolon": "a; X-Injected=1"}
    created = api.post("/api/v1/routes", api.admin, json={
        "host": "rules.test", "targets": [backend.url], "request_headers": tricky,
        "response_headers": {**tricky, "X-Long": "R" * 4096}})
    assert created.status_code == 201, created.text
    wait_until(lambda: request(proxy.port, "GET", "/echo/rules", "rules.test")[0] == 200,
               what="proxy serving rules.test")
    status, headers, body = request(proxy.port, "GET", "/echo/rules", "rules.test")
    assert status == 200
    sent = json.loads(body)["headers"]
    for name, value in tricky.items():
        assert [v for n, v in sent if n == name] == [value], name
    assert not [n for n, _v in sent if n.lower() == "x-injected"]
    assert headers["X-Tab"] == "a\tb" and headers["X-Long"] == "R" * 4096
    assert headers.get_all("X-Semicolon") == ["a; X-Injected=1"]
    assert "X-Injected" not in headers
