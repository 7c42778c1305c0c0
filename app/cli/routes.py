"""`berth routes add|list|show|update|rm`: which hostnames (and paths) the proxy sends where.

A route is named by its id (rt_...) or by `HOST[/PATH]` (its host and path prefix). `update`
and `rm` send the version of the route they read, or the one given with --if-version, so a
change made meanwhile by someone else is refused (409) instead of silently overwritten.

The API stores a change at once; the proxy workers load it moments later. `--wait` returns
only once every live proxy worker serves it (app/cli/served.py), and exits 1 naming the
workers that do not within --wait-timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from urllib.parse import quote

from app.choices import SCOPES
from app.cli.args import key_value, positive_float, size
from app.cli.client import ApiClient
from app.cli.errors import ApiError, UsageError
from app.cli.output import clean, emit_json, pairs, say, table, when
from app.cli.served import SERVED_TIMEOUT_S
from app.cli.waiting import wait_until_served
from app.errors import ValidationError

ROUTES_PATH = "/api/v1/routes"
ROUTE_ID = re.compile(r"^rt_[0-9a-f]{12}$")
REDIRECTS = ("auto", "always", "never")
AUTH_TYPES = ("none", "token", "basic")
FLAGS = (("strip_prefix", "remove the path prefix before forwarding"),
         ("preserve_host", "forward the client's Host header instead of the target's"),
         ("hsts", "send Strict-Transport-Security over HTTPS"),
         ("auto_certificate", "obtain a certificate for the host automatically"))


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    routes = commands.add_parser(
        "routes", help="add, list, show, update and remove proxy routes",
        description="Proxy routes: traffic for a host (exact or *.domain) under a path prefix "
                    "goes to one or more targets. ROUTE is a route id (rt_...) or HOST[/PATH].")
    verbs = routes.add_subparsers(dest="verb", metavar="VERB", required=True)

    waiting = _wait_options()
    add = verbs.add_parser("add", parents=[common, waiting, _options(update=False)],
                           help="add a route",
                           description="Add a route, e.g. `berth routes add shop.example.com "
                                       "--target http://127.0.0.1:9000`.")
    add.add_argument("route", metavar="HOST[/PATH]",
                     help="the hostname (or *.domain), optionally with a path prefix")
    add.set_defaults(func=add_route)

    verbs.add_parser("list", parents=[common], help="list routes").set_defaults(
        func=list_routes)
    show = verbs.add_parser("show", parents=[common], help="one route in detail")
    show.add_argument("route", metavar="ROUTE")
    show.set_defaults(func=show_route)

    update = verbs.add_parser(
        "update", parents=[common, waiting, _options(update=True)], help="change a route",
        description="Change the given fields of a route; the others keep their values.")
    update.add_argument("route", metavar="ROUTE")
    update.set_defaults(func=update_route)

    rm = verbs.add_parser("rm", parents=[common, waiting, _version_option()],
                          help="remove a route")
    rm.add_argument("route", metavar="ROUTE")
    rm.set_defaults(func=remove_route)


def _wait_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--wait", action="store_true",
                        help="return once every proxy worker serves the change")
    parser.add_argument("--wait-timeout", type=positive_float, default=SERVED_TIMEOUT_S,
                        metavar="SECONDS", help="with --wait: fail (exit 1) when a proxy "
                        f"worker does not serve it within SECONDS (default: {SERVED_TIMEOUT_S:g})")
    return parser


def _version_option() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--if-version", type=int, metavar="N",
                        help="only if the route is still at version N (default: the version "
                             "just read)")
    return parser


def _user_hash(value: str) -> tuple[str, str]:
    name, sep, hashed = value.partition(":")
    if not sep or not name or not hashed:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not NAME:HASH (a bcrypt or argon2 hash, e.g. from htpasswd -nbB)")
    return name, hashed


def _options(update: bool) -> argparse.ArgumentParser:
    """The route's fields as options; on `update` every one is optional and unset ones are
    left alone."""
    parser = _version_option() if update else argparse.ArgumentParser(add_help=False)
    parser.add_argument("--override", action="store_true",
                        help="admin tokens only: route the host even though another owner "
                             "holds it or it is reserved for a service under BASE_DOMAIN")
    group = parser.add_argument_group("route fields")
    if update:
        group.add_argument("--host", metavar="HOST[/PATH]",
                           help="move the route to another host (and path prefix)")
    group.add_argument("--target", "-t", action="append", dest="targets", metavar="URL",
                       required=not update,
                       help="a backend URL such as http://127.0.0.1:9000; repeat for more"
                            + (" (replaces the list)" if update else ""))
    if update:
        group.add_argument("--add-target", action="append", default=[], metavar="URL",
                           help="add a backend to the list")
        group.add_argument("--rm-target", action="append", default=[], metavar="URL",
                           help="remove a backend from the list")
    for flag, help_text in FLAGS:
        group.add_argument(f"--{flag.replace('_', '-')}", dest=flag,
                           action=argparse.BooleanOptionalAction, help=help_text)
    group.add_argument("--https-redirect", choices=REDIRECTS,
                       help="redirect plain HTTP to HTTPS: auto (when a certificate covers "
                            "the host), always or never")
    group.add_argument("--max-body", type=size, metavar="SIZE",
                       help="largest request body, e.g. 10M (0: no limit)")
    for side in ("request", "response"):
        prefix = "" if side == "request" else "response-"
        group.add_argument(f"--set-{prefix}header", type=key_value, action="append",
                           default=[], dest=f"set_{side}", metavar="NAME=VALUE",
                           help=f"set a header on the {side}")
        group.add_argument(f"--del-{prefix}header", action="append", default=[],
                           dest=f"del_{side}", metavar="NAME",
                           help=f"remove a header from the {side}")
        if update:
            group.add_argument(f"--unset-{prefix}header", action="append", default=[],
                               dest=f"unset_{side}", metavar="NAME",
                               help=f"forget the route's rule for this {side} header")
    group.add_argument("--auth", choices=AUTH_TYPES,
                       help="who may use the route: anyone, a berth token, or basic auth")
    group.add_argument("--auth-scope", choices=SCOPES,
                       help="with --auth token: the scope the token needs (default: user)")
    group.add_argument("--auth-user", type=_user_hash, action="append", default=[],
                       metavar="NAME:HASH",
                       help="with --auth basic: a user and its bcrypt or argon2 hash; "
                            "repeat for more (all users, also on update)")
    return parser


# -- naming a route ------------------------------------------------------------------------


def split_route(value: str) -> tuple[str, str | None]:
    """`HOST[/PATH]` -> (host, "/PATH" or None); the host IDNA-normalised when valid."""
    from app.models import check_hostname  # here: the other commands start without the models

    host, sep, path = value.partition("/")
    with contextlib.suppress(ValidationError):  # else the API names what is wrong with it
        host = check_hostname(host, "host", wildcard=True)
    return host, ("/" + path if sep else None)


def _path(route_id: str) -> str:
    return f"{ROUTES_PATH}/{quote(route_id, safe='')}"


def find_route(client: ApiClient, ref: str) -> dict:
    """The route named by its id or by HOST[/PATH]; one line when none or several match."""
    if ROUTE_ID.match(ref):
        return client.get(_path(ref)).data
    host, path = split_route(ref)
    matches = [r for r in client.get(ROUTES_PATH).data["items"]
               if r.get("host") == host and path in (None, r.get("path_prefix"))]
    if not matches:
        raise ApiError("Not found", f"no route for {ref}", status=404)
    if len(matches) > 1:
        paths = ", ".join(sorted(r.get("path_prefix") or "/" for r in matches))
        raise UsageError("Several routes match",
                         f"{host} has routes for {paths}: give HOST/PATH or the route id")
    return matches[0]


# -- the request body from the options ---------------------------------------------------------


def _header_rules(args: argparse.Namespace, side: str, current: dict) -> dict | None:
    """The header rules after the options, or None when no option touches them."""
    sets, dels = getattr(args, f"set_{side}"), getattr(args, f"del_{side}")
    unsets = getattr(args, f"unset_{side}", [])
    if not (sets or dels or unsets):
        return None
    rules = dict(current)
    for name in unsets:
        rules.pop(name, None)
    rules.update({name: None for name in dels})
    rules.update(dict(sets))
    return rules


def _changes(args: argparse.Namespace, current: dict) -> dict:
    """The route fields the options give (on add, `current` is empty)."""
    body: dict = {}
    if getattr(args, "host", None):
        body["host"], path = split_route(args.host)
        if path is not None:
            body["path_prefix"] = path
    targets = list(args.targets or current.get("targets") or [])
    for url in getattr(args, "add_target", []):
        if url not in targets:
            targets.append(url)
    for url in getattr(args, "rm_target", []):
        if url not in targets:
            raise UsageError("Invalid options", f"--rm-target {url}: the route has no such "
                                                "target")
        targets.remove(url)
    if args.targets or getattr(args, "add_target", []) or getattr(args, "rm_target", []):
        body["targets"] = targets
    for flag, _help in FLAGS:
        if getattr(args, flag) is not None:
            body[flag] = getattr(args, flag)
    if args.https_redirect:
        body["https_redirect"] = args.https_redirect
    if args.max_body is not None:
        body["max_body_bytes"] = args.max_body
    for side in ("request", "response"):
        rules = _header_rules(args, side, current.get(f"{side}_headers") or {})
        if rules is not None:
            body[f"{side}_headers"] = rules
    auth = _auth(args)
    if auth is not None:
        body["auth"] = auth
    return body


def _auth(args: argparse.Namespace) -> dict | None:
    kind = args.auth or ("basic" if args.auth_user else "token" if args.auth_scope else None)
    if kind is None:
        return None
    if args.auth_scope and kind != "token":
        raise UsageError("Invalid options", "--auth-scope goes with --auth token")
    if args.auth_user and kind != "basic":
        raise UsageError("Invalid options", "--auth-user goes with --auth basic")
    if kind == "token":
        return {"type": "token", "scope": args.auth_scope or "user"}
    if kind == "basic":
        return {"type": "basic", "users": dict(args.auth_user)}
    return {"type": "none"}


# -- commands ---------------------------------------------------------------------------------


def _override(args: argparse.Namespace) -> dict[str, str] | None:
    return {"override": "true"} if args.override else None


def add_route(args: argparse.Namespace, client: ApiClient) -> int:
    host, path = split_route(args.route)
    body = {"host": host, **_changes(args, {})}
    if path is not None:
        body["path_prefix"] = path
    reply = client.request("POST", ROUTES_PATH, body=body, params=_override(args))
    return _done(args, client, "added", reply.data, reply.trace_id)


def update_route(args: argparse.Namespace, client: ApiClient) -> int:
    route = find_route(client, args.route)
    changes = _changes(args, route)
    if not changes:
        raise UsageError("Nothing to change", "give the fields to change, e.g. --target URL")
    version = route["version"] if args.if_version is None else args.if_version
    reply = client.request("PATCH", _path(route["id"]), body={"version": version, **changes},
                           params=_override(args))
    return _done(args, client, "updated", reply.data, reply.trace_id)


def remove_route(args: argparse.Namespace, client: ApiClient) -> int:
    route = find_route(client, args.route)
    version = route["version"] if args.if_version is None else args.if_version
    reply = client.delete(_path(route["id"]), {"version": version})

    def show() -> None:
        if args.json:
            emit_json({"id": route["id"], "removed": True, "trace_id": reply.trace_id})
        else:
            say(clean(f"removed route {route['id']} ({_where(route)})"))
            say(f"trace: {reply.trace_id}")

    return _served(args, client, show)


def _done(args: argparse.Namespace, client: ApiClient, verb: str, route: dict,
          trace_id: str) -> int:
    def show() -> None:
        if args.json:
            emit_json(route)
        else:
            say(clean(f"{verb} route {route.get('id')}: {_where(route)} -> "
                      f"{', '.join(route.get('targets') or [])} "
                      f"(version {route.get('version')})"))
            say(f"trace: {trace_id}")

    return _served(args, client, show)


def _served(args: argparse.Namespace, client: ApiClient, show) -> int:
    """`show()` the stored change; with --wait, once every proxy worker serves it (and
    also when one does not: the change is stored, and the error says who lags)."""
    try:
        if args.wait:
            wait_until_served(client, "route", timeout=args.wait_timeout)
    finally:
        show()
    return 0


def _where(route: dict) -> str:
    path = route.get("path_prefix") or "/"
    return f"{route.get('host')}{'' if path == '/' else path}"


def list_routes(args: argparse.Namespace, client: ApiClient) -> int:
    reply = client.get(ROUTES_PATH)
    if args.json:
        emit_json(reply.data)
        return 0
    items = reply.data["items"]
    if not items:
        say("no routes")
        return 0
    say(table(["ID", "HOST", "PATH", "TARGETS", "AUTH", "SERVICE", "VERSION"],
              [[r.get("id"), r.get("host"), r.get("path_prefix"),
                ", ".join(r.get("targets") or []), (r.get("auth") or {}).get("type"),
                r.get("service") or "-", r.get("version")] for r in items]))
    return 0


def _rules(rules: dict | None) -> str | None:
    if not rules:
        return None
    return ", ".join(f"{k}={v}" if v is not None else f"-{k}" for k, v in rules.items())


def _auth_text(auth: dict) -> str:
    kind = auth.get("type") or "none"
    if kind == "token":
        return f"token (scope {auth.get('scope')})"
    if kind == "basic":
        return f"basic ({', '.join(auth.get('users') or [])})"
    return kind


def show_route(args: argparse.Namespace, client: ApiClient) -> int:
    route = find_route(client, args.route)
    if args.json:
        emit_json(route)
        return 0

    def yes(flag: str) -> str:
        return "yes" if route.get(flag) else "no"

    rows = [
        ("id", route.get("id")), ("host", route.get("host")),
        ("path prefix", route.get("path_prefix")),
        ("targets", ", ".join(route.get("targets") or [])),
        ("strip prefix", yes("strip_prefix")), ("preserve host", yes("preserve_host")),
        ("request headers", _rules(route.get("request_headers"))),
        ("response headers", _rules(route.get("response_headers"))),
        ("https redirect", route.get("https_redirect")), ("hsts", yes("hsts")),
        ("auto certificate", yes("auto_certificate")),
        ("auth", _auth_text(route.get("auth") or {})),
        ("max body bytes", route.get("max_body_bytes") or "no limit"),
        ("service", route.get("service") or None), ("owner", route.get("owner")),
        ("version", route.get("version")),
        ("created", when(route.get("created_at"))), ("updated", when(route.get("updated_at"))),
    ]
    say(pairs(rows))
    return 0
