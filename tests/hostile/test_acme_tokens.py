"""ACME HTTP-01 answers under hostile paths: traversal and tokens outside base64url.

Besides a real challenge, the test plants values in Redis under the challenge keys of invalid
tokens (as if a buggy writer had stored them); the proxy must never look those up, so the
planted "LEAKED" value must never come back, whatever the spelling of the path.
"""

from __future__ import annotations

import pytest

from app import redis as keys
from app.stores import ChallengeStore
from tests.e2e.conftest import raw_exchange
from tests.hostile.wire import responses

pytestmark = pytest.mark.e2e

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
PREFIX = "/.well-known/acme-challenge/"

# Invalid tokens, as stored under their challenge keys by the trap, and as requested.
TRAPS = {
    "..": ["..", "%2e%2e", "%2E%2E", ".%2e"],
    ".": [".", "%2e"],
    f"{TOKEN}\n": [f"{TOKEN}%0a", f"{TOKEN}%0A"],
    f"{TOKEN}\r\n": [f"{TOKEN}%0d%0a"],
    f"{TOKEN}\x00": [f"{TOKEN}%00"],
    f"{TOKEN} ": [f"{TOKEN}%20"],
    f"{TOKEN}=": [f"{TOKEN}=", f"{TOKEN}%3d"],
    f"{TOKEN[:20]}+{TOKEN[21:]}": [f"{TOKEN[:20]}+{TOKEN[21:]}", f"{TOKEN[:20]}%2b{TOKEN[21:]}"],
    f"{TOKEN[:20]}/{TOKEN[21:]}": [f"{TOKEN[:20]}%2f{TOKEN[21:]}"],
    f"{TOKEN[:20]}\u00fc{TOKEN[21:]}": [f"{TOKEN[:20]}%c3%bc{TOKEN[21:]}"],
    f"{TOKEN}*": [f"{TOKEN}*"],
    "A" * 15: ["A" * 15],  # too short for a token
    "A" * 257: ["A" * 257],  # too long
}
# Paths that step out of the challenge directory, raw or percent-encoded: never an answer
# from the challenge store (not even the real token's), never a backend request.
TRAVERSALS = [
    f"{PREFIX}../x", f"{PREFIX}..%2fx", f"{PREFIX}%2e%2e/x", f"{PREFIX}%2e%2e%2fx",
    f"{PREFIX}{TOKEN}/..", f"{PREFIX}{TOKEN}/../{TOKEN}", f"{PREFIX}./{TOKEN}",
    f"{PREFIX}.%2f{TOKEN}", f"/.well-known/acme-challenge/../acme-challenge/{TOKEN}",
    f"/.well-known/x/../acme-challenge/{TOKEN}", f"/.well-known/x/%2e%2e/acme-challenge/{TOKEN}",
    f"{PREFIX}{TOKEN}%2f..%2f..", f"{PREFIX}{TOKEN};.json",
    f"{PREFIX}x/../../{TOKEN}",
]


def get(proxy, path: str, host: str = "anything.test", method: str = "GET") -> tuple[int,
                                                                                      bytes]:
    answer = raw_exchange(proxy.port, f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
                          "Connection: close\r\n\r\n".encode("latin-1"))
    [(status, _headers, body)] = responses(answer, method)
    return status, body


@pytest.fixture
def challenges(redis_client, site):
    ChallengeStore(redis_client).put(TOKEN, KEY_AUTHORIZATION)
    for stored in TRAPS:  # below: what the path traps above must never serve
        redis_client.set(keys.acme_challenge(stored), "LEAKED")
    return redis_client


def test_a_valid_token_is_answered_on_any_host(proxy, challenges):
    for host in ("anything.test", "h.test", "192.0.2.1"):
        assert get(proxy, PREFIX + TOKEN, host) == (200, KEY_AUTHORIZATION.encode())
    assert get(proxy, PREFIX + TOKEN, method="HEAD")[0] == 200
    assert get(proxy, PREFIX + TOKEN, method="POST")[0] == 405


@pytest.mark.parametrize("stored", list(TRAPS), ids=[repr(t)[:24] for t in TRAPS])
def test_tokens_outside_base64url_are_never_looked_up(proxy, challenges, stored):
    for spelling in TRAPS[stored]:
        status, body = get(proxy, PREFIX + spelling)
        assert status in (400, 404), (spelling, status)
        assert b"LEAKED" not in body and b"Traceback" not in body


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_never_reaches_another_challenge_or_a_backend(proxy, challenges, backend,
                                                                path):
    before = len(backend.requests)
    for host in ("anything.test", "h.test"):  # unknown to the route table, and served by it
        status, body = get(proxy, path, host)
        assert status in (400, 404), (path, host, status)
        assert b"LEAKED" not in body and TOKEN.encode() not in body
    assert backend.requests[before:] == []
