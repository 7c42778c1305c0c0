"""Optional authentication in front of a route: none, a berth token, or HTTP Basic.

- token: `Authorization: Bearer brt_...`, checked with TokenStore.authenticate; a route asking
  for scope "admin" admits admin tokens only, scope "user" any valid token. Results are cached
  per worker (valid ones for `token_ttl_s`, unknown ones briefly), so a revoked token may work
  for up to that long; the cache is keyed by the secret's SHA-256, never the secret.
- basic: users and their bcrypt or argon2 hashes live in the route. Hashing is slow on
  purpose, so it runs in gevent's thread pool (both libraries release the GIL) and a success
  is remembered for `basic_ttl_s` under an HMAC of the credentials with a per-process key.
  Unknown users cost one hash too, so response times do not reveal who exists.

The proxy removes the Authorization header it consumed before forwarding and tells the
backend who passed in `X-Berth-User`. Credentials never reach a log line or an event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import bcrypt
import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.errors import Unavailable
from app.models import Token
from app.stores.tokens import TokenStore, hash_secret

_argon2 = PasswordHasher()
# A real hash of a random password, verified for unknown users to even out timing.
_DUMMY_BCRYPT = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=10))
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one request: `user` when admitted, else the answer to give."""

    user: str | None = None
    status: int = 200
    challenge: str | None = None  # WWW-Authenticate value for a 401
    reason: str = ""


ADMITTED_ANONYMOUS = Verdict()


def _offload(fn: Callable, *args):
    """Run a CPU-heavy call off the event loop when gevent is running this process."""
    try:
        from gevent import get_hub, monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return fn(*args)
    if not monkey.is_module_patched("threading"):
        return fn(*args)
    return get_hub().threadpool.apply(fn, args)


def verify_password(password: bytes, hashed: str) -> bool:
    try:
        if hashed.startswith("$argon2"):
            return _argon2.verify(hashed, password)
        return bcrypt.checkpw(password, hashed.encode("ascii"))
    except (VerificationError, InvalidHashError, ValueError):
        return False


class RouteAuth:
    def __init__(self, tokens: TokenStore, *, clock: Callable[[], float] = time.monotonic,
                 token_ttl_s: float = 30.0, unknown_ttl_s: float = 5.0,
                 basic_ttl_s: float = 300.0):
        self.tokens = tokens
        self.clock = clock
        self.token_ttl_s = token_ttl_s
        self.unknown_ttl_s = unknown_ttl_s
        self.basic_ttl_s = basic_ttl_s
        self._tokens: dict[str, tuple[Token | None, float]] = {}
        self._basic: dict[bytes, float] = {}
        self._key = secrets.token_bytes(32)

    def check(self, auth: dict, route_id: str, authorization: str | None) -> Verdict:
        kind = auth.get("type", "none")
        if kind == "none":
            return ADMITTED_ANONYMOUS
        if kind == "token":
            return self._check_token(auth.get("scope", "user"), authorization)
        if kind == "basic":
            return self._check_basic(auth.get("users", {}), route_id, authorization)
        return Verdict(status=403, reason="auth_misconfigured")

    # -- berth tokens ------------------------------------------------------------------

    def _check_token(self, scope: str, authorization: str | None) -> Verdict:
        challenge = 'Bearer realm="berth"'
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return Verdict(status=401, challenge=challenge, reason="auth_required")
        try:
            token = self._token(secret.strip())
        except (redis.RedisError, Unavailable):
            return Verdict(status=503, reason="auth_unavailable")
        if token is None:
            return Verdict(status=401, challenge=f'{challenge}, error="invalid_token"',
                           reason="auth_invalid")
        if scope == "admin" and token.scope != "admin":
            return Verdict(status=403, reason="auth_insufficient_scope")
        return Verdict(user=token.owner)

    def _token(self, secret: str) -> Token | None:
        digest = hash_secret(secret)
        now = self.clock()
        cached = self._tokens.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        token = self.tokens.authenticate(secret)
        if len(self._tokens) >= _CACHE_LIMIT:
            self._tokens.clear()
        ttl = self.token_ttl_s if token is not None else self.unknown_ttl_s
        self._tokens[digest] = (token, now + ttl)
        return token

    # -- HTTP Basic --------------------------------------------------------------------

    def _check_basic(self, users: dict, route_id: str, authorization: str | None) -> Verdict:
        denied = Verdict(status=401, challenge='Basic realm="berth", charset="UTF-8"',
                         reason="auth_required")
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return denied
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return denied
        raw_user, colon, password = decoded.partition(b":")
        if not colon:
            return denied
        user = raw_user.decode("utf-8", "replace")
        hashed = users.get(user)
        remembered = hmac.new(self._key, b"\0".join(
            [route_id.encode(), raw_user, password, (hashed or "").encode()]),
            hashlib.sha256).digest()
        now = self.clock()
        if hashed is not None and self._basic.get(remembered, 0.0) > now:
            return Verdict(user=user)
        if hashed is None:
            _offload(bcrypt.checkpw, password, _DUMMY_BCRYPT)
            return Verdict(status=401, challenge=denied.challenge, reason="auth_invalid")
        if not _offload(verify_password, password, hashed):
            return Verdict(status=401, challenge=denied.challenge, reason="auth_invalid")
        if len(self._basic) >= _CACHE_LIMIT:
            self._basic.clear()
        self._basic[remembered] = now + self.basic_ttl_s
        return Verdict(user=user)
