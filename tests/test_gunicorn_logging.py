"""gunicorn's lines in berth's format, with the listening address, and no import of redis
(whose direct ssl imports made gevent warn) before the gevent worker monkey-patches."""

from __future__ import annotations

import logging
import subprocess
import sys

from gunicorn.config import Config

from app.gunicorn_logging import berth_logger
from app.settings import Settings
from harness.procs import ROOT


def test_listening_line_names_the_address_gunicorn_leaves_empty_with_reuse_port(caplog):
    cfg = Config()
    cfg.set("bind", ["127.0.0.1:8080"])
    log = berth_logger(Settings.from_env({}))(cfg)
    with caplog.at_level(logging.INFO, logger="gunicorn.error"):
        log.info("Listening at: %s (%s)", "", 123)  # what gunicorn 27's arbiter logs
        log.info("Listening at: %s (%s)", "unix:/run/x.sock", 124)
    assert [r.getMessage() for r in caplog.records] == [
        "Listening at: http://127.0.0.1:8080 (123)", "Listening at: unix:/run/x.sock (124)"]


def test_gunicorn_configs_and_worker_class_import_no_redis(tmp_path):
    code = ("import sys; import app.api.gunicorn_conf, proxy.gunicorn_http, "
            "proxy.gunicorn_tls, proxy.worker; "
            "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env={"BERTH_TLS_DIR": str(tmp_path / "tls"),
                                          "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
