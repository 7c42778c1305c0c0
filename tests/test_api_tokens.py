"""/api/v1/tokens and bearer authentication, against a real Redis."""

from app import redis as keys
from app.events import Event
from app.stores.tokens import hash_secret
from tests.support.api import bearer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_admin_creates_a_token_and_its_secret_is_shown_once(api):
    response = api.post("/api/v1/tokens", api.admin, json={"name": "ci", "owner": "bob"})
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json
    assert body["secret"].startswith("brt_")
    token = body["token"]
    assert token["name"] == "ci" and token["owner"] == "bob" and token["scope"] == "user"
    assert "secret_hash" not in token and "secret" not in token
    # The secret authenticates; it is stored only as a hash.
    assert api.get("/api/v1/tokens", body["secret"]).status_code == 200
    stored = api.redis.get(keys.record("token", token["id"]))
    assert body["secret"] not in stored and hash_secret(body["secret"]) in stored
    # Listing never shows a secret again.
    listed = api.get("/api/v1/tokens", api.admin).json["items"]
    assert token["id"] in {t["id"] for t in listed}
    assert all(set(t) == set(token) for t in listed)


def test_owner_defaults_to_the_callers_owner(api):
    alice = api.token("user", "alice")
    response = api.post("/api/v1/tokens", alice, json={"name": "laptop"})
    assert response.status_code == 201
    assert response.json["token"]["owner"] == "alice"
    explicit = api.post("/api/v1/tokens", alice, json={"name": "x", "owner": "alice",
                                                        "scope": "user"})
    assert explicit.status_code == 201


def test_user_token_cannot_escalate(api):
    alice = api.token("user", "alice")
    admin_try = api.post("/api/v1/tokens", alice, json={"name": "x", "scope": "admin"})
    assert admin_try.status_code == 403 and admin_try.json["field"] == "scope"
    other_try = api.post("/api/v1/tokens", alice, json={"name": "x", "owner": "bob"})
    assert other_try.status_code == 403 and other_try.json["field"] == "owner"
    assert api.tokens.count(owner="bob") == 0


def test_admin_may_create_admin_tokens(api):
    response = api.post("/api/v1/tokens", api.admin, json={"name": "ops", "scope": "admin"})
    assert response.status_code == 201
    assert response.json["token"]["scope"] == "admin"


def test_user_sees_only_its_owners_tokens(api):
    alice = api.token("user", "alice", "a1")
    api.token("user", "alice", "a2")
    api.token("user", "bob", "b1")
    names = {t["name"] for t in api.get("/api/v1/tokens", alice).json["items"]}
    assert names == {"a1", "a2"}
    everything = {t["name"] for t in api.get("/api/v1/tokens", api.admin).json["items"]}
    assert {"a1", "a2", "b1", "root"} <= everything


def test_revoked_token_stops_working(api):
    created = api.post("/api/v1/tokens", api.admin, json={"name": "tmp", "owner": "bob"}).json
    token_id, secret = created["token"]["id"], created["secret"]
    assert api.get("/api/v1/tokens", secret).status_code == 200
    assert api.delete(f"/api/v1/tokens/{token_id}", api.admin).status_code == 204
    after = api.get("/api/v1/tokens", secret)
    assert after.status_code == 401
    assert after.headers["www-authenticate"].startswith("Bearer")
    assert api.delete(f"/api/v1/tokens/{token_id}", api.admin).status_code == 404


def test_user_cannot_see_or_revoke_other_owners_tokens(api):
    alice = api.token("user", "alice")
    bob_token, _secret = api.tokens.issue(name="b", scope="user", owner="bob")
    response = api.delete(f"/api/v1/tokens/{bob_token.id}", alice)
    assert response.status_code == 404  # not 403: other owners' ids are not disclosed
    assert api.tokens.find(bob_token.id) is not None


def test_user_can_revoke_its_own_token(api):
    alice = api.token("user", "alice")
    mine = api.tokens.authenticate(alice)
    assert api.delete(f"/api/v1/tokens/{mine.id}", alice).status_code == 204
    assert api.get("/api/v1/tokens", alice).status_code == 401


def test_missing_malformed_and_unknown_credentials_are_401(api):
    cases = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer brt_unknown-token-value"},
        {"Authorization": "Bearer not-even-a-berth-token"},
        {"Authorization": "Bearer " + "brt_" + "x" * 500},
    ]
    for headers in cases:
        response = api.get("/api/v1/tokens", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == 'Bearer realm="berth"'
        assert set(response.json) == {"title", "description"}


def test_scheme_is_case_insensitive(api):
    response = api.get("/api/v1/tokens", headers={"Authorization": f"bearer {api.admin}"})
    assert response.status_code == 200


def test_token_lifecycle_is_published_without_the_secret(api):
    response = api.post("/api/v1/tokens", api.admin, json={"name": "ev", "owner": "carol"},
                        headers={"X-Trace-Id": TRACE})
    token_id = response.json["token"]["id"]
    api.delete(f"/api/v1/tokens/{token_id}", api.admin)
    assert api.publisher.flush()
    events = [Event.from_entry(*e) for e in api.redis.xrange(keys.stream("system"))]
    created = [e for e in events if e.type == "token_created"]
    revoked = [e for e in events if e.type == "token_revoked"]
    assert [e.subject for e in created] == [token_id]
    assert created[0].trace_id == TRACE
    assert created[0].data["owner"] == "carol"
    assert [e.subject for e in revoked] == [token_id]
    raw = str(api.redis.xrange(keys.stream("system")))
    assert response.json["secret"] not in raw


def test_every_response_carries_a_trace_id(api):
    plain = api.get("/healthz")
    assert len(plain.headers["x-trace-id"]) == 32
    parent = api.get("/api/v1/tokens", api.admin,
                     headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    assert parent.headers["x-trace-id"] == TRACE
    given = api.get("/nowhere", headers={"X-Trace-Id": TRACE.upper()})
    assert given.status_code == 404 and given.headers["x-trace-id"] == TRACE
    bogus = api.get("/api/v1/tokens", headers={"traceparent": "garbage", **bearer("x")})
    assert bogus.status_code == 401 and len(bogus.headers["x-trace-id"]) == 32
