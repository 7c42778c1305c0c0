"""Route authentication in the real proxy: berth tokens and HTTP Basic (bcrypt, argon2)."""

from __future__ import annotations

import base64
import json

import bcrypt
import pytest
from argon2 import PasswordHasher

from app.stores import TokenStore
from app.tracing import new_trace_id
from tests.e2e.conftest import request, request_events

pytestmark = pytest.mark.e2e


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_token_auth(proxy, routes, backend, redis_client):
    tokens = TokenStore(redis_client)
    _, user_secret = tokens.issue(name="u", scope="user", owner="alice")
    _, admin_secret = tokens.issue(name="a", scope="admin", owner="root")
    routes.add("tok.test", [backend.url], auth={"type": "token", "scope": "user"})
    routes.add("admin.test", [backend.url], auth={"type": "token", "scope": "admin"})

    status, headers, _ = request(proxy.port, "GET", "/echo", "tok.test")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, headers, _ = request(proxy.port, "GET", "/echo", "tok.test",
                                 headers={"Authorization": "Bearer brt_wrong"})
    assert status == 401 and "invalid_token" in headers["WWW-Authenticate"]

    status, _, body = request(proxy.port, "GET", "/echo", "tok.test",
                              headers={"Authorization": f"Bearer {user_secret}"})
    assert status == 200
    sent = dict(json.loads(body)["headers"])
    assert "Authorization" not in sent  # a berth credential never reaches the backend
    assert sent["X-Berth-User"] == "alice"

    status, _, _ = request(proxy.port, "GET", "/echo", "admin.test",
                           headers={"Authorization": f"Bearer {user_secret}"})
    assert status == 403
    status, _, _ = request(proxy.port, "GET", "/echo", "admin.test",
                           headers={"Authorization": f"Bearer {admin_secret}"})
    assert status == 200


def test_basic_auth_with_bcrypt_and_argon2_hashes(proxy, routes, backend, redis_client):
    users = {"ann": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode(),
             "bob": PasswordHasher(time_cost=1, memory_cost=8192).hash("hunter2")}
    routes.add("basic.test", [backend.url], auth={"type": "basic", "users": users})

    status, headers, _ = request(proxy.port, "GET", "/echo", "basic.test")
    assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="berth"')
    for user, password in (("ann", "wrong"), ("nobody", "s3cret"), ("bob", "s3cret")):
        status, _, _ = request(proxy.port, "GET", "/echo", "basic.test",
                               headers=basic(user, password))
        assert status == 401, (user, password)
    for user, password in (("ann", "s3cret"), ("bob", "hunter2"), ("bob", "hunter2")):
        trace = new_trace_id()
        status, _, body = request(proxy.port, "GET", "/echo", "basic.test",
                                  headers={**basic(user, password), "X-Trace-Id": trace})
        assert status == 200
        sent = dict(json.loads(body)["headers"])
        assert sent["X-Berth-User"] == user and "Authorization" not in sent
        [event] = request_events(redis_client, trace)
        assert password not in json.dumps(event.as_dict())


def test_routes_without_auth_forward_the_authorization_header(proxy, routes, backend):
    routes.add("open.test", [backend.url])
    status, _, body = request(proxy.port, "GET", "/echo", "open.test",
                              headers={"Authorization": "Bearer backend-token"})
    assert status == 200
    assert dict(json.loads(body)["headers"])["Authorization"] == "Bearer backend-token"
