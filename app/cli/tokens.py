"""`berth tokens create|list|revoke`: API credentials. A secret is shown once, at creation."""

from __future__ import annotations

import argparse
from urllib.parse import quote

from app.choices import SCOPES
from app.cli.client import ApiClient
from app.cli.output import clean, emit_json, say, table, when

TOKENS_PATH = "/api/v1/tokens"


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tokens = commands.add_parser("tokens", help="create, list and revoke API tokens",
                                 description="Manage the API's tokens.")
    verbs = tokens.add_subparsers(dest="verb", metavar="VERB", required=True)

    create = verbs.add_parser("create", parents=[common], help="create a token, print its secret",
                              description="Create a token and print its secret, once.")
    create.add_argument("name", help="a name to recognise the token by")
    create.add_argument("--scope", choices=SCOPES, default="user",
                        help="the token's scope (default: user)")
    create.add_argument("--owner", help="who the token's resources belong to "
                                        "(default: decided by the API)")
    create.set_defaults(func=create_token)

    listing = verbs.add_parser("list", parents=[common], help="list tokens (never secrets)")
    listing.set_defaults(func=list_tokens)

    revoke = verbs.add_parser("revoke", parents=[common], help="revoke a token by its id")
    revoke.add_argument("id", help="the token id (tok_...), as shown by `berth tokens list`")
    revoke.set_defaults(func=revoke_token)


def create_token(args: argparse.Namespace, client: ApiClient) -> int:
    body = {"name": args.name, "scope": args.scope}
    if args.owner is not None:
        body["owner"] = args.owner
    reply = client.post(TOKENS_PATH, body)
    if args.json:
        emit_json(reply.data)
        return 0
    token, secret = reply.data["token"], reply.data["secret"]
    say(clean(f"created token {token.get('id')} {token.get('name')!r} "
              f"(scope {token.get('scope')}, owner {token.get('owner')})"))
    say(clean(f"secret: {secret}"))
    say("This secret is shown once and cannot be retrieved again: store it now.")
    say(f"trace: {reply.trace_id}")
    return 0


def list_tokens(args: argparse.Namespace, client: ApiClient) -> int:
    reply = client.get(TOKENS_PATH)
    if args.json:
        emit_json(reply.data)
        return 0
    items = reply.data["items"]
    if not items:
        say("no tokens")
        return 0
    say(table(["ID", "NAME", "SCOPE", "OWNER", "CREATED"],
              [[t.get("id"), t.get("name"), t.get("scope"), t.get("owner"),
                when(t.get("created_at"))] for t in items]))
    return 0


def revoke_token(args: argparse.Namespace, client: ApiClient) -> int:
    reply = client.delete(f"{TOKENS_PATH}/{quote(args.id, safe='')}")
    if args.json:
        emit_json({"id": args.id, "revoked": True, "trace_id": reply.trace_id})
    else:
        say(clean(f"revoked token {args.id}"))
        say(f"trace: {reply.trace_id}")
    return 0
