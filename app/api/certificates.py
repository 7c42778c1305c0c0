"""/api/v1/certificates: request (202), list, show, renew, revoke, delete, convert to production.

Every change is a command: the API records it, enqueues the worker's job with the request's
trace id and answers 202 with the certificate and that trace id, which `berth events tail
--trace ID` (or `berth certs issue --wait`) follows to `ready` or `generation_failed`.
User tokens see and act on their own certificates only; others' are 404. A user token cannot
ask for names another owner holds or that are reserved under BASE_DOMAIN (app/api/tenancy.py).

    POST   /api/v1/certificates                              {"name", "domains", ...} -> 202
    GET    /api/v1/certificates                              list (without PEM)
    GET    /api/v1/certificates/{name}                       one, with its PEM chain
    DELETE /api/v1/certificates/{name}                       -> 202
    POST   /api/v1/certificates/{name}/renew                 -> 202
    POST   /api/v1/certificates/{name}/revoke                {"reason"?} -> 202
    POST   /api/v1/certificates/{name}/convert-to-production -> 202
"""

from __future__ import annotations

import time
from collections.abc import Callable

import falcon

from app.api.auth import caller, visible_owner
from app.api.params import json_body, no_fields, query, record_id
from app.api.tenancy import Tenancy
from app.certificates import REVOCATION_REASONS, CertificateCommands
from app.errors import ValidationError
from app.models import Certificate


def view(cert: Certificate, now: float, *, with_pem: bool = False) -> dict:
    """What the API shows: the public record plus expiry and renewal in plain terms."""
    shown = cert.public()
    for internal in ("order_key_pem", "order_directory", "order_purpose", "ari_retry_at"):
        shown.pop(internal, None)
    if not with_pem:
        shown.pop("cert_pem", None)
    shown["expires_in_s"] = round(cert.not_after - now) if cert.not_after else None
    shown["renewal"] = {"renew_after": cert.renew_after or None,
                        "source": cert.renewal_source or None,
                        "in_progress": bool(cert.order_url)}
    shown["backoff"] = ({"until": cert.backoff_until, "reason": cert.backoff_reason}
                        if cert.backoff_until > now else None)
    return shown


def _find(commands: CertificateCommands, req: falcon.Request, name: str) -> Certificate:
    """The named certificate if the caller may see it; NotFound (404) otherwise."""
    return commands.store.get(record_id(name, "name"), owner=visible_owner(req))


def _accepted(req: falcon.Request, resp: falcon.Response, cert: Certificate, now: float,
              **extra) -> None:
    resp.status = falcon.HTTP_202
    resp.media = {"certificate": view(cert, now), "trace_id": req.context.trace_id, **extra}


class CertificatesResource:
    def __init__(self, commands: CertificateCommands, tenancy: Tenancy,
                 clock: Callable[[], float] = time.time):
        self.commands = commands
        self.tenancy = tenancy
        self.clock = clock

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        now = self.clock()
        certs = self.commands.store.list(owner=visible_owner(req))
        resp.media = {"items": [view(c, now) for c in certs]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        fields = Certificate.clean(json_body(req))
        self.tenancy.check_domains(req, fields["domains"], caller(req).owner)
        cert = self.commands.create(fields, caller(req).owner)
        _accepted(req, resp, cert, self.clock())
        resp.location = f"/api/v1/certificates/{cert.id}"


class CertificateResource:
    def __init__(self, commands: CertificateCommands, clock: Callable[[], float] = time.time):
        self.commands = commands
        self.clock = clock

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        query(req)
        resp.media = view(_find(self.commands, req, name), self.clock(), with_pem=True)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        query(req)
        cert = self.commands.delete(_find(self.commands, req, name))
        _accepted(req, resp, cert, self.clock())


class CertificateActionResource:
    """POST /api/v1/certificates/{name}/<action>."""

    def __init__(self, commands: CertificateCommands, action: str,
                 clock: Callable[[], float] = time.time):
        self.commands = commands
        self.action = action
        self.clock = clock

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        # The body is checked before the lookup: malformed input is a 400 whether or not
        # the certificate exists.
        query(req)
        body = json_body(req, required=False)
        if self.action == "revoke":
            reason = "unspecified"
            if body is not None:
                if not isinstance(body, dict) or set(body) - {"reason"}:
                    raise ValidationError("the body may only carry a reason", field="reason")
                reason = body.get("reason", reason)
                if not isinstance(reason, str) or reason not in REVOCATION_REASONS:
                    raise ValidationError(
                        f"reason must be one of {', '.join(REVOCATION_REASONS)}",
                        field="reason")
            cert = self.commands.revoke(_find(self.commands, req, name), reason)
        elif self.action == "renew":
            no_fields(body)
            cert = self.commands.renew(_find(self.commands, req, name))
        else:
            no_fields(body)
            cert = self.commands.convert_to_production(_find(self.commands, req, name))
        _accepted(req, resp, cert, self.clock())


def add_certificate_routes(app: falcon.App, commands: CertificateCommands, tenancy: Tenancy,
                           clock: Callable[[], float] = time.time) -> None:
    """Mount every certificate route on `app` (called by app.api.app.create_api)."""
    app.add_route("/api/v1/certificates", CertificatesResource(commands, tenancy, clock))
    app.add_route("/api/v1/certificates/{name}", CertificateResource(commands, clock))
    for action in ("renew", "revoke", "convert-to-production"):
        app.add_route(f"/api/v1/certificates/{{name}}/{action}",
                      CertificateActionResource(commands, action, clock))
