"""Token scopes (ARCHITECTURE: Tenancy): a user token acts only inside its owner and never on
tokens of a higher scope; nobody revokes the last admin token; an admin's user token without
an owner gets one of its own. Each refusal is checked to leave the store as it was."""

from __future__ import annotations

import threading

from app.cli.main import main as cli
from app.errors import Conflict
from app.stores.tokens import LAST_ADMIN, AdminTokens, TokenStore
from tests.support.api import bearer
from tests.support.store import snapshot


def call(api, method: str, path: str, secret: str, **kwargs):
    return api.client.simulate_request(method, path, headers=bearer(secret), **kwargs)


def refused(api, method: str, path: str, secret: str, status: int, **kwargs):
    """The answer, asserted to be `status` with berth's error body and no store change."""
    api.publisher.flush()
    before = snapshot(api.redis)
    answer = call(api, method, path, secret, **kwargs)
    api.publisher.flush()
    assert answer.status_code == status, (method, path, answer.text)
    assert set(answer.json) >= {"title", "description"}, answer.text
    assert snapshot(api.redis) == before, (method, path)
    return answer


def admin_token_id(api) -> str:
    return next(t["id"] for t in call(api, "GET", "/api/v1/tokens", api.admin).json["items"]
                if t["scope"] == "admin")


def test_an_admins_user_token_without_owner_gets_an_owner_of_its_own(api):
    made = call(api, "POST", "/api/v1/tokens", api.admin, json={"name": "ci", "scope": "user"})
    assert made.status_code == 201, made.text
    ci = made.json["token"]
    platform = api.tokens.authenticate(api.admin).owner
    assert ci["owner"] != platform and ci["owner"].startswith("ci-"), ci
    again = call(api, "POST", "/api/v1/tokens", api.admin, json={"name": "ci"}).json["token"]
    assert again["owner"] != ci["owner"]  # fresh each time, never an existing owner
    secret = made.json["secret"]
    listed = call(api, "GET", "/api/v1/tokens", secret).json["items"]
    assert [t["id"] for t in listed] == [ci["id"]]
    # The admin token is another owner's now: as if it did not exist.
    refused(api, "DELETE", f"/api/v1/tokens/{admin_token_id(api)}", secret, 404)
    # An admin token (and a token an admin names an owner for) keeps the owner it is given.
    named = call(api, "POST", "/api/v1/tokens", api.admin,
                 json={"name": "deploy", "owner": "shop"}).json["token"]
    assert named["owner"] == "shop"
    admin2 = call(api, "POST", "/api/v1/tokens", api.admin,
                  json={"name": "ops", "scope": "admin"}).json["token"]
    assert admin2["owner"] == platform


def test_a_user_token_of_the_admins_owner_neither_sees_nor_revokes_admin_tokens(api):
    user = call(api, "POST", "/api/v1/tokens", api.admin,
                json={"name": "ci", "owner": api.tokens.authenticate(api.admin).owner}
                ).json["secret"]
    listed = call(api, "GET", "/api/v1/tokens", user).json["items"]
    assert listed and {t["scope"] for t in listed} == {"user"}
    admin_id = admin_token_id(api)
    answer = refused(api, "DELETE", f"/api/v1/tokens/{admin_id}", user, 403)
    assert "admin token" in answer.json["description"]
    refused(api, "POST", "/api/v1/tokens", user, 403, json={"name": "x", "scope": "admin"})
    refused(api, "POST", "/api/v1/tokens", user, 403, json={"name": "x", "owner": "bob"})
    assert call(api, "GET", "/api/v1/orchestrator/status", api.admin).status_code == 200
    # Its own tokens it may still revoke, itself included.
    own = next(t["id"] for t in listed)
    assert call(api, "DELETE", f"/api/v1/tokens/{own}", user).status_code == 204


def test_nobody_revokes_the_last_admin_token(api):
    admin_id = admin_token_id(api)
    answer = refused(api, "DELETE", f"/api/v1/tokens/{admin_id}", api.admin, 409)
    assert answer.json["description"] == LAST_ADMIN
    # With a second admin token the first can go; then the second is the last.
    second = call(api, "POST", "/api/v1/tokens", api.admin,
                  json={"name": "ops", "scope": "admin"}).json
    assert call(api, "DELETE", f"/api/v1/tokens/{admin_id}", api.admin).status_code == 204
    answer = refused(api, "DELETE", f"/api/v1/tokens/{second['token']['id']}",
                     second["secret"], 409)
    assert answer.json["description"] == LAST_ADMIN


def _revoke_together(store: TokenStore, ids: list[str]) -> list[str]:
    """Revoke every id at once, one thread each; what each attempt ended with."""
    results: list[str] = []
    start = threading.Barrier(len(ids))

    def revoke(token_id: str) -> None:
        start.wait()
        try:
            store.delete(token_id)
            results.append("revoked")
        except Exception as ex:  # the Conflict is the expected outcome of one of them
            results.append(type(ex).__name__)

    threads = [threading.Thread(target=revoke, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_concurrent_revokes_of_the_last_two_admin_tokens_leave_one(redis_client):
    store = TokenStore(redis_client)
    for _round in range(20):
        redis_client.flushdb()
        ids = [store.issue(name=f"a{i}", scope="admin", owner="root")[0].id for i in range(2)]
        assert sorted(_revoke_together(store, ids)) == ["Conflict", "revoked"]
        assert len([t for t in store.list() if t.scope == "admin"]) == 1


def test_a_revoke_that_lands_between_check_and_commit_makes_the_other_retry(redis_client):
    """The race made deterministic: while revoking A has checked (B is still there), B is
    revoked; A's transaction must notice, retry, and find itself the last."""
    store = TokenStore(redis_client)
    a, b = (store.issue(name=f"a{i}", scope="admin", owner="root")[0] for i in range(2))

    class RevokeBInBetween(AdminTokens):
        done = False

        def check(self, pipe, old, new):
            super().check(pipe, old, new)
            if not self.done:
                self.done = True
                TokenStore(redis_client).delete(b.id)

    try:
        store.delete(a.id, guard=RevokeBInBetween())
        raise AssertionError("both of the last two admin tokens were revoked")
    except Conflict as ex:
        assert ex.description == LAST_ADMIN
    assert store.find(a.id) is not None and store.find(b.id) is None


def test_admin_tokens_stored_before_the_admin_index_still_count(redis_client):
    """An installation upgraded with admin tokens the index never saw."""
    store = TokenStore(redis_client)
    old = [store.issue(name=f"a{i}", scope="admin", owner="root")[0] for i in range(2)]
    redis_client.delete("berth:token:scope:admin")
    store.delete(old[0].id)
    try:
        store.delete(old[1].id)
        raise AssertionError("the last admin token was revoked")
    except Exception as ex:
        assert getattr(ex, "description", "") == LAST_ADMIN
    assert store.find(old[1].id) is not None


def test_cli_tokens_create_prints_the_new_owner(web, redis_client, capsys):
    _proc, url = web
    admin = TokenStore(redis_client).issue(name="admin", scope="admin", owner="admin")[1]
    assert cli(["--url", url, "--token", admin, "tokens", "create", "ci", "--scope", "user"],
               {}) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "(scope user, owner ci-" in first, first
