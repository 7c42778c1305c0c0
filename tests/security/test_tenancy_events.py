"""The live event stream (SSE, /api/v1/events/stream) shows a user token its owner's events
only: the lifecycle events of real API calls of two owners and an admin, followed live."""

from __future__ import annotations

import pytest

from tests.support.api import Api, bearer
from tests.test_api_events import Tail


@pytest.fixture
def sse_api(settings, redis_client):
    harness = Api(settings, redis_client, sse_ping_s=0.3, sse_block_ms=100)
    yield harness
    harness.close()


def test_a_user_tail_sees_only_its_owners_lifecycle_events(sse_api):
    api = sse_api
    alice, bob = api.token("user", "alice", "alice"), api.token("user", "bob", "bob")
    tails = {"alice": Tail(api, alice, "since=0"), "bob": Tail(api, bob, "since=0")}

    def post(secret, path, body, **params):
        answer = api.client.simulate_post(path, headers=bearer(secret), json=body,
                                          params=params or None)
        assert answer.status_code in (201, 202), answer.text
        return answer.json

    bobs = post(bob, "/api/v1/routes", {"host": "bob.test", "targets": ["http://127.0.0.1:9"]})
    post(bob, "/api/v1/tokens", {"name": "bob-ci"})
    post(api.admin, "/api/v1/routes", {"host": "bob.test", "path_prefix": "/ops",
                                       "targets": ["http://127.0.0.1:9"]}, override="true")
    post(api.admin, "/api/v1/tokens", {"name": "carol"})  # a new owner, neither's
    alices = post(alice, "/api/v1/routes", {"host": "alice.test",
                                            "targets": ["http://127.0.0.1:9"]})
    api.publisher.flush()
    tails["alice"].until(lambda b: alices["id"].encode() in b)
    tails["bob"].until(lambda b: bobs["id"].encode() in b and b"bob-ci" in b)
    for owner, tail in tails.items():
        tail.close()
        seen = [e["data"] for e in tail.events()]
        assert seen and all(e["data"]["owner"] == owner for e in seen), (owner, seen)
    assert alices["id"].encode() not in tails["bob"].buffer
    assert bobs["id"].encode() not in tails["alice"].buffer
    assert b"/ops" not in tails["bob"].buffer  # the admin's route on his host is not his
