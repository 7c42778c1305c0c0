"""Secrets stay secret: after real operations through the real processes (web, worker, proxy,
pebble as the CA), no token, password, password hash or private key appears in any event
stream, process log or API answer, nor in the clear anywhere in Redis; private keys are
sealed at rest under BERTH_SECRET_KEY.

The operations run once for the module (`world`): tokens created and revoked over the API,
routes with HTTP Basic (bcrypt) and token auth used through the proxy with right and wrong
credentials (also in places a client should not put them: a path, a query, a cookie), and a
certificate issued by the worker. The tests here share that state, so none of them asks for
the `redis_client` fixture, which empties Redis.
"""

from __future__ import annotations

import base64
import json
import secrets as random_secrets

import bcrypt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from app import redis as keys
from app.certificates import key_purpose
from app.crypto import PREFIX as SEALED
from app.crypto import SecretBox
from app.errors import SettingsError
from app.redis import create_client
from app.stores import TokenStore
from harness.procs import wait_until
from tests.acme.conftest import pebble, process_env, start_worker  # noqa: F401 - a fixture
from tests.e2e.conftest import request
from tests.support.api import bearer, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.acme]


class World:
    """What the operations left behind, and every secret they involved."""

    def __init__(self):
        self.secrets: dict[str, str] = {}  # name -> a value that must never be seen
        self.hash = ""  # the bcrypt hash: stored in its route record, and nowhere else
        self.route_ids: list[str] = []
        self.web_url = ""
        self.logs: dict[str, callable] = {}
        self.redis = None
        self.secret_key = ""


def _api(world: World, method: str, path: str, secret: str, **kwargs) -> requests.Response:
    return requests.request(method, world.web_url + path, headers=bearer(secret), timeout=10,
                            **kwargs)


def _served(proxy_port: int, host: str) -> bool:
    status, _h, body = request(proxy_port, "GET", "/", host)
    return not (status == 404 and b"no site is served" in body)


@pytest.fixture(scope="module")
def world(redis_server, proxy, backend, pebble, tmp_path_factory):  # noqa: F811 - fixture
    world = World()
    client = world.redis = create_client(redis_server.url)
    client.flushdb()
    workdir = tmp_path_factory.mktemp("secrets")
    # Debug logging: the most a process ever writes, so the most a secret could slip into.
    env = process_env(redis_server.url, pebble, BERTH_LOG_LEVEL="debug")
    world.secret_key = env["BERTH_SECRET_KEY"]
    worker = start_worker(env, workdir / "worker.log")
    web, world.web_url = start_web(redis_server.url, workdir, env=env)
    world.logs = {"worker": worker.output, "web": web.output, "proxy": proxy.output}
    try:
        _operate(world, proxy, backend)
        yield world
    finally:
        web.stop()
        worker.stop()
        client.close()


def _operate(world: World, proxy, backend) -> None:
    _token, admin = TokenStore(world.redis).issue(name="root", scope="admin", owner="root")
    password = "pw-" + random_secrets.token_urlsafe(12)
    world.hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    created = _api(world, "POST", "/api/v1/tokens", admin, json={"name": "ci", "owner": "alice"})
    assert created.status_code == 201, created.text
    alice, alice_id = created.json()["secret"], created.json()["token"]["id"]
    world.secrets.update({
        "admin token": admin, "alice token": alice, "password": password,
        "wrong password": "wrong-" + random_secrets.token_urlsafe(12),
        "unknown token": "brt_" + random_secrets.token_urlsafe(24),
        "cookie": "cookie-" + random_secrets.token_urlsafe(16),
    })
    for body in ({"host": "basic.test", "targets": [backend.url],
                  "auth": {"type": "basic", "users": {"ann": world.hash}}},
                 {"host": "token.test", "targets": [backend.url],
                  "auth": {"type": "token", "scope": "user"}}):
        route = _api(world, "POST", "/api/v1/routes", admin, json=body)
        assert route.status_code == 201, route.text
        world.route_ids.append(route.json()["id"])
        wait_until(lambda host=body["host"]: _served(proxy.port, host), what=body["host"])

    s = world.secrets
    basic = lambda user, pw: {"Authorization": "Basic " + base64.b64encode(  # noqa: E731
        f"{user}:{pw}".encode()).decode()}
    for headers, expected in (
            (basic("ann", s["password"]), 200), (basic("ann", s["wrong password"]), 401),
            (basic("nobody", s["password"]), 401), ({"Cookie": f"sid={s['cookie']}"}, 401)):
        assert request(proxy.port, "GET", "/echo/basic", "basic.test",
                       headers=headers)[0] == expected
    for secret, expected in ((alice, 200), (admin, 200), (s["unknown token"], 401)):
        assert request(proxy.port, "GET", "/echo/token", "token.test",
                       headers=bearer(secret))[0] == expected
    # Credentials where they do not belong: in the path and the query of a request.
    request(proxy.port, "GET", f"/echo/{alice}?token={alice}", "token.test",
            headers=bearer(alice))
    # ... and sent to the API wrongly: unknown token, token in a query parameter.
    assert _api(world, "GET", "/api/v1/routes", s["unknown token"]).status_code == 401
    assert _api(world, "GET", f"/api/v1/routes?token={alice}", admin).status_code == 400

    cert = _api(world, "POST", "/api/v1/certificates", admin,
                json={"name": "sealed", "domains": ["sealed.test"]})
    assert cert.status_code == 202, cert.text
    wait_until(lambda: _api(world, "GET", "/api/v1/certificates/sealed", admin)
               .json()["status"] == "active", timeout=60, what="certificate issued")
    assert _api(world, "DELETE", f"/api/v1/tokens/{alice_id}", admin).status_code == 204

    # The private keys, in the clear, from their sealed records.
    box = SecretBox(world.secret_key)
    record = json.loads(world.redis.get(keys.record("certificate", "sealed")))
    world.secrets["certificate key"] = _pem_body(box.open(record["key_pem"],
                                                          key_purpose("sealed")))
    for key in world.redis.scan_iter(keys.acme_account("*")):
        document = json.loads(world.redis.get(key))
        jwk = json.loads(box.open(document["key"], f"acme-account:{document['directory']}:"
                                                   f"{document['email']}"))
        world.secrets[f"account key {key}"] = jwk["d"]
    # Whatever the processes buffered is out: the last request's event and the revocation.
    wait_until(lambda: any(b"token_revoked" in json.dumps(_dump(world.redis, k)).encode()
                           for k in world.redis.scan_iter(_type="stream")),
               what="token_revoked event")


def _pem_body(pem: str) -> str:
    """The base64 of a PEM without its armour: what a leak would contain, however wrapped."""
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def _dump(client, key: str):
    kind = client.type(key)
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind in ("set",):
        return sorted(client.smembers(key))
    if kind == "zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return client.xrange(key)
    return None


def _leaks(world: World, text: str) -> list[str]:
    """The names of the secrets `text` contains (PEM bodies also across line breaks)."""
    flat = text.replace("\\n", "").replace("\n", "")
    found = [name for name, value in world.secrets.items() if value in text or value in flat]
    if world.hash in text:
        found.append("password hash")
    if "PRIVATE KEY" in text:
        found.append("a PEM private key")
    return found


def test_no_secret_in_any_event_stream(world):
    streams = sorted(world.redis.scan_iter(_type="stream"))
    assert keys.stream("request") in streams and keys.stream("certificate") in streams
    for stream in streams:
        entries = json.dumps(_dump(world.redis, stream))
        assert _leaks(world, entries) == [], stream


def test_no_secret_in_any_process_log(world):
    for name, output in world.logs.items():
        text = output()
        assert text, name
        assert _leaks(world, text) == [], name


def test_no_secret_in_api_answers(world):
    admin = world.secrets["admin token"]
    paths = ["/api/v1/tokens", "/api/v1/routes", "/api/v1/certificates",
             "/api/v1/certificates/sealed", "/api/v1/events?limit=1000",
             "/api/v1/orchestrator/status", "/api/v1/orchestrator/overview", "/metrics",
             *[f"/api/v1/routes/{rid}" for rid in world.route_ids]]
    for path in paths:
        answer = _api(world, "GET", path, admin)
        assert answer.status_code == 200, (path, answer.text)
        assert _leaks(world, answer.text) == [], path
    shown = _api(world, "GET", f"/api/v1/routes/{world.route_ids[0]}", admin).json()
    assert shown["auth"] == {"type": "basic", "users": ["ann"]}
    cert = _api(world, "GET", "/api/v1/certificates/sealed", admin).json()
    assert "BEGIN CERTIFICATE" in cert["cert_pem"] and "key_pem" not in cert


def test_redis_holds_no_secret_in_the_clear(world):
    """Tokens as SHA-256 digests only, keys sealed; the password hash in its route alone."""
    holding_hash = []
    for key in world.redis.scan_iter(count=1000):
        text = json.dumps(_dump(world.redis, key), default=str)
        found = _leaks(world, text)
        if "password hash" in found:
            holding_hash.append(key)
            found.remove("password hash")
        assert found == [], key
    assert holding_hash == [keys.record("route", world.route_ids[0])]


def test_private_keys_are_sealed_at_rest(world):
    raw = world.redis.get(keys.record("certificate", "sealed"))
    record = json.loads(raw)
    assert record["key_pem"].startswith(SEALED) and "PRIVATE KEY" not in raw
    assert record["order_key_pem"] == "" or record["order_key_pem"].startswith(SEALED)
    accounts = [world.redis.get(k) for k in world.redis.scan_iter(keys.acme_account("*"))]
    assert accounts
    for raw_account in accounts:
        document = json.loads(raw_account)
        assert document["key"].startswith(SEALED) and '"d"' not in raw_account
    # Sealed, not scrambled: the configured secret opens the key the certificate was made for,
    # another secret opens nothing.
    key = serialization.load_pem_private_key(SecretBox(world.secret_key).open(
        record["key_pem"], key_purpose("sealed")).encode(), password=None)
    leaf = x509.load_pem_x509_certificate(record["cert_pem"].encode())
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    with pytest.raises(SettingsError):
        SecretBox("another secret key, 16 chars or more").open(record["key_pem"],
                                                               key_purpose("sealed"))
    with pytest.raises(SettingsError):  # a key moved to another record does not open
        SecretBox(world.secret_key).open(record["key_pem"], key_purpose("other"))
