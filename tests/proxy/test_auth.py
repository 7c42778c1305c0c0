"""Route auth: berth tokens (cached per worker) and HTTP Basic with bcrypt or argon2."""

from __future__ import annotations

import base64

import bcrypt
from argon2 import PasswordHasher

from app.stores import TokenStore
from proxy.auth import RouteAuth


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


USERS = {"ann": bcrypt.hashpw(b"pw-ann", bcrypt.gensalt(rounds=4)).decode(),
         "bob": PasswordHasher(time_cost=1, memory_cost=8192).hash("pw-bob")}
BASIC = {"type": "basic", "users": USERS}


def test_basic(redis_client):
    auth = RouteAuth(TokenStore(redis_client))
    assert auth.check(BASIC, "rt", basic("ann", "pw-ann")).user == "ann"
    assert auth.check(BASIC, "rt", basic("bob", "pw-bob")).user == "bob"
    for header in (None, basic("ann", "nope"), basic("eve", "pw-ann"), "Basic !!!",
                   "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer x"):
        verdict = auth.check(BASIC, "rt", header)
        assert verdict.status == 401 and verdict.challenge.startswith("Basic")


def test_basic_success_is_remembered_without_the_password(redis_client):
    now = [0.0]
    auth = RouteAuth(TokenStore(redis_client), clock=lambda: now[0], basic_ttl_s=60)
    assert auth.check(BASIC, "rt", basic("ann", "pw-ann")).user == "ann"
    assert len(auth._basic) == 1
    assert not any(b"pw-ann" in key for key in auth._basic)
    # A changed hash for the same user is not served from the memory.
    changed = {"type": "basic", "users": {"ann": bcrypt.hashpw(b"new", bcrypt.gensalt(4)).decode()}}
    assert auth.check(changed, "rt", basic("ann", "pw-ann")).status == 401


def test_token_scopes_and_cache(redis_client):
    tokens = TokenStore(redis_client)
    user_token, user_secret = tokens.issue(name="u", scope="user", owner="alice")
    _, admin_secret = tokens.issue(name="a", scope="admin", owner="root")
    now = [0.0]
    auth = RouteAuth(tokens, clock=lambda: now[0], token_ttl_s=30)
    user_route, admin_route = {"type": "token", "scope": "user"}, {"type": "token",
                                                                   "scope": "admin"}
    assert auth.check(user_route, "rt", f"Bearer {user_secret}").user == "alice"
    assert auth.check(user_route, "rt", f"Bearer {admin_secret}").user == "root"
    assert auth.check(admin_route, "rt", f"Bearer {user_secret}").status == 403
    assert auth.check(admin_route, "rt", f"Bearer {admin_secret}").user == "root"
    assert auth.check(user_route, "rt", None).status == 401
    assert auth.check(user_route, "rt", "Bearer brt_unknown").status == 401
    # Revocation takes effect once the cached answer expires.
    tokens.delete(user_token.id)
    assert auth.check(user_route, "rt", f"Bearer {user_secret}").user == "alice"
    now[0] += 31
    assert auth.check(user_route, "rt", f"Bearer {user_secret}").status == 401
    assert not any(user_secret in key for key in auth._tokens)


def test_token_check_without_redis_is_503_unless_cached(redis_client):
    tokens = TokenStore(redis_client)
    _, secret = tokens.issue(name="u", scope="user", owner="alice")
    auth = RouteAuth(tokens)
    route = {"type": "token", "scope": "user"}
    assert auth.check(route, "rt", f"Bearer {secret}").user == "alice"
    from app.redis import create_client
    auth.tokens = TokenStore(create_client("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))
    assert auth.check(route, "rt", f"Bearer {secret}").user == "alice"  # cached
    assert auth.check(route, "rt", "Bearer brt_other_secret").status == 503
