from __future__ import annotations

import pytest

from app.redis import create_client
from app.settings import Settings
from tests.support.policy import LOOPBACK_ALLOWED
from tests.support.procs import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = create_client(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(redis_server):
    return Settings.from_env({"BERTH_USER_TARGET_NETWORKS": LOOPBACK_ALLOWED},
                             redis_url=redis_server.url)


@pytest.fixture
def api(settings, redis_client):
    """The management API in process (falcon TestClient) with an admin token in `api.admin`."""
    from tests.support.api import Api

    harness = Api(settings, redis_client)
    yield harness
    harness.close()
