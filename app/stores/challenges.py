"""ACME HTTP-01 challenge responses: written by the ACME worker, read by every proxy."""

from __future__ import annotations

import re

import redis

from app import redis as keys
from app.errors import ValidationError
from app.redis_errors import raise_unavailable

# RFC 8555 tokens are base64url without padding; anything else is never looked up.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


def valid_token(token: str) -> bool:
    return bool(TOKEN_RE.fullmatch(token))


class ChallengeStore:
    def __init__(self, client: redis.Redis):
        self.client = client

    def put(self, token: str, key_authorization: str, ttl_s: int = 3600) -> None:
        if not valid_token(token):
            raise ValidationError("invalid ACME challenge token", field="token")
        try:
            self.client.set(keys.acme_challenge(token), key_authorization, ex=ttl_s)
        except redis.RedisError as ex:
            raise_unavailable(ex)  # Redis unreachable or refusing: 503
            raise

    def get(self, token: str) -> str | None:
        """The key authorization for a token, None when unknown or not a valid token."""
        if not valid_token(token):
            return None
        return self.client.get(keys.acme_challenge(token))

    def delete(self, token: str) -> None:
        if valid_token(token):
            self.client.delete(keys.acme_challenge(token))
