"""API tokens: the secret is shown once at creation; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from app.models import Token, fresh_fields
from app.stores.base import Repository

TOKEN_PREFIX = "brt_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore(Repository):
    noun = "token"
    model = Token
    unique = {"secret_hash": lambda t: t.secret_hash}

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
