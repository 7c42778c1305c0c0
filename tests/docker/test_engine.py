"""workers.containers.Engine against a real dockerd: the typed surface and error translation."""

from __future__ import annotations

import urllib.request

import pytest

from app.errors import Conflict, NotFound, Unavailable
from app.stores.ports import port_is_free
from harness.docker import TEST_LABEL
from harness.procs import free_port, wait_until
from workers.containers import ContainerSpec, Engine, EngineUnavailable

pytestmark = pytest.mark.docker


def spec(image: str, name: str, port: int, **extra) -> ContainerSpec:
    return ContainerSpec(name=name, image=image, internal_port=8080, host_port=port,
                         labels={TEST_LABEL: "1", "berth-test.case": name}, **extra)


def fetch(port: int, path: str = "/id.txt") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        return resp.read().decode().strip()


def answers(port: int) -> bool:
    try:
        return bool(fetch(port))
    except OSError:
        return False


def test_run_inspect_list_logs_stop_remove(engine, test_image):
    port = free_port()
    container = engine.run(spec(test_image, "berth-test-engine-a", port, env={"VERSION": "7"},
                                memory_mb=64, cpus=0.5))
    try:
        assert container.running and container.name == "berth-test-engine-a"
        wait_until(lambda: answers(port), timeout=10, what="the container serving")
        assert fetch(port) == container.id[:12]  # the test image serves its hostname
        assert fetch(port, "/version.txt") == "7"
        assert not port_is_free(port)  # published on 127.0.0.1 by the engine
        listed = engine.list({"berth-test.case": "berth-test-engine-a"})
        assert [c.id for c in listed] == [container.id]
        assert engine.list({"berth-test.case": "nothing-has-this"}) == []
        logs = b"".join(engine.logs(container.id, tail=10))
        assert b"serving on 8080" in logs
        engine.stop(container.id, timeout_s=5)
        stopped = engine.inspect(container.id)
        assert not stopped.running and stopped.state == "exited"
    finally:
        engine.remove(container.id)
    assert engine.find(container.id) is None
    engine.remove(container.id)  # already gone: not an error


def test_exit_code_and_events(engine, test_image):
    events = engine.events({"berth-test.case": "berth-test-engine-b"})
    seen = []
    try:
        container = engine.run(spec(test_image, "berth-test-engine-b", free_port(),
                                    command=("sh", "-c", "exit 3")))
        for event in events:
            seen.append(event)
            if event.action == "die":
                break
    finally:
        events.close()
        engine.remove(container.id)
    assert seen[-1].container_id == container.id and seen[-1].exit_code == 3
    assert seen[-1].labels["berth-test.case"] == "berth-test-engine-b"


def test_engine_errors_become_berth_errors(engine, test_image):
    with pytest.raises(NotFound):
        engine.inspect("no-such-container")
    with pytest.raises(NotFound, match="pulling is disabled"):
        engine.create(spec("berth-test/not-built:1", "berth-test-engine-c", free_port()))
    first = engine.create(spec(test_image, "berth-test-engine-d", free_port()))
    try:
        with pytest.raises(Conflict):
            engine.create(spec(test_image, "berth-test-engine-d", free_port()))
    finally:
        engine.remove(first.id)


def test_unreachable_engine_is_unavailable(tmp_path):
    engine = Engine(f"unix://{tmp_path}/no-docker.sock", timeout=2)
    with pytest.raises(EngineUnavailable, match="no-docker.sock is unreachable") as raised:
        engine.ping()
    assert isinstance(raised.value, Unavailable)
    with pytest.raises(Unavailable):
        engine.list({"berth.service": None})
