"""`berth certs ...` against the management API served over HTTP in this process, with the
real worker process issuing from pebble through the real proxy."""

from __future__ import annotations

import contextlib
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from app.api import create_api
from app.cli import main as cli_main
from app.events import Publisher
from app.settings import Settings
from app.stores.tokens import TokenStore
from tests.acme.conftest import process_env, start_worker
from tests.support.procs import free_port
from workers.broker import create_broker

pytestmark = [pytest.mark.acme, pytest.mark.e2e]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_api(settings: Settings, redis_client):
    broker = create_broker(settings)
    publisher = Publisher(redis_client, flush_ms=10)
    app = create_api(settings, redis_client, broker, publisher, sse_ping_s=1)
    server = make_server("127.0.0.1", free_port(), app, server_class=_ThreadingServer,
                         handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        publisher.close(timeout=2)
        broker.close()


@pytest.fixture
def cli():
    return cli_main.main


def test_certs_issue_wait_list_show_rm(cli, capsys, redis_server, redis_client, pebble, proxy,
                                       tmp_path):
    env = process_env(redis_server.url, pebble)
    settings = Settings.from_env(env)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        with serve_api(settings, redis_client) as url:
            _token, admin = TokenStore(redis_client).issue(name="ops", scope="admin",
                                                           owner="ops")
            base = ["--url", url, "--token", admin]
            assert cli([*base, "certs", "issue", "blog", "--domain", "blog.example.com",
                        "-d", "www.blog.example.com", "--wait"], {}) == 0
            out = capsys.readouterr().out
            assert "generation_started" in out and "ready: blog" in out
            assert cli([*base, "certs", "list"], {}) == 0
            listing = capsys.readouterr().out
            assert "blog" in listing and "active" in listing
            assert "blog.example.com, www.blog.example.com" in listing
            assert cli([*base, "certs", "show", "blog"], {}) == 0
            shown = capsys.readouterr().out
            assert "renewal policy" in shown and "lifetime" in shown
            assert cli([*base, "certs", "show", "blog", "--pem"], {}) == 0
            assert capsys.readouterr().out.startswith("-----BEGIN CERTIFICATE-----")
            assert cli([*base, "certs", "renew", "blog", "--wait"], {}) == 0
            assert "renewed: blog" in capsys.readouterr().out
            assert cli([*base, "certs", "rm", "blog", "--wait"], {}) == 0
            assert "deleted: blog" in capsys.readouterr().out
            assert cli([*base, "certs", "show", "blog"], {}) == 1
            assert "Not found" in capsys.readouterr().err
    except BaseException:
        print(worker.output())
        raise
    finally:
        worker.stop()


def test_certs_and_auto_certificate_routes_as_a_user_runs_berth_against_the_web_process(
        redis_server, redis_client, pebble, proxy, tmp_path):
    """`./berth` against the real web process and worker: `certs issue --wait`, then a route
    added with --auto-certificate gets its host a certificate of its own."""
    import json

    from harness.procs import wait_until
    from tests.support.api import start_web
    from tests.support.cli import run_berth

    env = process_env(redis_server.url, pebble)
    worker = start_worker(env, tmp_path / "worker.log")
    web, url = start_web(redis_server.url, tmp_path, env)
    try:
        _token, admin = TokenStore(redis_client).issue(name="ops", scope="admin", owner="ops")

        def berth(*args):
            return run_berth(*args, url=url, token=admin, timeout=120)

        issued = berth("certs", "issue", "shop", "-d", "shop.example.com", "--wait")
        assert issued.returncode == 0, issued.stderr
        assert issued.stdout.splitlines()[-1] == "ready: shop"

        added = berth("routes", "add", "api.example.com", "--target", "http://127.0.0.1:9",
                      "--auto-certificate")
        assert added.returncode == 0, added.stderr

        def active(name):
            shown = berth("certs", "show", name, "--json")
            return shown.returncode == 0 and json.loads(shown.stdout)["status"] == "active"

        wait_until(lambda: active("auto-api-example-com"), timeout=60,
                   what="the route's certificate active")
        listing = berth("certs", "list").stdout
        assert "auto-api-example-com" in listing and "api.example.com" in listing
    except BaseException:
        print(worker.output(), web.output())
        raise
    finally:
        web.stop()
        worker.stop()
