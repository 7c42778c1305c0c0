"""The tenancy rules of the API (ARCHITECTURE: Tenancy), decided here and nowhere else.

- Scopes: `admin` operates the platform; `user` acts only inside its owner (auth.py: other
  owners' records are 404) and never on tokens of a higher scope (403 for its owner's admin
  tokens, which it does not even list). Nobody revokes the last admin token (409, kept
  atomically by app/stores/tokens.py). An admin's user token without an owner gets a new one.
- Hosts: a hostname is held by the first owner to route it (app/stores/hosts.py keeps the
  claims atomically with every route write, 409). Names under BASE_DOMAIN are reserved for
  services: only the owner of service `x` may route `x.<BASE_DOMAIN>` (403). Certificates and
  service hostnames of user tokens follow the same rules. An admin may pass `override=true`
  (POST/PATCH /api/v1/routes) to set both aside; a user token passing it is refused (403).
- Targets: a route a user token writes is `restricted`; each of its targets must resolve only
  to addresses app/target_policy.py allows (403), and the proxy checks again on connect.

Refusals name nothing of another owner's: only the host or target the caller sent.
"""

from __future__ import annotations

import secrets

import falcon
import redis

from app.api.auth import caller, is_admin
from app.api.params import choice_param
from app.errors import Conflict, Forbidden
from app.models import Route, Token
from app.stores import hosts
from app.stores.services import ServiceStore
from app.target_policy import TargetPolicy

OVERRIDE_CHOICES = ("true", "false")


# -- tokens ------------------------------------------------------------------------------


def visible_tokens(req: falcon.Request, tokens: list[Token]) -> list[Token]:
    """What a listing shows: everything to an admin; its owner's user tokens to a user."""
    if is_admin(req):
        return tokens
    return [t for t in tokens if t.scope == "user"]


def check_revoke(req: falcon.Request, token: Token) -> None:
    """`token` is visible to the caller (its owner's, or any for an admin)."""
    if not is_admin(req) and token.scope == "admin":
        raise Forbidden("a user token cannot revoke an admin token")


def new_token_owner(req: falcon.Request, fields: dict) -> str:
    """The owner of a token about to be created (fields from Token.clean)."""
    me = caller(req)
    if "owner" in fields:
        owner = fields["owner"]
        if not is_admin(req) and owner != me.owner:
            raise Forbidden("only an admin token can create tokens for another owner",
                            field="owner")
        return owner
    if is_admin(req) and fields["scope"] == "user":
        # Not the admin's own owner: a user token would act inside the platform's records.
        return f"{fields['name'][:56]}-{secrets.token_hex(3)}"
    return me.owner


def check_token_scope(req: falcon.Request, fields: dict) -> None:
    if not is_admin(req) and fields["scope"] == "admin":
        raise Forbidden("only an admin token can create admin tokens", field="scope")


# -- hosts, targets ----------------------------------------------------------------------


class Tenancy:
    """The host and target decisions, over the stores and settings they read."""

    def __init__(self, client: redis.Redis, base_domain: str, policy: TargetPolicy):
        self.client = client
        self.base_domain = base_domain.strip(".").lower()
        self.policy = policy
        self.services = ServiceStore(client)

    def override(self, req: falcon.Request, params: dict[str, str]) -> bool:
        """The `override` query parameter: admin tokens only."""
        wanted = choice_param(params, "override", OVERRIDE_CHOICES) == "true"
        if wanted and not is_admin(req):
            raise Forbidden("override needs an admin token", field="override")
        return wanted

    def under_base(self, host: str) -> bool:
        name = host[2:] if host.startswith("*.") else host
        return bool(self.base_domain) and (
            name == self.base_domain or name.endswith("." + self.base_domain))

    def _base_refusal(self, host: str, owner: str) -> str | None:
        """Why `owner` may not use `host` under BASE_DOMAIN, or None: only
        `<service>.<BASE_DOMAIN>` of a service of the owner's is theirs."""
        if not self.under_base(host):
            return None
        label, _dot, rest = host.partition(".")
        if rest == self.base_domain and label != "*":
            service = self.services.find(label)
            if service is not None and service.owner == owner:
                return None
        return (f"names under {self.base_domain} are reserved for services; {host} is not "
                "the name of a service of yours")

    def check_route(self, req: falcon.Request, route: Route, *, override: bool,
                    host_changed: bool = True) -> Route:
        """The route as it may be written by the caller (marked restricted for a user), or
        Forbidden/Conflict. The store checks the host claim again, atomically."""
        admin = is_admin(req)
        if host_changed and not override:
            reason = self._base_refusal(route.host, route.owner)
            if reason is not None:
                raise Forbidden(reason + ("; an admin token may pass override=true"
                                          if admin else ""), field="host")
            reason = hosts.read_refusal(self.client, route.host, route.owner)
            if reason is not None:
                raise Conflict(reason, field="host")
        if admin:
            return route.replace(restricted=False)
        for target in route.targets:
            reason = self.policy.url_refusal(target)
            if reason is not None:
                raise Forbidden(f"target {target} is not allowed: {reason}", field="targets")
        return route.replace(restricted=True)

    def check_domains(self, req: falcon.Request, domains, owner: str,
                      field: str = "domains") -> None:
        """Names a user token may get a certificate (or a service hostname) for: none held
        by another owner, none reserved under BASE_DOMAIN but its own services'."""
        if is_admin(req):
            return
        for host in domains:
            reason = self._base_refusal(host, owner)
            if reason is not None:
                raise Forbidden(reason, field=field)
            reason = hosts.read_refusal(self.client, host, owner)
            if reason is not None:
                raise Conflict(reason, field=field)

    def check_service_hostname(self, req: falcon.Request, name: str, hostname: str | None,
                               owner: str) -> None:
        """A new service's hostname: its own `<name>.<BASE_DOMAIN>` by default; another name
        under BASE_DOMAIN only for an admin; never a host another owner holds."""
        if hostname is None or hostname == f"{name}.{self.base_domain}":
            reason = hosts.read_refusal(self.client, hostname or f"{name}.{self.base_domain}",
                                        owner)
            if reason is not None:
                raise Conflict(reason, field="hostname" if hostname else "name")
            return
        if not is_admin(req) and self.under_base(hostname):
            raise Forbidden(f"names under {self.base_domain} are reserved for services; a "
                            f"service's hostname there is <name>.{self.base_domain}",
                            field="hostname")
        reason = hosts.read_refusal(self.client, hostname, owner)
        if reason is not None:
            raise Conflict(reason, field="hostname")
