from __future__ import annotations

import secrets

from app.models import Route, fresh_fields
from app.stores.base import Extra, Guard, Repository
from app.stores.hosts import HostClaims


def route_key(route: Route) -> str:
    """Host and path prefix together identify a route: no two routes may share them."""
    return f"{route.host} {route.path_prefix}"


class RouteStore(Repository):
    """Routes; every write keeps the hostname claims (app/stores/hosts.py) in its own
    transaction, so a host held by another owner is refused (409) unless `override`."""

    noun = "route"
    model = Route
    unique = {"host_path": route_key}

    def guard(self) -> Guard:
        return HostClaims()

    def create(self, item, *, extra: Extra | None = None, guard: Guard | None = None,
               override: bool = False):
        return super().create(item, extra=extra, guard=guard or HostClaims(override))

    def update(self, item, *, expected_version: int | None = None, extra: Extra | None = None,
               guard: Guard | None = None, override: bool = False):
        return super().update(item, expected_version=expected_version, extra=extra,
                              guard=guard or HostClaims(override))

    @staticmethod
    def new(owner: str, fields: dict) -> Route:
        return Route(id="rt_" + secrets.token_hex(6), owner=owner, **fresh_fields(**fields))
