"""Service pieces that need no container engine: input validation, settings, the restart
policy, health waiting and log interleaving."""

from __future__ import annotations

import http.server
import threading

import pytest

from app.errors import SettingsError, ValidationError
from app.models import Service
from app.services import LogLines
from app.settings import Settings
from workers.containers import Container
from workers.health import probe, wait_healthy
from workers.reconcile import should_revive
from workers.rollout import container_name, slot_prefix, target_url

VALID = {"name": "web", "image": "registry.example.com:5000/team/app:1.2", "port": 8080}


def test_a_minimal_service_and_every_field():
    assert Service.clean(VALID) == {"id": "web", "image": VALID["image"], "port": 8080}
    full = Service.clean({**VALID, "hostname": "Web.Example.COM", "command": ["sh", "-c", "x"],
                          "env": {"A_1": "v"}, "replicas": 3, "memory_mb": 128, "cpus": 1,
                          "restart": "always", "labels": {"team": "a"}, "bind": "0.0.0.0",
                          "health": {"path": "/healthz?full=1"}})
    assert full["hostname"] == "web.example.com" and full["command"] == ("sh", "-c", "x")
    assert full["cpus"] == 1.0 and full["bind"] == "0.0.0.0"
    assert full["health"] == {"path": "/healthz?full=1", "interval_s": 2, "timeout_s": 2}


@pytest.mark.parametrize("image", [
    "nginx", "nginx:1.27", "library/nginx@sha256:" + "a" * 64, "localhost:5000/a/b_c-d:v1.0"])
def test_image_references(image):
    assert Service.clean({**VALID, "image": image})["image"] == image


@pytest.mark.parametrize("change, field", [
    ({"name": "index"}, "name"),
    ({"name": "a.b"}, "name"),
    ({"image": "nginx:"}, "image"),
    ({"image": "-nginx"}, "image"),
    ({"port": "80"}, "port"),
    ({"command": "sh -c x"}, "command"),
    ({"env": {"A": 1}}, "env"),
    ({"cpus": True}, "cpus"),
    ({"memory_mb": 5}, "memory_mb"),
    ({"health": {"timeout_s": 0}}, "health.timeout_s"),
    ({"health": {"method": "HEAD"}}, "method"),
    ({"labels": {"berth.owner": "x"}}, "labels"),
    ({"bind": "::g"}, "bind"),
])
def test_invalid_fields_name_the_field(change, field):
    with pytest.raises(ValidationError) as raised:
        Service.clean({**VALID, **change})
    assert raised.value.field == field


def test_redeploy_changes_only_what_may_change():
    assert Service.clean({"env": {"V": "2"}}, allowed=Service.REDEPLOY_FIELDS,
                         partial=True) == {"env": {"V": "2"}}
    for fixed in ("name", "hostname", "replicas"):
        with pytest.raises(ValidationError):
            Service.clean({fixed: "x"}, allowed=Service.REDEPLOY_FIELDS, partial=True)


def test_port_settings():
    settings = Settings.from_env({"BERTH_SERVICE_PORTS": "21000-21010",
                                  "BERTH_RESTRICTED_PORTS": "21000,21005-21006"})
    assert settings.service_ports == (21000, 21010)
    assert {21000, 21005, 21006, 8000, 8080, 8443} <= settings.blocked_ports
    for bad in ({"BERTH_SERVICE_PORTS": "30000-20000"}, {"BERTH_SERVICE_PORTS": "80-90"},
                {"BERTH_RESTRICTED_PORTS": "http"}, {"DOCKER_HOST": "docker.sock"},
                {"BERTH_SERVICE_PORTS": "21000", "BERTH_RESTRICTED_PORTS": "21000"}):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)


def test_names_of_slots_never_overlap_between_services():
    assert container_name("web", 2, 0) == "berth-web.2.0"
    assert not container_name("web-2", 1, 0).startswith(slot_prefix("web"))
    svc = Service(id="web", image="x", port=80, owner="o", bind="::")
    assert target_url(svc, 20001) == "http://[::1]:20001"


def _container(state="exited", exit_code=0, oom=False) -> Container:
    return Container(id="c", name="n", image="i", state=state, labels={},
                     exit_code=exit_code, oom_killed=oom)


def test_restart_policies():
    assert not should_revive("no", _container(exit_code=1))
    assert not should_revive("no", None)
    assert should_revive("always", _container(exit_code=0))
    assert should_revive("on-failure", _container(exit_code=137))
    assert should_revive("on-failure", _container(oom=True))
    assert should_revive("on-failure", None)  # removed behind berth's back
    assert not should_revive("on-failure", _container(exit_code=0))
    assert should_revive("on-failure", _container(state="created"))


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_probe_and_wait_healthy(http_server):
    assert probe("127.0.0.1", http_server, "/ok", 1).healthy
    assert "answered 503" in probe("127.0.0.1", http_server, "/down", 1).error
    results = wait_healthy({"up": ("127.0.0.1", http_server)}, "/ok", 1, 5,
                           still_running=lambda name: None)
    assert results["up"].healthy
    exited = wait_healthy({"dead": ("127.0.0.1", http_server)}, "/down", 1, 30,
                          still_running=lambda name: "exited with code 1",
                          clock=iter(range(0, 100, 2)).__next__)
    assert exited["dead"].error == "exited with code 1"


def test_log_lines_interleave_prefix_and_close():
    lines = LogLines({"a": [b"one\ntw", b"o\n"], "b": [b"three"]}, prefix=True)
    assert sorted(lines) == [b"a | one\n", b"a | two\n", b"b | three\n"]
    closed = []

    class Stream(list):
        def close(self):
            closed.append(True)

    single = LogLines({"a": Stream([b"x\n"])}, prefix=False)
    assert list(single) == [b"x\n"]
    single.close()
    assert closed == [True]
