from __future__ import annotations

import secrets

from app.models import Route, fresh_fields
from app.stores.base import Repository


def route_key(route: Route) -> str:
    """Host and path prefix together identify a route: no two routes may share them."""
    return f"{route.host} {route.path_prefix}"


class RouteStore(Repository):
    noun = "route"
    model = Route
    unique = {"host_path": route_key}

    @staticmethod
    def new(owner: str, fields: dict) -> Route:
        return Route(id="rt_" + secrets.token_hex(6), owner=owner, **fresh_fields(**fields))
