"""/api/v1/services: Docker services - create (202), list, show, logs, lifecycle commands.

Every change is a command: the API records the desired state, enqueues the worker's job with
the request's trace id and answers 202 with the service and that trace id; the service's
lifecycle events (service_created, service_started, service_failed...) carry the same id.
User tokens see and act on their own services only; others' are 404. A hostname another owner
holds is 409; a user's service under BASE_DOMAIN is `<name>.<BASE_DOMAIN>` (app/api/tenancy.py).
While the container engine is unreachable, commands answer 503 and say so; listing and showing
records still work.

    POST   /api/v1/services                       {"name", "image", "port", ...} -> 202
    GET    /api/v1/services                       list (?offset=&limit=)
    GET    /api/v1/services/{name}                the record, its containers and their health
    GET    /api/v1/services/{name}/logs           ?tail=100|all&follow=true&container=NAME
    POST   /api/v1/services/{name}/start          -> 202
    POST   /api/v1/services/{name}/stop           -> 202
    POST   /api/v1/services/{name}/restart        -> 202 (rolling, in place)
    POST   /api/v1/services/{name}/redeploy       {image?, env?, command?, ...} -> 202
    POST   /api/v1/services/{name}/scale          {"replicas": N} -> 202
    DELETE /api/v1/services/{name}                -> 202
"""

from __future__ import annotations

import falcon

from app.api.auth import caller, is_admin, visible_owner
from app.api.params import choice_param, int_param, json_body, no_fields, query, record_id
from app.api.tenancy import Tenancy
from app.errors import Forbidden, Unavailable, ValidationError
from app.models import Service, check_int, check_name
from app.services import ServiceCommands

LIST_PARAMS = ("offset", "limit")
LOGS_PARAMS = ("tail", "follow", "container")
MAX_TAIL, DEFAULT_TAIL = 100_000, 100
FOLLOW_CHOICES = ("true", "false", "1", "0")


def _find(commands: ServiceCommands, req: falcon.Request, name: str) -> Service:
    """The named service if the caller may see it; NotFound (404) otherwise."""
    return commands.store.get(record_id(name, "name"), owner=visible_owner(req))


def _accepted(req: falcon.Request, resp: falcon.Response, svc: Service) -> None:
    resp.status = falcon.HTTP_202
    resp.media = {"service": svc.public(), "trace_id": req.context.trace_id}


class ServicesResource:
    def __init__(self, commands: ServiceCommands, tenancy: Tenancy):
        self.commands = commands
        self.tenancy = tenancy

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = query(req, LIST_PARAMS)
        offset = int_param(params, "offset", 0, 1_000_000, 0)
        limit = int_param(params, "limit", 1, 1000, 100)
        services = self.commands.store.list(owner=visible_owner(req), offset=offset,
                                            limit=limit)
        resp.media = {"items": [s.public() for s in services]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        payload = json_body(req)
        owner = caller(req).owner
        if isinstance(payload, dict) and "owner" in payload:
            payload = dict(payload)
            requested = check_name(payload.pop("owner"), "owner")
            if requested != owner and not is_admin(req):
                raise Forbidden("only an admin token can create services for another owner",
                                field="owner")
            owner = requested
        fields = Service.clean(payload)
        self.tenancy.check_service_hostname(req, fields["id"], fields.get("hostname"), owner)
        svc = self.commands.create(fields, owner)
        _accepted(req, resp, svc)
        resp.location = f"/api/v1/services/{svc.id}"


class ServiceResource:
    def __init__(self, commands: ServiceCommands):
        self.commands = commands

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        query(req)
        svc = _find(self.commands, req, name)
        shown = svc.public()
        try:
            shown["containers"] = self.commands.containers(svc)
        except Unavailable as ex:  # the record is still worth showing
            shown["containers"] = None
            shown["engine_error"] = ex.description
        shown["url"] = f"http://{svc.hostname}/"
        resp.media = shown

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        query(req)
        _accepted(req, resp, self.commands.delete(_find(self.commands, req, name)))


class ServiceActionResource:
    """POST /api/v1/services/{name}/<action>."""

    def __init__(self, commands: ServiceCommands, action: str):
        self.commands = commands
        self.action = action

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        # The body is checked before the lookup: malformed input is a 400 whether or not
        # the service exists.
        query(req)
        body = json_body(req, required=self.action == "scale")
        if self.action == "scale":
            if not isinstance(body, dict) or set(body) != {"replicas"}:
                raise ValidationError("the body must be {\"replicas\": N}", field="replicas")
            replicas = check_int(body["replicas"], "replicas", 1, Service.MAX_REPLICAS)
            svc = self.commands.scale(_find(self.commands, req, name), replicas)
        elif self.action == "redeploy":
            changes = Service.clean(body or {}, allowed=Service.REDEPLOY_FIELDS, partial=True)
            svc = self.commands.redeploy(_find(self.commands, req, name), changes)
        else:
            no_fields(body)
            svc = getattr(self.commands, self.action)(_find(self.commands, req, name))
        _accepted(req, resp, svc)


class ServiceLogsResource:
    """GET /api/v1/services/{name}/logs: plain text; with follow=true, streamed until the
    containers stop or the client goes away."""

    def __init__(self, commands: ServiceCommands):
        self.commands = commands

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        params = query(req, LOGS_PARAMS)
        tail = None if params.get("tail") == "all" else int_param(params, "tail", 0, MAX_TAIL,
                                                                   DEFAULT_TAIL)
        follow = choice_param(params, "follow", FOLLOW_CHOICES) in ("true", "1")
        container = params.get("container")
        if container is not None:
            container = record_id(container, "container")
        svc = _find(self.commands, req, name)
        lines = self.commands.logs(svc, tail=tail, follow=follow, container=container)
        resp.content_type = "text/plain; charset=utf-8"
        resp.set_header("Cache-Control", "no-store")
        if follow:
            resp.set_header("X-Accel-Buffering", "no")
        resp.stream = _Stream(lines)


class _Stream:
    """The WSGI body: iterates the lines; the server calls close() when done or when the
    client disconnects, which stops the engine log readers."""

    def __init__(self, lines):
        self.lines = lines

    def __iter__(self):
        return iter(self.lines)

    def close(self) -> None:
        self.lines.close()


def add_service_routes(app: falcon.App, commands: ServiceCommands, tenancy: Tenancy) -> None:
    """Mount every service route on `app` (called by app.api.app.create_api)."""
    app.add_route("/api/v1/services", ServicesResource(commands, tenancy))
    app.add_route("/api/v1/services/{name}", ServiceResource(commands))
    app.add_route("/api/v1/services/{name}/logs", ServiceLogsResource(commands))
    for action in ("start", "stop", "restart", "redeploy", "scale"):
        app.add_route(f"/api/v1/services/{{name}}/{action}",
                      ServiceActionResource(commands, action))
