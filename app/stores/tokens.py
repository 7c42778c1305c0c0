"""API tokens: the secret is shown once at creation; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

from app import redis as keys
from app.errors import Conflict
from app.models import Token, fresh_fields
from app.stores.base import Guard, Repository

TOKEN_PREFIX = "brt_"
LAST_ADMIN = "the last admin token cannot be revoked; create another admin token first"


class AdminTokens(Guard):
    """Keeps the set of admin token ids (keys.ADMIN_TOKENS) and refuses to remove the last
    one. The set and the token index are WATCHed (every revoke changes the index), so of two
    concurrent revokes of the last two admin tokens one retries and finds itself the last."""

    def __init__(self):
        self.repair: list[str] = []

    def keys(self, old, new) -> list[str]:
        return [keys.ADMIN_TOKENS, keys.index("token")]

    def check(self, pipe, old, new) -> None:
        self.repair = []
        if old is None or old.scope != "admin" or (new is not None and new.scope == "admin"):
            return
        members = pipe.smembers(keys.ADMIN_TOKENS)
        if old.id not in members:  # stored before the set existed: count from the records
            ids = pipe.zrange(keys.index("token"), 0, -1)
            raws = pipe.mget([keys.record("token", i) for i in ids]) if ids else []
            members = {i for i, raw in zip(ids, raws, strict=True)
                       if raw and json.loads(raw).get("scope") == "admin"}
            self.repair = sorted(members - {old.id})
        others = [m for m in members if m != old.id]
        # Count only ids whose record exists: a stale member must not stand in for a token.
        alive = pipe.exists(*(keys.record("token", m) for m in others)) if others else 0
        if alive == 0:
            raise Conflict(LAST_ADMIN)

    def stage(self, pipe, old, new) -> None:
        if self.repair:
            pipe.sadd(keys.ADMIN_TOKENS, *self.repair)
        if new is not None and new.scope == "admin":
            pipe.sadd(keys.ADMIN_TOKENS, new.id)
        elif old is not None:
            pipe.srem(keys.ADMIN_TOKENS, old.id)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore(Repository):
    noun = "token"
    model = Token
    unique = {"secret_hash": lambda t: t.secret_hash}

    def guard(self) -> Guard:
        return AdminTokens()

    def issue(self, *, name: str, scope: str, owner: str) -> tuple[Token, str]:
        """Create a token; returns it and its secret (which is never stored)."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = Token(id="tok_" + secrets.token_hex(6), name=name, scope=scope, owner=owner,
                      secret_hash=hash_secret(secret), **fresh_fields())
        return self.create(token), secret

    def authenticate(self, secret: str) -> Token | None:
        """The token whose secret this is, or None. The hash lookup leaks no timing about the
        secret; the final comparison is constant-time all the same."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        digest = hash_secret(secret)
        token_id = self.lookup("secret_hash", digest)
        token = self.find(token_id) if token_id else None
        if token is None or not hmac.compare_digest(token.secret_hash, digest):
            return None
        return token
