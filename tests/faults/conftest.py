"""Fixtures of the fault suite: those of the proxy, ACME and Docker suites (imported, so each
directory keeps one definition), a private dockerd this suite may stop, and `figures`, which
prints a test's figures and collects them for a "fault figures" section at the end of the run.
"""

from __future__ import annotations

import pytest

from harness.docker import DockerDaemon, build_test_image
from harness.proxy import ProxyProcess
from tests.acme.conftest import pebble  # noqa: F401 - pebble validating through `proxy`
from tests.e2e.conftest import Routes, backend, backend_b, proxy, routes  # noqa: F401

FIGURES = "fault figures"


@pytest.fixture
def figures(record_property):
    """figures(what=..., sent=..., failed=...): print one line and keep it for the summary."""

    def report(**values) -> str:
        line = " ".join(f"{name}={value}" for name, value in values.items())
        print(f"[{FIGURES}] {line}")
        record_property(FIGURES, line)
        return line

    return report


def pytest_terminal_summary(terminalreporter):
    lines = [(report.nodeid, value)
             for outcome in ("passed", "failed", "xfailed", "xpassed")
             for report in terminalreporter.getreports(outcome)
             for name, value in getattr(report, "user_properties", ()) if name == FIGURES]
    if lines:
        terminalreporter.section(FIGURES)
        for nodeid, line in lines:
            terminalreporter.write_line(f"{nodeid.rpartition('::')[2]}: {line}")


@pytest.fixture(scope="session")
def fault_dockerd(tmp_path_factory):
    """A dockerd of this suite alone (its own data, exec root, socket and bridge), with
    live-restore: the tests stop and restart it, which no other test or run can notice."""
    try:
        daemon = DockerDaemon(tmp_path_factory.mktemp("dockerd"), private=True,
                              live_restore=True).start()
    except PermissionError as ex:
        pytest.skip(str(ex))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def fault_image(fault_dockerd):
    client = fault_dockerd.client()
    try:
        return build_test_image(client)
    finally:
        client.close()


@pytest.fixture(scope="session")
def docker_proxy(redis_server, tmp_path_factory):
    """The proxy in front of containers. Its read timeout is 5 s, not the 1.5 s of `proxy`: on
    a busy machine a container can be that slow, and only a hang should count as a failure."""
    process = ProxyProcess(tmp_path_factory.mktemp("docker-proxy"), redis_server.url,
                           {"BERTH_PROXY_CONNECT_TIMEOUT_S": "1",
                            "BERTH_PROXY_READ_TIMEOUT_S": "5"})
    process.start()
    yield process
    process.stop()


@pytest.fixture
def docker_routes(redis_client, docker_proxy):
    return Routes(redis_client, docker_proxy)
