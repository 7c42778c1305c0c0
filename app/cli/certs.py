"""`berth certs issue|list|show|renew|revoke|convert|rm`: TLS certificates over ACME.

The API answers each change at once with a trace id; `--wait` follows that trace's events
until the certificate is ready (or the attempt failed) and every live proxy worker serves
the certificate index it left, and sets the exit status accordingly.
"""

from __future__ import annotations

import argparse
import time
from urllib.parse import quote

from app.choices import KEY_TYPES
from app.cli.client import ApiClient, Reply
from app.cli.output import ago, emit_json, pairs, say, table, when
from app.cli.waiting import event_text, follow_command, report_accepted, since, wait_options

CERTS_PATH = "/api/v1/certificates"
# Terminal events of each command, and which of them mean success.
DONE = {"issue": {"ready"}, "renew": {"renewed", "ready"}, "revoke": {"revoked"},
        "rm": {"deleted"}, "convert": {"renewed", "ready"}}
FAILED = {"generation_failed", "renewal_failed", "rate_limited", "revocation_failed"}
REASONS = ("unspecified", "keyCompromise", "affiliationChanged", "superseded",
           "cessationOfOperation")


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    certs = commands.add_parser("certs", help="request, renew, revoke and list certificates",
                                description="TLS certificates obtained over ACME (HTTP-01).")
    verbs = certs.add_subparsers(dest="verb", metavar="VERB", required=True)
    waiting = wait_options()

    issue = verbs.add_parser("issue", parents=[common, waiting],
                             help="request a certificate for one or more names")
    issue.add_argument("name", help="the certificate's name (a-z, 0-9, '-')")
    issue.add_argument("--domain", "-d", action="append", required=True, metavar="D",
                       dest="domains", help="a hostname to cover; repeat for more")
    issue.add_argument("--directory", help="production, staging or an ACME directory URL "
                                           "(default: the server's BERTH_ACME_DIRECTORY)")
    issue.add_argument("--key-type", choices=KEY_TYPES,
                       help="default: the server's BERTH_ACME_KEY_TYPE (ec256)")
    issue.set_defaults(func=issue_cert)

    verbs.add_parser("list", parents=[common], help="list certificates").set_defaults(
        func=list_certs)
    show = verbs.add_parser("show", parents=[common], help="one certificate in detail")
    show.add_argument("name")
    show.add_argument("--pem", action="store_true", help="print the PEM chain only")
    show.set_defaults(func=show_cert)

    for verb, help_text in (("renew", "renew now, whatever the schedule"),
                            ("convert", "replace a staging certificate with a production one"),
                            ("rm", "delete a certificate (it is not revoked)")):
        parser = verbs.add_parser(verb, parents=[common, waiting], help=help_text)
        parser.add_argument("name")
        parser.set_defaults(func=act_on_cert, action=verb)
    revoke = verbs.add_parser("revoke", parents=[common, waiting],
                              help="revoke the certificate at the CA")
    revoke.add_argument("name")
    revoke.add_argument("--reason", choices=REASONS, default="unspecified")
    revoke.set_defaults(func=act_on_cert, action="revoke")


def _path(name: str) -> str:
    return f"{CERTS_PATH}/{quote(name, safe='')}"


def issue_cert(args: argparse.Namespace, client: ApiClient) -> int:
    body: dict = {"name": args.name, "domains": args.domains}
    if args.directory:
        body["directory"] = args.directory
    if args.key_type:
        body["key_type"] = args.key_type
    start = since()
    reply = client.post(CERTS_PATH, body)
    return _accepted(args, client, reply, "issue", start)


def act_on_cert(args: argparse.Namespace, client: ApiClient) -> int:
    start = since()
    if args.action == "rm":
        reply = client.delete(_path(args.name))
    elif args.action == "revoke":
        reply = client.post(f"{_path(args.name)}/revoke", {"reason": args.reason})
    elif args.action == "convert":
        reply = client.post(f"{_path(args.name)}/convert-to-production", None)
    else:
        reply = client.post(f"{_path(args.name)}/renew", None)
    return _accepted(args, client, reply, args.action, start)


def _accepted(args, client: ApiClient, reply: Reply, action: str, start: str) -> int:
    cert, trace_id = reply.data["certificate"], reply.data.get("trace_id") or reply.trace_id
    if not args.wait:
        report_accepted(args, reply.data, trace_id, f"{action}: accepted for {cert['id']} "
                                                    f"({', '.join(cert.get('domains') or [])})")
        return 0
    follow_command(client, args, trace_id, stream="certificate", start=start,
                   done=DONE[action], failed=FAILED,
                   failure="Certificate not obtained" if action != "rm" else "Not deleted",
                   describe=_describe, served="certificate")
    return 0


def _describe(event: dict) -> str:
    data = event.get("data") or {}
    return event_text(event, data.get("error") or data.get("reason") or "")


def list_certs(args: argparse.Namespace, client: ApiClient) -> int:
    reply = client.get(CERTS_PATH)
    if args.json:
        emit_json(reply.data)
        return 0
    items = reply.data["items"]
    if not items:
        say("no certificates")
        return 0
    say(table(["NAME", "STATUS", "DOMAINS", "EXPIRES", "RENEWS", "LAST ERROR"],
              [[c.get("id"), c.get("status"), ", ".join(c.get("domains") or []),
                when(c.get("not_after") or None),
                when((c.get("renewal") or {}).get("renew_after")),
                c.get("last_error") or ""] for c in items]))
    return 0


def show_cert(args: argparse.Namespace, client: ApiClient) -> int:
    cert = client.get(_path(args.name)).data
    if args.pem:
        print(cert.get("cert_pem") or "", end="")
        return 0
    if args.json:
        emit_json(cert)
        return 0
    renewal = cert.get("renewal") or {}
    backoff = cert.get("backoff") or {}
    rows = [
        ("name", cert.get("id")), ("status", cert.get("status")),
        ("domains", ", ".join(cert.get("domains") or [])), ("owner", cert.get("owner")),
        ("directory", cert.get("directory")), ("key type", cert.get("key_type")),
        ("serial", cert.get("serial") or None),
        ("valid from", when(cert.get("not_before") or None)),
        ("expires", when(cert.get("not_after") or None)),
        ("renews after", when(renewal.get("renew_after"))),
        ("renewal policy", renewal.get("source")),
        ("renewal in progress", "yes" if renewal.get("in_progress") else "no"),
        ("backoff until", when(backoff.get("until")) if backoff else None),
        ("backoff reason", backoff.get("reason") if backoff else None),
        ("last error", cert.get("last_error") or None),
        ("last error at", ago(time.time() - cert["last_error_at"])
         if cert.get("last_error_at") else None),
    ]
    say(pairs(rows))
    return 0
