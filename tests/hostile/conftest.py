"""Fixtures for the hostile-input tests: the real gunicorn proxy and real backends from the
proxy end-to-end suite, plus a guarded host whose requests the proxy refuses by itself."""

from __future__ import annotations

import pytest

from app.stores import TokenStore
from tests.e2e.conftest import PROXY_ENV, backend, proxy, routes, tls_proxy  # noqa: F401 - fixtures

GUARDED = "guarded.test"  # admin-token route: a request the proxy parses here never goes on


@pytest.fixture
def site(routes, backend):  # noqa: F811 - pytest fixtures
    """`h.test` open to the backend, and GUARDED behind an admin token: a request for
    GUARDED reaches the backend only when the proxy did not see it as a request."""
    routes.add("h.test", [backend.url])
    routes.add(GUARDED, [backend.url], auth={"type": "token", "scope": "admin"})
    return "h.test"


@pytest.fixture
def admin_secret(redis_client) -> str:
    _token, secret = TokenStore(redis_client).issue(name="admin", scope="admin", owner="root")
    return secret


__all__ = ["GUARDED", "PROXY_ENV"]
