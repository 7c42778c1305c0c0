"""/api/v1/tokens: create (the secret is shown once), list, revoke.

Who may see, create and revoke which tokens is decided in app/api/tenancy.py.
"""

from __future__ import annotations

import falcon

from app.api import tenancy
from app.api.auth import caller, visible_owner
from app.api.params import json_body, query, record_id
from app.events import Publisher
from app.models import Token
from app.stores.tokens import TokenStore

SOURCE = "api"


class TokensResource:
    def __init__(self, store: TokenStore, publisher: Publisher | None = None):
        self.store = store
        self.publisher = publisher

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        tokens = tenancy.visible_tokens(req, self.store.list(owner=visible_owner(req)))
        resp.media = {"items": [t.public() for t in tokens]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        fields = Token.clean(json_body(req))
        me = caller(req)
        tenancy.check_token_scope(req, fields)
        owner = tenancy.new_token_owner(req, fields)
        token, secret = self.store.issue(name=fields["name"], scope=fields["scope"], owner=owner)
        if self.publisher is not None:
            self.publisher.emit("system", "token_created", SOURCE, token.id,
                                {"owner": token.owner, "scope": token.scope, "name": token.name,
                                 "by": me.id})
        resp.status = falcon.HTTP_201
        resp.set_header("Cache-Control", "no-store")
        resp.media = {"token": token.public(), "secret": secret}


class TokenResource:
    def __init__(self, store: TokenStore, publisher: Publisher | None = None):
        self.store = store
        self.publisher = publisher

    def on_delete(self, req: falcon.Request, resp: falcon.Response, token_id: str) -> None:
        query(req)
        token_id = record_id(token_id, "token_id")
        token = self.store.get(token_id, owner=visible_owner(req))
        tenancy.check_revoke(req, token)
        self.store.delete(token.id)  # Conflict (409) for the last admin token
        if self.publisher is not None:
            self.publisher.emit("system", "token_revoked", SOURCE, token.id,
                                {"owner": token.owner, "scope": token.scope, "name": token.name,
                                 "by": caller(req).id})
        resp.status = falcon.HTTP_204
