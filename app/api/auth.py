"""Bearer-token authentication and the two scopes.

`Authorization: Bearer <secret>` is checked with TokenStore.authenticate (SHA-256 lookup plus a
constant-time comparison); the Token lands in `req.context.token`. A resource opts out with the
class attribute `auth_required = False` (/healthz, /openapi.json); requests that match no route
get their 404 without authentication.

Scopes: "admin" sees and changes everything; "user" sees only records whose owner is the
token's owner; those of others are reported NotFound (404), never Forbidden, so a user token
cannot probe for other owners' ids. Admin-only actions answer 403 to user tokens.
"""

from __future__ import annotations

import falcon

from app.errors import Forbidden, Unauthorized
from app.models import Token
from app.stores.tokens import TokenStore


class AuthMiddleware:
    def __init__(self, tokens: TokenStore):
        self.tokens = tokens

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource,
                         params) -> None:
        req.context.token = None
        if resource is None or not getattr(resource, "auth_required", True):
            return
        header = req.get_header("Authorization")
        if not header:
            raise Unauthorized("send an API token as 'Authorization: Bearer <token>'")
        scheme, _, secret = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        token = self.tokens.authenticate(secret.strip())
        if token is None:
            raise Unauthorized("the token is unknown or has been revoked")
        req.context.token = token


def caller(req: falcon.Request) -> Token:
    return req.context.token


def is_admin(req: falcon.Request) -> bool:
    return caller(req).scope == "admin"


def require_admin(req: falcon.Request, action: str) -> None:
    if not is_admin(req):
        raise Forbidden(f"{action} needs an admin token")


def visible_owner(req: falcon.Request) -> str | None:
    """The owner a listing or lookup is restricted to: None (everything) for admin tokens."""
    return None if is_admin(req) else caller(req).owner
