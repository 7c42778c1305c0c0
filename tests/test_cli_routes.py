"""`berth routes add|list|show|update|rm`: in process against the real API app served over
HTTP on the test Redis, then as a user runs `./berth` against the real web process."""

from __future__ import annotations

import json
import time

import pytest
from argon2 import PasswordHasher

from app import redis as keys
from app.cli.errors import ApiError
from app.redis import create_client
from app.settings import Settings
from app.stores.routes import RouteStore
from harness.procs import RedisServer
from tests.support.api import Api, start_web
from tests.support.cli import assert_one_line_failure, berth, run_berth, serve
from tests.support.policy import LOOPBACK_ALLOWED

A = "http://127.0.0.1:9001"
B = "http://127.0.0.1:9002"


@pytest.fixture
def served(api):
    with serve(api.app) as url:
        yield url, api


@pytest.fixture
def served_alone(tmp_path):
    """`served` over a Redis of its own: no proxy of another test reports to it, so the
    proxy workers the API sees are the ones a test writes."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    client = create_client(server.url)
    api = Api(Settings.from_env({"BERTH_USER_TARGET_NETWORKS": LOOPBACK_ALLOWED},
                                redis_url=server.url), client)
    try:
        with serve(api.app) as url:
            yield url, api, client
    finally:
        api.close()
        client.close()
        server.stop()


def routes_of(redis_client) -> dict:
    return {(r.host, r.path_prefix): r for r in RouteStore(redis_client).list()}


def test_add_sends_every_option_and_prints_the_route(served, redis_client, capsys):
    url, api = served
    hashed = PasswordHasher().hash("pw")
    assert berth(url, api.admin, "routes", "add", "Shop.Test/api", "--target", A, "-t", B,
                 "--strip-prefix", "--preserve-host", "--hsts", "--https-redirect", "always",
                 "--max-body", "10M", "--set-header", "X-Env=prod", "--del-header", "Cookie",
                 "--set-response-header", "X-Frame-Options=DENY", "--auto-certificate",
                 "--auth-user", f"alice:{hashed}") == 0
    out = capsys.readouterr().out.splitlines()
    route = routes_of(redis_client)[("shop.test", "/api")]
    assert out[0] == f"added route {route.id}: shop.test/api -> {A}, {B} (version 1)"
    assert out[1].startswith("trace: ")
    assert route.targets == (A, B)
    assert (route.strip_prefix, route.preserve_host, route.hsts, route.auto_certificate) == (
        True, True, True, True)
    assert (route.https_redirect, route.max_body_bytes) == ("always", 10 << 20)
    assert route.request_headers == {"X-Env": "prod", "Cookie": None}
    assert route.response_headers == {"X-Frame-Options": "DENY"}
    assert route.auth == {"type": "basic", "users": {"alice": hashed}}

    assert berth(url, api.admin, "routes", "add", "api.test", "-t", A, "--auth", "token",
                 "--auth-scope", "admin", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["auth"] == {"type": "token", "scope": "admin"}
    assert shown["path_prefix"] == "/" and shown["version"] == 1


def test_list_and_show_by_id_or_host(served, capsys):
    url, api = served
    assert berth(url, api.admin, "routes", "list") == 0
    assert capsys.readouterr().out == "no routes\n"
    assert berth(url, api.admin, "routes", "add", "shop.test", "-t", A, "--json") == 0
    route_id = json.loads(capsys.readouterr().out)["id"]
    assert berth(url, api.admin, "routes", "add", "shop.test/admin", "-t", B,
                 "--set-header", "X-A=1", "--del-header", "X-B") == 0
    capsys.readouterr()

    assert berth(url, api.admin, "routes", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "HOST", "PATH", "TARGETS", "AUTH", "SERVICE", "VERSION"]
    assert sorted(line.split()[1:] for line in lines[1:]) == [
        ["shop.test", "/", A, "none", "-", "1"], ["shop.test", "/admin", B, "none", "-", "1"]]

    assert berth(url, api.admin, "routes", "show", route_id) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == f"{'id':16}  {route_id}"
    assert f"{'targets':16}  {A}" in shown and f"{'auth':16}  none" in shown
    assert f"{'request headers':16}  -" in shown
    assert berth(url, api.admin, "routes", "show", "shop.test/admin") == 0
    shown = capsys.readouterr().out.splitlines()
    assert f"{'request headers':16}  X-A=1, -X-B" in shown and f"{'targets':16}  {B}" in shown

    # The bare host names two routes: one line asking for the path or the id.
    assert berth(url, api.admin, "routes", "show", "shop.test") == 1
    assert capsys.readouterr().err == (
        "berth: Several routes match: shop.test has routes for /, /admin: give HOST/PATH "
        "or the route id\n")
    assert berth(url, api.admin, "routes", "show", "nope.test") == 1
    assert capsys.readouterr().err == "berth: Not found: no route for nope.test\n"


def test_update_sends_the_version_it_read_and_merges_headers_and_targets(served, redis_client,
                                                                          capsys):
    url, api = served
    assert berth(url, api.admin, "routes", "add", "shop.test", "-t", A, "--set-header",
                 "X-A=1", "--set-header", "X-B=2", "--json") == 0
    route_id = json.loads(capsys.readouterr().out)["id"]
    assert berth(url, api.admin, "routes", "update", "shop.test", "--add-target", B,
                 "--unset-header", "X-A", "--set-header", "X-C=3", "--no-hsts",
                 "--https-redirect", "never") == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"updated route {route_id}: shop.test -> {A}, {B} (version 2)")
    route = RouteStore(redis_client).get(route_id)
    assert route.targets == (A, B) and route.request_headers == {"X-B": "2", "X-C": "3"}
    assert (route.hsts, route.https_redirect) == (False, "never")

    assert berth(url, api.admin, "routes", "update", route_id, "--rm-target", A,
                 "--host", "shop.test/v2") == 0
    route = RouteStore(redis_client).get(route_id)
    assert (route.host, route.path_prefix, route.targets, route.version) == (
        "shop.test", "/v2", (B,), 3)

    # Someone changed it since version 2: refused, one line, nothing overwritten.
    assert berth(url, api.admin, "routes", "update", route_id, "--if-version", "2",
                 "--hsts") == 1
    assert capsys.readouterr().err == (
        f"berth: Conflict: route '{route_id}' changed since version 2 (now 3); read it again "
        "and retry\n")
    assert RouteStore(redis_client).get(route_id).hsts is False

    assert berth(url, api.admin, "routes", "update", route_id) == 1
    assert capsys.readouterr().err.startswith("berth: Nothing to change: ")
    assert berth(url, api.admin, "routes", "update", route_id, "--rm-target", A) == 1
    assert "the route has no such target" in capsys.readouterr().err


def test_rm_checks_the_version_and_removes(served, redis_client, capsys):
    url, api = served
    assert berth(url, api.admin, "routes", "add", "shop.test", "-t", A, "--json") == 0
    route_id = json.loads(capsys.readouterr().out)["id"]
    assert berth(url, api.admin, "routes", "rm", "shop.test", "--if-version", "5") == 1
    assert capsys.readouterr().err.startswith(f"berth: Conflict: route '{route_id}' changed")
    assert berth(url, api.admin, "routes", "rm", "shop.test") == 0
    assert capsys.readouterr().out.startswith(f"removed route {route_id} (shop.test)\ntrace: ")
    assert routes_of(redis_client) == {}


def test_a_user_token_sees_only_its_own_routes(served, capsys):
    url, api = served
    assert berth(url, api.admin, "routes", "add", "ops.test", "-t", A, "--json") == 0
    route_id = json.loads(capsys.readouterr().out)["id"]
    alice = api.token("user", "alice")
    assert berth(url, alice, "routes", "add", "alice.test", "-t", B) == 0
    capsys.readouterr()
    assert berth(url, alice, "routes", "list", "--json") == 0
    assert [r["host"] for r in json.loads(capsys.readouterr().out)["items"]] == ["alice.test"]
    assert berth(url, alice, "routes", "rm", route_id) == 1
    assert capsys.readouterr().err.startswith("berth: Not found: ")


def test_api_validation_errors_are_one_line_naming_the_field(served, capsys):
    url, api = served
    assert berth(url, api.admin, "routes", "add", "shop.test", "-t", "ftp://x") == 1
    assert capsys.readouterr().err == (
        "berth: Invalid input: targets must be an http or https URL with a host\n")
    assert berth(url, api.admin, "routes", "add", "shop.test", "-t", A, "--auth-user",
                 "alice:plain") == 1
    assert capsys.readouterr().err == (
        "berth: Invalid input: auth.users: each value must be a bcrypt or argon2 hash\n")
    assert berth(url, api.admin, "routes", "add", "shop.test", "-t", A, "--auth", "none",
                 "--auth-scope", "admin") == 1
    assert capsys.readouterr().err == (
        "berth: Invalid options: --auth-scope goes with --auth token\n")
    # A description that does not name its field gets it appended.
    error = ApiError("Invalid input", "must be a URL", status=400, field="targets")
    assert error.line() == "berth: Invalid input: must be a URL (field targets)"


@pytest.mark.parametrize(("argv", "message"), [
    (["add", "shop.test"], "the following arguments are required: --target/-t"),
    (["add", "shop.test", "-t", A, "--set-header", "X-A"], "'X-A' is not NAME=VALUE"),
    (["add", "shop.test", "-t", A, "--max-body", "ten"], "'ten' is not a size"),
    (["add", "shop.test", "-t", A, "--auth-user", "alice"], "'alice' is not NAME:HASH"),
    (["update", "shop.test", "--if-version", "x"], "invalid int value: 'x'"),
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        berth("http://127.0.0.1:9", "brt_unused", "routes", *argv)
    assert caught.value.code == 2
    [line] = capsys.readouterr().err.splitlines()  # one line, no usage block
    assert message in line and line.endswith("(see 'berth routes " + argv[0] + " --help')")


# -- as a user runs it, against the real web process ----------------------------------------


@pytest.mark.e2e
def test_routes_cli_against_the_web_process(redis_server, redis_client, api, tmp_path):
    web, url = start_web(redis_server.url, tmp_path)
    try:
        def run(*args):
            return run_berth("routes", *args, url=url, token=api.admin)

        added = run("add", "shop.test", "--target", A, "--set-header", "X-Env=prod")
        assert added.returncode == 0, added.stderr
        route_id = added.stdout.split()[2].rstrip(":")
        assert added.stdout.startswith(f"added route {route_id}: shop.test -> {A} (version 1)")

        listed = run("list")
        assert listed.returncode == 0 and route_id in listed.stdout and A in listed.stdout

        shown = json.loads(run("show", "shop.test", "--json").stdout)
        assert (shown["id"], shown["version"]) == (route_id, 1)
        assert shown["request_headers"] == {"X-Env": "prod"}

        updated = run("update", "shop.test", "--target", B, "--hsts")
        assert updated.returncode == 0, updated.stderr
        assert f"-> {B} (version 2)" in updated.stdout

        # An update made from what was read at version 1: 409, one line.
        assert_one_line_failure(
            run("update", route_id, "--if-version", "1", "--no-hsts"),
            f"berth: Conflict: route '{route_id}' changed since version 1 (now 2)")
        # A bad value: the API's 400, one line naming the field.
        assert_one_line_failure(run("update", route_id, "--target", "not a url"),
                                "berth: Invalid input: targets must be a URL of printable ASCII")
        assert_one_line_failure(run("add", "bad_host!", "--target", A),
                                "berth: Invalid input: host 'bad_host!' is not a valid DNS name")

        removed = run("rm", route_id)
        assert removed.returncode == 0 and removed.stdout.startswith(f"removed route {route_id}")
        assert run("list").stdout == "no routes\n"
        assert_one_line_failure(run("show", route_id), "berth: Not found: ")
    except BaseException:
        print(web.output())
        raise
    finally:
        web.stop()


def test_override_lets_an_admin_route_a_host_another_owner_holds(served, redis_client,
                                                                 capsys):
    url, api = served
    bob = api.token("user", "bob", "bob")
    assert berth(url, bob, "routes", "add", "bob.test", "-t", A) == 0
    capsys.readouterr()
    assert berth(url, api.admin, "routes", "add", "bob.test/ops", "-t", B) == 1
    assert capsys.readouterr().err.startswith("berth: Conflict: bob.test is held by another")
    assert berth(url, bob, "routes", "add", "bob.test/x", "-t", B, "--override") == 1
    assert "override needs an admin token" in capsys.readouterr().err
    assert berth(url, api.admin, "routes", "add", "bob.test/ops", "-t", B, "--override") == 0
    assert sorted(r.path_prefix for r in RouteStore(redis_client).list()) == ["/", "/ops"]


def test_wait_without_a_running_proxy_says_nothing_serves_it_yet(served_alone, capsys):
    url, api, _client = served_alone
    assert berth(url, api.admin, "routes", "add", "alone.test", "-t", A, "--wait") == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("added route rt_")
    assert captured.err == ("berth: no proxy worker is running: route table version 1 is "
                            "stored, and served once a proxy starts\n")


def test_wait_names_the_proxy_workers_behind_the_change(served_alone, capsys):
    """Workers as the API sees them (heartbeats and reports written here as proxies write
    them): one behind, one ahead of the stored table (it holds a table from before Redis
    lost its data, so not the change either), one serving it."""
    url, api, redis_client = served_alone
    now_ms = int(time.time() * 1000)
    for member, version in (("proxy/h:1", 0), ("proxy/h:2", 7), ("proxy-tls/h:3", 1)):
        redis_client.hset(keys.HEARTBEATS, member, now_ms)
        redis_client.hset(keys.PROXY_SERVED, member, json.dumps({"route": version}))
    assert berth(url, api.admin, "routes", "add", "late.test", "-t", A, "--wait",
                 "--wait-timeout", "0.3") == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("added route rt_")  # stored all the same
    assert captured.err == ("berth: Not served: after 0.3s, 2 of 3 proxy workers do not serve "
                            "route table version 1 yet: proxy/h:1 (at 0), proxy/h:2 (at 7)\n")
    redis_client.hset(keys.PROXY_SERVED, "proxy/h:1", json.dumps({"route": 1}))
    redis_client.hset(keys.PROXY_SERVED, "proxy/h:2", json.dumps({"route": 1}))
    assert berth(url, api.admin, "routes", "rm", "late.test", "--wait",
                 "--wait-timeout", "0.3") == 1  # the removal is version 2
    assert "3 of 3 proxy workers do not serve route table version 2" in capsys.readouterr().err
