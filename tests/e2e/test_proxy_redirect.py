"""Plain-HTTP requests redirected to HTTPS (308): per route, or when a certificate covers the
host; ACME challenges never."""

from __future__ import annotations

import time

import pytest

from app.models import Certificate
from app.stores import CertificateStore, ChallengeStore
from harness.procs import wait_until
from tests.e2e.conftest import request

pytestmark = pytest.mark.e2e


def test_always_never_and_auto(proxy, routes, backend, redis_client):
    routes.add("always.test", [backend.url], https_redirect="always")
    routes.add("never.test", [backend.url], https_redirect="never")
    routes.add("auto.test", [backend.url])

    status, headers, _ = request(proxy.port, "GET", "/a/b?c=1", "always.test:80")
    assert status == 308
    assert headers["Location"] == "https://always.test:8443/a/b?c=1"
    assert request(proxy.port, "GET", "/", "never.test")[0] == 200
    # auto: no certificate covers the host yet, so it is served over HTTP.
    assert request(proxy.port, "GET", "/", "auto.test")[0] == 200

    CertificateStore(redis_client).create(Certificate(
        id="auto", domains=("auto.test", "never.test"), owner="alice", status="active",
        cert_pem="-----BEGIN CERTIFICATE-----", key_pem="-----BEGIN PRIVATE KEY-----",
        not_after=time.time() + 86400 * 30))
    wait_until(lambda: all(request(proxy.port, "GET", "/x", "auto.test")[0] == 308
                           for _ in range(6)), what="redirect once the certificate is active")
    assert request(proxy.port, "GET", "/", "never.test")[0] == 200

    # The ACME challenge path is never redirected.
    token = "redirect_token_" + "b" * 20
    ChallengeStore(redis_client).put(token, "key-auth")
    status, _, body = request(proxy.port, "GET", f"/.well-known/acme-challenge/{token}",
                              "always.test")
    assert (status, body) == (200, b"key-auth")
