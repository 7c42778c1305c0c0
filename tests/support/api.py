"""Helpers for the management API tests: an in-process app, tokens, and the real web process."""

from __future__ import annotations

from pathlib import Path

import falcon.testing

from app.api import create_api
from app.events import Publisher
from app.stores import hosts
from app.stores.tokens import TokenStore
from tests.support.policy import LOOPBACK_ALLOWED
from tests.support.procs import VENV_BIN, Proc, free_port, wait_for_port
from workers.broker import create_broker


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


class Api:
    """An app from `create_api` over the test Redis, a TestClient, and token helpers."""

    def __init__(self, settings, redis_client, **options):
        self.settings = settings
        self.redis = redis_client
        self.broker = create_broker(settings)
        self.publisher = Publisher(redis_client, flush_ms=10)
        self.tokens = TokenStore(redis_client)
        self.app = create_api(settings, redis_client, self.broker, self.publisher, **options)
        self.client = falcon.testing.TestClient(self.app)
        # What a started web process has done before its first answer (app/api/app.py,
        # _ClaimStoredRoutes) is not what a test's first request changes.
        hosts.claim_stored_routes(redis_client)
        self.admin = self.token("admin", "admin", "root")

    def token(self, scope: str = "user", owner: str = "alice", name: str = "t") -> str:
        _token, secret = self.tokens.issue(name=name, scope=scope, owner=owner)
        return secret

    def get(self, path: str, secret: str | None = None, **kwargs):
        return self.client.simulate_get(path, headers=self._headers(secret, kwargs), **kwargs)

    def post(self, path: str, secret: str | None = None, **kwargs):
        return self.client.simulate_post(path, headers=self._headers(secret, kwargs), **kwargs)

    def delete(self, path: str, secret: str | None = None, **kwargs):
        return self.client.simulate_delete(path, headers=self._headers(secret, kwargs), **kwargs)

    def _headers(self, secret: str | None, kwargs: dict) -> dict:
        headers = dict(kwargs.pop("headers", None) or {})
        if secret is not None:
            headers.update(bearer(secret))
        return headers

    def close(self) -> None:
        self.publisher.close(timeout=2.0)
        self.broker.close()


def start_web(redis_url: str, log_dir: Path, env: dict | None = None) -> tuple[Proc, str]:
    """The real `web` process (gunicorn, gevent worker) on a free loopback port."""
    port = free_port()
    proc = Proc([str(VENV_BIN / "gunicorn"), "-c", "app/api/gunicorn_conf.py",
                 "app.api.wsgi:app"],
                log_dir / f"web-{port}.log",
                env={"REDIS_URL": redis_url, "BERTH_WEB_PORT": str(port),
                     "BERTH_BIND_HOST": "127.0.0.1", "BERTH_LOG_FORMAT": "json",
                     "BERTH_USER_TARGET_NETWORKS": LOOPBACK_ALLOWED, **(env or {})})
    try:
        wait_for_port(port, timeout=20, proc=proc.popen)
    except Exception:
        proc.stop()
        print(proc.output())
        raise
    return proc, f"http://127.0.0.1:{port}"
