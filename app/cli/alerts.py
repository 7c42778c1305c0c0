"""`berth alerts [--all]` and `berth alerts ack ID`: the alerts the consumer raised."""

from __future__ import annotations

import argparse
from urllib.parse import quote

from app.cli.client import ApiClient
from app.cli.output import clean, emit_json, say, stamp, table

ALERTS_PATH = "/api/v1/orchestrator/alerts"


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    alerts = commands.add_parser(
        "alerts", parents=[common], help="active alerts (--all: with the resolved ones); ack",
        description="List the active alerts, or with --all the recent ones including resolved; "
                    "`berth alerts ack ID` acknowledges one (admin token).")
    alerts.add_argument("--all", action="store_true", help="include resolved alerts (history)")
    alerts.set_defaults(func=list_alerts)
    verbs = alerts.add_subparsers(dest="verb", metavar="VERB")
    ack = verbs.add_parser("ack", parents=[common], help="acknowledge an alert by its id")
    ack.add_argument("id", help="the alert id (al_...), as shown by `berth alerts`")
    ack.set_defaults(func=ack_alert)


def list_alerts(args: argparse.Namespace, client: ApiClient) -> int:
    state = "all" if args.all else "active"
    reply = client.get(ALERTS_PATH, {"state": state})
    if args.json:
        emit_json(reply.data)
        return 0
    items = reply.data["items"]
    if not items:
        say("no active alerts" if state == "active" else "no alerts")
        return 0
    say(table(["ID", "SEVERITY", "RULE", "SUBJECT", "STATE", "FIRED", "MESSAGE"],
              [[a.get("id"), a.get("severity"), a.get("rule"), a.get("subject"), _state(a),
                stamp(a.get("fired_at"), date=True)[:19], a.get("message")] for a in items]))
    return 0


def _state(alert: dict) -> str:
    if alert.get("state") == "firing" and alert.get("acknowledged_at"):
        return "firing (acked)"
    return alert.get("state") or "-"


def ack_alert(args: argparse.Namespace, client: ApiClient) -> int:
    reply = client.post(f"{ALERTS_PATH}/{quote(args.id, safe='')}/ack", {})
    if args.json:
        emit_json(reply.data)
    else:
        alert = reply.data
        say(clean(f"acknowledged {alert.get('id')}: {alert.get('rule')} {alert.get('subject')} "
                  f"({alert.get('state')})"))
    return 0
