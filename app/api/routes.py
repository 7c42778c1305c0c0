"""/api/v1/routes: the proxy's routes (create, list, show, update, delete).

A change is visible to every proxy worker within moments: the store bumps the route table
version and announces it on pub/sub (see proxy/route_cache.py). User tokens see and change
their own routes only; others' are 404. Updates and deletes are checked against `version`,
so two editors cannot silently overwrite each other (409 on a stale version).

    POST   /api/v1/routes               {"host", "targets", ...}          -> 201 the route
    GET    /api/v1/routes               list
    GET    /api/v1/routes/{route_id}    one
    PATCH  /api/v1/routes/{route_id}    {"version": n, <changed fields>}  -> the route
    DELETE /api/v1/routes/{route_id}    ?version=n (optional)             -> 204

Tenancy (app/api/tenancy.py): a host another owner holds is 409, a name under BASE_DOMAIN
that is not the caller's service 403, a user's target the policy refuses 403; POST and PATCH
take `?override=true` from admin tokens to route a host regardless of its claims.

Basic-auth password hashes are never shown: a route's `auth.users` lists the user names.
Events on `events:route:stream`: route_created, route_updated, route_deleted.

With `auto_certificate`, creating or updating a route also gets its host a certificate:
one of the owner's that covers the host already, else a new one (`auto-<host>`) whose
issuance is enqueued under the request's trace id. It is asked for before the route is
written, so a certificate that cannot be had (409) leaves the route as it was, and a route
write refused after that leaves a certificate that the retry reuses. Wildcard hosts are
refused (400): HTTP-01, the only challenge berth answers, cannot validate them.
"""

from __future__ import annotations

import falcon

from app.api.auth import caller, visible_owner
from app.api.params import int_param, json_body, query, record_id
from app.api.tenancy import Tenancy
from app.certificates import CertificateCommands
from app.errors import Conflict, ValidationError
from app.events import Publisher
from app.models import Route, check_int
from app.stores.routes import RouteStore, route_key

SOURCE = "api"
MAX_VERSION = 1 << 53


def view(route: Route) -> dict:
    shown = route.public()
    if route.auth.get("type") == "basic":
        shown["auth"] = {"type": "basic", "users": sorted(route.auth.get("users", {}))}
    return shown


def _summary(route: Route, by: str) -> dict:
    """Event data: what changed, never credentials (auth is reduced to its type)."""
    return {"host": route.host, "path_prefix": route.path_prefix, "targets": list(route.targets),
            "owner": route.owner, "version": route.version,
            "auth": route.auth.get("type", "none"), "by": by}


class _Routes:
    def __init__(self, store: RouteStore, publisher: Publisher | None,
                 certificates: CertificateCommands, tenancy: Tenancy):
        self.store = store
        self.publisher = publisher
        self.certificates = certificates
        self.tenancy = tenancy

    def _emit(self, kind: str, route: Route, req: falcon.Request,
              certificate: str | None = None) -> None:
        if self.publisher is not None:
            data = _summary(route, caller(req).id)
            if certificate:
                data["certificate"] = certificate
            self.publisher.emit("route", kind, SOURCE, route.id, data)

    def _certificate(self, route: Route, both_sent: bool = True) -> str | None:
        """The name of the certificate serving the route's host, when it asks for one."""
        if not route.auto_certificate:
            return None
        if route.host.startswith("*."):
            why = (f"auto_certificate cannot be used with the wildcard host {route.host}: "
                   "ACME HTTP-01 cannot validate wildcard names; give the route an exact host")
            # Both in one request: the request is invalid (the document says so too); a
            # PATCH sending one of them conflicts with the other, stored.
            raise (ValidationError if both_sent else Conflict)(why, field="auto_certificate")
        # The store would refuse a host and path routed already; refuse it before a
        # certificate is asked for on behalf of a route that will not exist.
        holder = self.store.lookup("host_path", route_key(route))
        if holder is not None and holder != route.id:
            # The tenancy check came first, so the holder is the caller's owner's (or an
            # admin is overriding); its id is still not named: it may be another owner's.
            raise Conflict(f"{route.host} {route.path_prefix} is already routed by another "
                           "route", field="host")
        return self.certificates.for_route_host(route.host, route.owner).id

    def _find(self, req: falcon.Request, route_id: str) -> Route:
        """The route if the caller may see it; NotFound (404) otherwise."""
        return self.store.get(record_id(route_id, "route_id"), owner=visible_owner(req))


class RoutesResource(_Routes):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        resp.media = {"items": [view(r) for r in self.store.list(owner=visible_owner(req))]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        override = self.tenancy.override(req, query(req, ("override",)))
        payload = json_body(req)
        if isinstance(payload, dict) and "version" in payload:
            raise ValidationError("version is set by the server", field="version")
        route = RouteStore.new(caller(req).owner, Route.clean(payload))
        route = self.tenancy.check_route(req, route, override=override)
        certificate = self._certificate(route)
        route = self.store.create(route, override=override)
        self._emit("route_created", route, req, certificate)
        resp.status = falcon.HTTP_201
        resp.location = f"/api/v1/routes/{route.id}"
        resp.media = view(route)


class RouteResource(_Routes):
    def on_get(self, req: falcon.Request, resp: falcon.Response, route_id: str) -> None:
        query(req)
        resp.media = view(self._find(req, route_id))

    def on_patch(self, req: falcon.Request, resp: falcon.Response, route_id: str) -> None:
        override = self.tenancy.override(req, query(req, ("override",)))
        payload = json_body(req)
        if not isinstance(payload, dict) or "version" not in payload:
            raise ValidationError("version is required: the version of the route you changed",
                                  field="version")
        version = check_int(payload["version"], "version", 1, MAX_VERSION)
        changes = Route.clean(payload, partial=True)
        if not changes:
            raise ValidationError("nothing to change: send the fields to update")
        found = self._find(req, route_id)
        route = self.tenancy.check_route(req, found.replace(**changes), override=override,
                                         host_changed=changes.get("host", found.host)
                                         != found.host)
        certificate = self._certificate(
            route, both_sent="host" in changes and "auto_certificate" in changes)
        updated = self.store.update(route, expected_version=version, override=override)
        self._emit("route_updated", updated, req, certificate)
        resp.media = view(updated)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, route_id: str) -> None:
        params = query(req, ("version",))
        version = int_param(params, "version", 1, MAX_VERSION, 0) or None
        route = self._find(req, route_id)
        deleted = self.store.delete(route.id, expected_version=version)
        self._emit("route_deleted", deleted, req)
        resp.status = falcon.HTTP_204
