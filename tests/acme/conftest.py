"""Fixtures for the certificate tests: pebble + pebble-challtestsrv on free loopback ports,
validating HTTP-01 against the real proxy process."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from app import redis as keys
from app.crypto import SecretBox
from app.redis import create_client
from app.settings import Settings
from harness.pebble import Pebble
from harness.proxy import ProxyProcess
from harness.worker import start_worker as start_worker_proc
from tests.support.procs import VENV_BIN, Proc, wait_until
from workers.acme_client import AcmeAccounts


@pytest.fixture(scope="session")
def proxy(redis_server, tmp_path_factory):
    """The real proxy process (plain HTTP): it answers pebble's HTTP-01 requests from the
    ChallengeStore the workers fill."""
    process = ProxyProcess(tmp_path_factory.mktemp("proxy"), redis_server.url, workers=1)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def pebble(proxy, tmp_path_factory):
    """The CA every test orders from; it validates HTTP-01 at 127.0.0.1:<proxy.port>."""
    ca = Pebble(tmp_path_factory.mktemp("pebble"), http_port=proxy.port).start()
    yield ca
    ca.stop()


def acme_settings(settings: Settings, pebble: Pebble, **overrides) -> Settings:
    """Settings whose `staging` and `production` directories are this pebble."""
    values = {"acme_staging_url": pebble.directory_url,
              "acme_production_url": pebble.directory_url,
              "acme_ca_bundle": str(pebble.ca_bundle), "acme_timeout_s": 30, **overrides}
    return Settings.from_env({}, redis_url=settings.redis_url, **values)


@pytest.fixture
def accounts(redis_client, pebble):
    return AcmeAccounts(redis_client, SecretBox("test secret key 0123456789"),
                        ca_bundle=str(pebble.ca_bundle), timeout_s=10)


@pytest.fixture
def pebble_root(pebble) -> str:
    return pebble.root_pem()


def fetch(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=10, **kwargs)


def process_env(redis_url: str, pebble: Pebble, **extra: str) -> dict[str, str]:
    """Environment of a worker or scheduler process using `pebble` as both directories."""
    return {"REDIS_URL": redis_url, "BERTH_ACME_STAGING_URL": pebble.directory_url,
            "BERTH_ACME_PRODUCTION_URL": pebble.directory_url,
            "BERTH_ACME_CA_BUNDLE": str(pebble.ca_bundle), "BERTH_ACME_TIMEOUT_S": "30",
            "BERTH_SECRET_KEY": "end-to-end secret key 0123456789",
            "BERTH_LOG_FORMAT": "text", "BERTH_PUBLISHER_FLUSH_MS": "20", **extra}


def start_worker(env: dict[str, str], log_path, threads: int = 4) -> Proc:
    """The real `worker` process (dramatiq over the Redis broker); returns once it is up."""
    proc = start_worker_proc(env, log_path, threads=threads)
    client = create_client(env["REDIS_URL"])
    try:
        wait_until(lambda: any(m.startswith("worker/") and _pid_alive(m)
                               for m in client.hkeys(keys.HEARTBEATS)),
                   timeout=30, what="worker heartbeat")
    except TimeoutError:
        print(proc.output())
        proc.stop()
        raise
    return proc


def start_scheduler(env: dict[str, str], log_path) -> Proc:
    return Proc([str(VENV_BIN / "python"), "-m", "scheduler"], log_path, env=env)


def _pid_alive(member: str) -> bool:
    pid = int(member.rsplit(":", 1)[1])
    return Path(f"/proc/{pid}").exists()
