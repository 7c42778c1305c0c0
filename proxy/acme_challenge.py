"""ACME HTTP-01: `/.well-known/acme-challenge/<token>` answered on every host, before any
route and never redirected, from the challenge store the ACME worker fills.

Nothing is cached: a challenge lives for seconds and this path is rare, so each lookup may
cost a Redis round trip. Tokens outside the base64url alphabet are never looked up.
"""

from __future__ import annotations

import falcon
import redis

from app.errors import Unavailable
from app.stores.challenges import ChallengeStore, valid_token
from proxy.answers import answer
from proxy.events import Journal
from proxy.routing import normalize_host

PATH = "/.well-known/acme-challenge/{token}"


class AcmeChallenge:
    def __init__(self, store: ChallengeStore, journal: Journal):
        self.store = store
        self.journal = journal

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        ex = self.journal.begin(req.env)
        ex.host = normalize_host(ex.host_header) or ""
        try:
            key_authorization = self.store.get(token) if valid_token(token) else None
        except (redis.RedisError, Unavailable):
            answer(resp, ex, 503, "the challenge store is unreachable", reason="acme_unavailable",
                   failed=True)
        else:
            if key_authorization is None:
                answer(resp, ex, 404, "no such challenge", reason="acme_unknown_token")
            else:
                ex.status = 200
                resp.content_type = "text/plain"
                resp.data = key_authorization.encode("ascii", "replace")
                ex.bytes_out = len(resp.data)
        self.journal.record(ex)

    on_head = on_get

    def on_post(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        ex = self.journal.begin(req.env)
        ex.host = normalize_host(ex.host_header) or ""
        answer(resp, ex, 405, "challenges are answered to GET only", reason="acme_method",
               headers={"Allow": "GET, HEAD"})
        self.journal.record(ex)

    on_put = on_patch = on_delete = on_options = on_post
