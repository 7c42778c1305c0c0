"""Fixtures for the access-control review: the real proxy and backends from the proxy
end-to-end suite, the real web process, and tokens of two owners."""

from __future__ import annotations

import pytest

from app.stores import TokenStore
from tests.e2e.conftest import backend, proxy, routes  # noqa: F401 - fixtures
from tests.support.api import start_web


@pytest.fixture(scope="module")
def web(redis_server, tmp_path_factory):
    """The real `web` process (management API): (process, base URL)."""
    proc, url = start_web(redis_server.url, tmp_path_factory.mktemp("web"))
    yield proc, url
    proc.stop()


@pytest.fixture
def secrets(redis_client) -> dict[str, str]:
    """Token secrets by name: an admin's, and users alice's and bob's."""
    store = TokenStore(redis_client)
    return {"admin": store.issue(name="root", scope="admin", owner="root")[1],
            "alice": store.issue(name="alice", scope="user", owner="alice")[1],
            "bob": store.issue(name="bob", scope="user", owner="bob")[1]}
