"""Fixtures for tests against a real Docker engine: the engine (reused, or a private dockerd
started here), the busybox HTTP test image, and berth's service context over them."""

from __future__ import annotations

import pytest

from app.events import Publisher
from app.models import Service, fresh_fields
from app.settings import Settings
from harness.docker import TEST_LABEL, DockerDaemon, build_test_image
from workers.containers import Engine
from workers.rollout import ServiceContext

HEALTH = {"path": "/id.txt", "interval_s": 1, "timeout_s": 1}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can show logs on failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory):
    try:
        daemon = DockerDaemon(tmp_path_factory.mktemp("dockerd")).start()
    except PermissionError as ex:
        pytest.skip(str(ex))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def docker_client(docker_daemon):
    client = docker_daemon.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_image(docker_client):
    return build_test_image(docker_client)


@pytest.fixture
def service_settings(redis_server, docker_daemon):
    # Short waits so failure paths are quick; nothing here is a timing assertion.
    return Settings.from_env({}, redis_url=redis_server.url, docker_host=docker_daemon.url,
                             image_pull="never", service_drain_ms=300,
                             service_start_timeout_s=15, service_stop_timeout_s=5,
                             service_lock_wait_s=5)


@pytest.fixture
def engine(docker_daemon):
    engine = Engine(docker_daemon.url, pull="never")
    yield engine
    engine.close()


@pytest.fixture
def ctx(service_settings, redis_client, engine, docker_client):
    publisher = Publisher(redis_client, flush_ms=10)
    context = ServiceContext.create(service_settings, redis_client, publisher, engine)
    yield context
    publisher.close()
    # Whatever a test left behind: the services' containers carry the test label.
    for container in docker_client.containers.list(all=True, filters={"label": TEST_LABEL}):
        if container.labels.get("berth.service"):
            container.remove(force=True)


@pytest.fixture
def new_service(ctx, test_image):
    """Store a service record as the API would (revision 1, pending)."""

    def make(name: str = "web", **fields) -> Service:
        fields = {"image": test_image, "port": 8080, "owner": "alice",
                  "hostname": f"{name}.localhost", "health": HEALTH,
                  "labels": {TEST_LABEL: "1"}, **fields}
        return ctx.services.create(Service(id=name, revision=1, **fields, **fresh_fields()))

    return make
