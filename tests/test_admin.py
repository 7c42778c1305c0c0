"""`python -m app.admin ensure-token`: bootstrap the admin token file."""

import io
import stat
import subprocess
import sys

from app.admin import main
from app.stores.tokens import TokenStore
from tests.support.procs import ROOT, free_port


def run(redis_url, path):
    out = io.StringIO()
    code = main(["ensure-token", "--path", str(path)], environ={"REDIS_URL": redis_url}, out=out)
    return code, out.getvalue()


def test_first_run_creates_a_private_file_and_prints_the_secret_once(redis_server, redis_client,
                                                                      tmp_path):
    path = tmp_path / "state" / "admin-token"
    code, output = run(redis_server.url, path)
    assert code == 0
    secret = path.read_text().strip()
    assert secret.startswith("brt_") and secret in output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = TokenStore(redis_client).authenticate(secret)
    assert (token.name, token.scope, token.owner) == ("admin", "admin", "admin")
    assert [p.name for p in path.parent.iterdir()] == ["admin-token"]  # no temp file left

    code, again = run(redis_server.url, path)
    assert code == 0
    assert again.strip() == f"admin token: {path}"
    assert "brt_" not in again
    assert path.read_text().strip() == secret
    assert TokenStore(redis_client).count() == 1


def test_a_stale_or_foreign_file_is_replaced(redis_server, redis_client, tmp_path):
    path = tmp_path / "admin-token"
    path.write_text("brt_revoked-long-ago-0000000000\n")
    code, output = run(redis_server.url, path)
    assert code == 0
    secret = path.read_text().strip()
    assert secret in output and secret != "brt_revoked-long-ago-0000000000"
    assert TokenStore(redis_client).authenticate(secret).scope == "admin"

    _user, user_secret = TokenStore(redis_client).issue(name="u", scope="user", owner="u")
    path.write_text(user_secret)
    run(redis_server.url, path)
    assert TokenStore(redis_client).authenticate(path.read_text().strip()).scope == "admin"


def test_unreachable_redis_is_one_line_and_exit_1(tmp_path):
    path = tmp_path / "admin-token"
    result = subprocess.run(
        [sys.executable, "-m", "app.admin", "ensure-token", "--path", str(path)],
        env={"REDIS_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0", "PATH": ""},
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Redis" in lines[0]
    assert "hunter2" not in result.stderr
    assert not path.exists()


def test_the_real_command_against_redis(redis_server, redis_client, tmp_path):
    path = tmp_path / "admin-token"
    command = [sys.executable, "-m", "app.admin", "ensure-token", "--path", str(path)]
    env = {"REDIS_URL": redis_server.url, "PATH": ""}
    first = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=30)
    assert first.returncode == 0, first.stderr
    assert path.read_text().strip() in first.stdout
    second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert second.returncode == 0 and second.stdout.strip() == f"admin token: {path}"
