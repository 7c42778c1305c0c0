"""No header a client can send raises its privileges through the proxy: berth's internal
headers (X-Berth-*), forwarding headers from an untrusted peer, or credentials placed where
the proxy does not read them. The proxy's own headers are in proxy/headers.py and
proxy/auth.py (X-Berth-User after route auth; X-Forwarded-*, Forwarded, X-Real-IP rebuilt)."""

from __future__ import annotations

import json

import pytest

from app.tracing import new_trace_id
from tests.e2e.conftest import raw_exchange, request, request_events
from tests.hostile.wire import responses

pytestmark = pytest.mark.e2e

# What a client might send to pass for someone else or for an internal caller.
SPOOFED = {
    "X-Berth-User": "root", "X-Berth-Owner": "root", "X-Berth-Scope": "admin",
    "X-Berth-Internal": "1", "x-berth-user": "root",
    "X-Forwarded-For": "127.0.0.2", "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "admin.test", "Forwarded": "for=127.0.0.2;proto=https;by=berth",
    "X-Real-IP": "127.0.0.2", "X-Original-Forwarded-For": "127.0.0.2",
    "Proxy-Authorization": "Bearer {admin}", "X-Api-Key": "{admin}", "Cookie": "token={admin}",
}


def headers_sent(body: bytes) -> list[list[str]]:
    return json.loads(body)["headers"]


def spoofed(secrets) -> dict[str, str]:
    return {k: v.format(admin=secrets["admin"]) for k, v in SPOOFED.items()
            if k != "x-berth-user"}


@pytest.fixture
def guarded(routes, backend):
    routes.add("admin-only.test", [backend.url], auth={"type": "token", "scope": "admin"})
    routes.add("users.test", [backend.url], auth={"type": "token", "scope": "user"})
    routes.add("open.test", [backend.url])


def test_spoofed_headers_do_not_pass_route_authentication(proxy, guarded, secrets, backend):
    before = len(backend.requests)
    for host in ("admin-only.test", "users.test"):
        status, _h, _b = request(proxy.port, "GET", "/echo/spoof", host,
                                 headers=spoofed(secrets))
        assert status == 401, host
        # Credentials where the proxy does not read them: the query string.
        status, _h, _b = request(proxy.port, "GET",
                                 f"/echo/spoof?access_token={secrets['admin']}", host)
        assert status == 401, host
    # A user token plus every spoofed header is still only a user on an admin route.
    status, _h, _b = request(proxy.port, "GET", "/echo/spoof", "admin-only.test",
                             headers={**spoofed(secrets),
                                      "Authorization": f"Bearer {secrets['alice']}"})
    assert status == 403
    assert backend.requests[before:] == []


def test_the_backend_sees_the_authenticated_user_not_the_claimed_one(proxy, guarded, secrets):
    status, _h, body = request(proxy.port, "GET", "/echo/who", "users.test",
                               headers={**spoofed(secrets),
                                        "Authorization": f"Bearer {secrets['alice']}"})
    assert status == 200
    sent = headers_sent(body)
    assert [v for n, v in sent if n.lower() == "x-berth-user"] == ["alice"]
    assert not [n for n, _v in sent if n.lower().startswith("x-berth-") and
                n.lower() != "x-berth-user"]
    assert not [n for n, _v in sent if n.lower() in ("authorization", "proxy-authorization")]


@pytest.mark.parametrize("line,status", [
    (b"X-Berth-User: root", 200), (b"x-berth-user: root", 200), (b"X-BERTH-USER: root", 200),
    (b"X-Berth-User:root", 200), (b"X-Berth-User:\troot", 200),
    (b"X-Berth-User: root\r\nX-Berth-User: admin", 200),
    (b"X-Berth_User: root", 200), (b"X_Berth_User: root", 200),  # "_" names: dropped
    (b"X-Berth-User : root", 400), (b"X-Berth-User\t: root", 400),
    (b"X-Berth-User: ok\r\n X-Berth-User: root", 400),  # obs-fold
])
def test_internal_headers_are_dropped_in_every_spelling(proxy, guarded, line, status):
    """Raw header lines, so case, underscores and repeats reach the proxy as written."""
    answer = raw_exchange(proxy.port, b"GET /echo/spelling HTTP/1.1\r\nHost: open.test\r\n"
                          + line + b"\r\nConnection: close\r\n\r\n")
    [(got, _h, body)] = responses(answer)
    assert got == status
    if status == 200:
        sent = headers_sent(body)
        assert not [n for n, _v in sent if "berth" in n.lower()], sent


def test_forwarding_headers_from_an_untrusted_peer_are_replaced(proxy, guarded, secrets,
                                                                redis_client):
    """127.0.0.1 is not a trusted proxy (PROXY_ENV trusts 127.0.0.2 only): whatever it
    claims, the backend and the request event see 127.0.0.1 over plain HTTP."""
    trace = new_trace_id()
    status, _h, body = request(proxy.port, "GET", "/echo/fwd", "open.test",
                               headers={**spoofed(secrets), "X-Trace-Id": trace})
    assert status == 200
    sent = dict(headers_sent(body))
    assert sent["X-Forwarded-For"] == "127.0.0.1" and sent["X-Real-IP"] == "127.0.0.1"
    assert sent["X-Forwarded-Proto"] == "http" and sent["X-Forwarded-Host"] == "open.test"
    assert sent["Forwarded"] == 'for=127.0.0.1;host="open.test";proto=http'
    [event] = request_events(redis_client, trace)
    assert event.data["client_ip"] == "127.0.0.1"


def test_a_trusted_peer_still_cannot_pass_internal_headers(proxy, guarded, secrets,
                                                           redis_client):
    """The control for the test above: 127.0.0.2 is trusted, so its forwarding headers are
    believed, but X-Berth-* and route authentication are not relaxed for it."""
    status, _h, body = request(proxy.port, "GET", "/echo/fwd", "open.test",
                               source="127.0.0.2", headers=spoofed(secrets))
    assert status == 200
    sent = dict(headers_sent(body))
    assert sent["X-Real-IP"] == "127.0.0.2"  # XFF says 127.0.0.2: trusted too, so chain[0]
    assert not [n for n in sent if n.lower().startswith("x-berth-")]
    status, _h, _b = request(proxy.port, "GET", "/echo/fwd", "admin-only.test",
                             source="127.0.0.2", headers=spoofed(secrets))
    assert status == 401


def test_the_management_api_trusts_no_forwarding_header(api, secrets):
    """The API authenticates by token alone: forwarding or internal headers from a client
    claiming to be local or an admin change nothing."""
    claims = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "X-Berth-User": "root",
              "X-Berth-Scope": "admin", "Forwarded": "for=127.0.0.1", "Host": "localhost"}
    assert api.get("/api/v1/tokens", headers=claims).status_code == 401
    mine = api.get("/api/v1/tokens", secrets["alice"], headers=claims)
    assert mine.status_code == 200
    assert {t["owner"] for t in mine.json["items"]} == {"alice"}
    assert api.get("/api/v1/orchestrator/alerts", secrets["alice"],
                   headers=claims).status_code == 403


def test_naming_the_proxys_own_headers_in_connection_does_not_remove_them(proxy, guarded,
                                                                          secrets):
    """A client may name headers in Connection to have them dropped at the next hop; the
    headers the proxy adds itself are not the client's to drop (a backend relying on
    X-Berth-User or X-Forwarded-For would otherwise see a request without them)."""
    nominated = ("X-Berth-User, X-Forwarded-For, X-Real-IP, Forwarded, X-Forwarded-Proto, "
                 "X-Forwarded-Host, Traceparent, X-Trace-Id, Host")
    trace = new_trace_id()
    status, _h, body = request(proxy.port, "GET", "/echo/nominated", "users.test",
                               headers={"Connection": nominated, "X-Trace-Id": trace,
                                        "Authorization": f"Bearer {secrets['alice']}"})
    assert status == 200
    sent = {n.lower(): v for n, v in headers_sent(body)}
    assert sent["x-berth-user"] == "alice"
    assert sent["x-forwarded-for"] == "127.0.0.1" and sent["x-real-ip"] == "127.0.0.1"
    assert sent["forwarded"].startswith("for=127.0.0.1")
    assert sent["x-trace-id"] == trace and trace in sent["traceparent"]
    assert "host" in sent
