"""`berth services create|list|show|logs|scale|redeploy|start|stop|restart|rm`: containers
berth runs and routes to by hostname.

Every change is queued: the API answers at once with the service and a trace id, and a worker
does the Docker work. `--wait` follows that trace's events until the command is done (the
service is healthy and routed, scaled, stopped, deleted...) or failed, and sets the exit
status accordingly; done includes every live proxy worker serving the service's route as
the command left it (see app/cli/waiting.py).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from urllib.parse import quote

from app.choices import RESTART_POLICIES
from app.cli.args import key_value, positive_int
from app.cli.client import ApiClient, Reply
from app.cli.errors import UsageError
from app.cli.output import clean, emit_json, pairs, say, table, when
from app.cli.sse import split_lines
from app.cli.waiting import event_text, follow_command, report_accepted, since, wait_options

SERVICES_PATH = "/api/v1/services"
# The event that ends each command when it worked; service_failed ends any of them.
DONE = {"create": "service_started", "start": "service_started", "restart": "service_started",
        "stop": "service_stopped", "scale": "service_scaled",
        "redeploy": "service_redeployed", "rm": "service_deleted"}
FAILED = {"service_failed"}
FAILURE = {"create": "Service not started", "start": "Service not started",
           "restart": "Service not restarted", "stop": "Service not stopped",
           "scale": "Service not scaled", "redeploy": "Service not redeployed",
           "rm": "Service not deleted"}


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    services = commands.add_parser(
        "services", help="run, scale, redeploy and remove Docker services",
        description="Containers berth runs and routes to at <name>.<BASE_DOMAIN> (or "
                    "--hostname), each change followed by its events with --wait.")
    verbs = services.add_subparsers(dest="verb", metavar="VERB", required=True)
    waiting = wait_options()

    create = verbs.add_parser(
        "create", parents=[common, waiting, _fields(create=True)],
        help="run a new service",
        description="Run IMAGE as a service listening on PORT inside its containers, e.g. "
                    "`berth services create web --image nginx:1.27 --port 80 --wait`.")
    create.add_argument("name", help="the service's name (a-z, 0-9, '-')")
    create.set_defaults(func=create_service)

    verbs.add_parser("list", parents=[common], help="list services").set_defaults(
        func=list_services)
    show = verbs.add_parser("show", parents=[common],
                            help="one service, its containers and their health")
    show.add_argument("name")
    show.set_defaults(func=show_service)

    logs = verbs.add_parser("logs", parents=[common], help="the containers' output",
                            description="Print the output of the service's current "
                                        "containers (each line prefixed with its container "
                                        "when there are several).")
    logs.add_argument("name")
    logs.add_argument("--tail", type=_tail, metavar="N",
                      help="the last N lines of each container, or all (default: 100)")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="keep printing new lines until the containers stop (Ctrl-C stops)")
    logs.add_argument("--container", metavar="NAME", help="only this container")
    logs.set_defaults(func=service_logs)

    scale = verbs.add_parser("scale", parents=[common, waiting],
                             help="run N replicas (zero-downtime)")
    scale.add_argument("name")
    scale.add_argument("replicas", type=positive_int, metavar="N")
    scale.set_defaults(func=act_on_service, action="scale")

    redeploy = verbs.add_parser(
        "redeploy", parents=[common, waiting, _fields(create=False)],
        help="roll out a new revision (zero-downtime)",
        description="Start a new revision with the given changes (none: the same image, "
                    "pulled again), switch traffic once it is healthy, then stop the old one.")
    redeploy.add_argument("name")
    redeploy.set_defaults(func=act_on_service, action="redeploy")

    for verb, help_text in (("start", "start a stopped service"),
                            ("stop", "stop the containers (kept, with their ports)"),
                            ("restart", "restart the containers one at a time"),
                            ("rm", "delete the service: its containers, ports and route")):
        parser = verbs.add_parser(verb, parents=[common, waiting], help=help_text)
        parser.add_argument("name")
        parser.set_defaults(func=act_on_service, action=verb)


def _tail(value: str) -> str:
    if value != "all" and not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of lines or 'all'")
    return value


def _fields(create: bool) -> argparse.ArgumentParser:
    """The service's fields as options; on redeploy all are optional."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("service fields")
    group.add_argument("--image", required=create, metavar="IMAGE",
                       help="the image, e.g. nginx:1.27")
    group.add_argument("--port", type=int, required=create,
                       help="the port the containers listen on")
    group.add_argument("--env", "-e", type=key_value, action="append", default=[],
                       metavar="NAME=VALUE", help="an environment variable; repeat for more"
                       + ("" if create else " (added to the current ones)"))
    if not create:
        group.add_argument("--unset-env", action="append", default=[], metavar="NAME",
                           help="remove an environment variable")
    group.add_argument("--command", metavar="'ARG ...'",
                       help="the command to run instead of the image's, split like a shell")
    group.add_argument("--memory-mb", type=int, metavar="MB", help="memory limit (0: none)")
    group.add_argument("--cpus", type=float, help="CPU limit, e.g. 0.5 (0: none)")
    group.add_argument("--restart-policy", dest="restart", choices=RESTART_POLICIES,
                       help="when the engine restarts a container that exits "
                            "(default: on-failure)")
    group.add_argument("--label", type=key_value, action="append", default=[],
                       metavar="NAME=VALUE", help="a container label; repeat for more")
    group.add_argument("--health-path", metavar="PATH",
                       help="the HTTP path that must answer 2xx/3xx (default: /)")
    group.add_argument("--health-interval", type=positive_int, metavar="SECONDS",
                       help="seconds between health checks (default: 2)")
    group.add_argument("--health-timeout", type=positive_int, metavar="SECONDS",
                       help="seconds a health check may take (default: 2)")
    group.add_argument("--bind", metavar="IP",
                       help="host address the container ports are published on "
                            "(default: 127.0.0.1)")
    if create:
        group.add_argument("--replicas", type=positive_int, help="containers to run "
                                                                 "(default: 1)")
        group.add_argument("--hostname", help="the hostname to route (default: "
                                              "<name>.<BASE_DOMAIN>)")
        group.add_argument("--owner", help="create it for another owner (admin token)")
    return parser


def _path(name: str, action: str = "") -> str:
    return f"{SERVICES_PATH}/{quote(name, safe='')}" + (f"/{action}" if action else "")


def _body(args: argparse.Namespace, current: dict) -> dict:
    """The fields the options give; `current` is the service (for redeploy's env)."""
    body: dict = {}
    for key in ("image", "port", "memory_mb", "cpus", "restart", "bind", "replicas",
                "hostname", "owner"):
        if getattr(args, key, None) is not None:
            body[key] = getattr(args, key)
    if args.command is not None:
        try:
            body["command"] = shlex.split(args.command)
        except ValueError as ex:
            raise UsageError("Invalid options", f"--command: {ex}") from None
    unset = getattr(args, "unset_env", [])
    if args.env or unset:
        env = {**(current.get("env") or {}), **dict(args.env)}
        for name in unset:
            env.pop(name, None)
        body["env"] = env
    if args.label:
        body["labels"] = {**(current.get("labels") or {}), **dict(args.label)}
    health = {"path": args.health_path, "interval_s": args.health_interval,
              "timeout_s": args.health_timeout}
    if any(v is not None for v in health.values()):
        body["health"] = {**(current.get("health") or {}),
                          **{k: v for k, v in health.items() if v is not None}}
    return body


# -- commands ---------------------------------------------------------------------------------


def create_service(args: argparse.Namespace, client: ApiClient) -> int:
    start = since()
    reply = client.post(SERVICES_PATH, {"name": args.name, **_body(args, {})})
    return _accepted(args, client, reply, "create", start)


def act_on_service(args: argparse.Namespace, client: ApiClient) -> int:
    start = since()
    if args.action == "rm":
        reply = client.delete(_path(args.name))
    elif args.action == "scale":
        reply = client.post(_path(args.name, "scale"), {"replicas": args.replicas})
    elif args.action == "redeploy":
        # Options that edit a map (env, labels, health) start from the service's current one.
        edits = (args.env, args.unset_env, args.label, args.health_path, args.health_interval,
                 args.health_timeout)
        current = client.get(_path(args.name)).data if any(edits) else {}
        reply = client.post(_path(args.name, "redeploy"), _body(args, current))
    else:
        reply = client.post(_path(args.name, args.action), None)
    return _accepted(args, client, reply, args.action, start)


def _accepted(args, client: ApiClient, reply: Reply, action: str, start: str) -> int:
    svc, trace_id = reply.data["service"], reply.data.get("trace_id") or reply.trace_id
    if not args.wait:
        report_accepted(args, reply.data, trace_id,
                        f"{action}: accepted for {svc.get('id')} ({svc.get('image')}, "
                        f"{svc.get('replicas')} x port {svc.get('port')}, "
                        f"http://{svc.get('hostname')}/)")
        return 0
    follow_command(client, args, trace_id, stream="service", start=start,
                   done={DONE[action]}, failed=FAILED, failure=FAILURE[action],
                   describe=describe, served="route")
    return 0


def _names(containers: object) -> str:
    if not isinstance(containers, list):
        return ""
    return ", ".join(f"{c.get('name')} (port {c.get('port')})" for c in containers
                     if isinstance(c, dict))


def describe(event: dict) -> str:
    """A service event for people: what it means, not its raw data."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    kind = event.get("type")
    if kind == "service_created":
        detail = f"containers created: {_names(data.get('containers'))}"
    elif kind == "service_started":
        detail = (f"healthy and routed at http://{data.get('hostname')}/: "
                  f"{_names(data.get('containers'))}") if data.get("hostname") else ""
    elif kind == "service_redeployed":
        detail = f"revision {data.get('revision')} ({data.get('image')}) serving"
    elif kind == "service_scaled":
        detail = f"{data.get('replicas')} replicas (were {data.get('previous')})"
    elif kind == "service_stopped":
        detail = f"stopped: {_names(data.get('containers'))}"
    else:
        detail = data.get("error") or ""
    return event_text(event, detail)


def list_services(args: argparse.Namespace, client: ApiClient) -> int:
    reply = client.get(SERVICES_PATH)
    if args.json:
        emit_json(reply.data)
        return 0
    items = reply.data["items"]
    if not items:
        say("no services")
        return 0
    say(table(["NAME", "STATUS", "IMAGE", "REPLICAS", "HOSTNAME", "REVISION", "ERROR"],
              [[s.get("id"), s.get("status"), s.get("image"), s.get("replicas"),
                s.get("hostname"), s.get("revision"), s.get("error") or ""] for s in items]))
    return 0


def show_service(args: argparse.Namespace, client: ApiClient) -> int:
    svc = client.get(_path(args.name)).data
    if args.json:
        emit_json(svc)
        return 0
    health = svc.get("health") or {}
    # Variable values may be secrets: names only here, values with --json.
    env = ", ".join(svc.get("env") or {})
    rows = [
        ("name", svc.get("id")), ("status", svc.get("status")),
        ("error", svc.get("error") or None), ("url", svc.get("url")),
        ("image", svc.get("image")), ("port", svc.get("port")),
        ("replicas", svc.get("replicas")), ("revision", svc.get("revision")),
        ("command", shlex.join(svc.get("command") or []) or None),
        ("env", f"{env} (values: --json)" if env else None),
        ("labels", ", ".join(f"{k}={v}" for k, v in (svc.get("labels") or {}).items())
         or None),
        ("health check", f"GET {health.get('path')} every {health.get('interval_s')}s, "
                         f"timeout {health.get('timeout_s')}s"),
        ("memory", f"{svc['memory_mb']} MB" if svc.get("memory_mb") else "no limit"),
        ("cpus", svc.get("cpus") or "no limit"), ("restart policy", svc.get("restart")),
        ("bind", svc.get("bind")), ("owner", svc.get("owner")),
        ("created", when(svc.get("created_at"))), ("updated", when(svc.get("updated_at"))),
    ]
    say(pairs(rows))
    containers = svc.get("containers")
    if containers is None:
        say(clean(f"\ncontainers: unknown ({svc.get('engine_error') or 'engine unreachable'})"))
    elif not containers:
        say("\ncontainers: none")
    else:
        say("\n" + table(
            ["CONTAINER", "STATE", "REVISION", "REPLICA", "PORT", "HEALTH", "CURRENT"],
            [[c.get("name"), c.get("state"), c.get("revision"), c.get("replica"),
              c.get("port"), _health(c.get("health")), "yes" if c.get("current") else "no"]
             for c in containers]))
    return 0


def _health(check: dict | None) -> str:
    if not check:
        return "-"
    return "healthy" if check.get("healthy") else f"unhealthy: {check.get('error')}"


def service_logs(args: argparse.Namespace, client: ApiClient) -> int:
    params = {"tail": args.tail, "follow": "true" if args.follow else None,
              "container": args.container}
    # Following waits for new lines as long as it takes; otherwise --timeout per read.
    read_timeout = None if args.follow else client.timeout
    with client.stream(_path(args.name, "logs"), params=params, read_timeout=read_timeout,
                       kind="text/plain") as chunks:
        for line in split_lines(chunks):
            sys.stdout.write(clean(line) + "\n")
            sys.stdout.flush()
    return 0
