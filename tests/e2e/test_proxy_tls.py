"""The real proxy-tls process: a certificate per name (SNI) from the store, swapped on
renewal while connections stay open, a default for unknown names, HSTS, WebSocket over TLS."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess

import pytest
import websocket
from cryptography import x509

from app.stores import CertificateStore
from app.tracing import new_trace_id
from harness.procs import wait_until
from harness.proxy import ProxyProcess
from tests.e2e.conftest import request_events
from tests.e2e.pki import LocalCA

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ca():
    return LocalCA()


def client_context(ca: LocalCA) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.pem)
    return context


def connect(proxy: ProxyProcess, name: str, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    return context.wrap_socket(raw, server_hostname=name)


def peer_certificate(sock: ssl.SSLSocket) -> x509.Certificate:
    return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))


def https(proxy, name, ca, path="/echo", headers=None):
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, timeout=5,
                                       context=client_context(ca))
    conn._tunnel_host = None
    conn.sock = connect(proxy, name, client_context(ca))
    conn.request("GET", path, headers={"Host": name, **(headers or {})})
    resp = conn.getresponse()
    body = resp.read()
    common_name = peer_certificate(conn.sock).subject.rfc4514_string()
    conn.close()
    return resp.status, resp.headers, body, common_name


def served_name(proxy, name, ca) -> str:
    with connect(proxy, name, client_context(ca)) as sock:
        return peer_certificate(sock).subject.rfc4514_string()


def test_certificates_chosen_by_name_exact_then_wildcard(tls_proxy, routes, backend,
                                                         redis_client, ca):
    certs = CertificateStore(redis_client)
    certs.create(ca.record("site", ("site.test",)))
    certs.create(ca.record("wild", ("*.wild.test",)))
    routes.add("site.test", [backend.url], hsts=True)
    routes.add("*.wild.test", [backend.url])
    wait_until(lambda: served_name(tls_proxy, "site.test", ca) == "CN=site.test",
               what="the site certificate")

    trace = new_trace_id()
    status, headers, body, name = https(tls_proxy, "site.test", ca,
                                        headers={"X-Trace-Id": trace})
    assert (status, name) == (200, "CN=site.test")
    sent = dict(json.loads(body)["headers"])
    assert sent["X-Forwarded-Proto"] == "https"
    assert sent["Forwarded"].endswith("proto=https")
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    [event] = request_events(redis_client, trace)
    assert event.source == "proxy-tls" and event.data["status"] == 200

    status, headers, _, name = https(tls_proxy, "a.wild.test", ca)
    assert (status, name) == (200, "CN=*.wild.test")
    assert "Strict-Transport-Security" not in headers


def test_unknown_names_get_the_self_signed_default(tls_proxy, ca):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with connect(tls_proxy, "nobody.test", context) as sock:
        assert peer_certificate(sock).subject.rfc4514_string() == "CN=berth default certificate"
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(tls_proxy, "nobody.test", client_context(ca))


def test_a_renewed_certificate_is_served_without_restart_and_open_connections_live_on(
        tls_proxy, routes, backend, redis_client, ca):
    certs = CertificateStore(redis_client)
    first = certs.create(ca.record("renewing", ("renew.test",), note="v1"))
    routes.add("renew.test", [backend.url])
    wait_until(lambda: served_name(tls_proxy, "renew.test", ca) == "CN=renew.test v1",
               what="the first certificate")
    conn = http.client.HTTPSConnection("127.0.0.1", tls_proxy.port, timeout=5)
    conn.sock = connect(tls_proxy, "renew.test", client_context(ca))
    conn.request("GET", "/echo/1", headers={"Host": "renew.test"})
    assert conn.getresponse().read()

    certs.update(ca.record("renewing", ("renew.test",), note="v2", version=first.version))
    wait_until(lambda: all(served_name(tls_proxy, "renew.test", ca) == "CN=renew.test v2"
                           for _ in range(6)), what="the renewed certificate")
    # The connection opened before the renewal still works, on its old certificate.
    conn.request("GET", "/echo/2", headers={"Host": "renew.test"})
    assert json.loads(conn.getresponse().read())["path"] == "/echo/2"
    assert peer_certificate(conn.sock).subject.rfc4514_string() == "CN=renew.test v1"
    conn.close()

    # A renewal that cannot be loaded (key of another certificate) leaves the last good one.
    current = certs.get("renewing")
    broken = ca.record("renewing", ("renew.test",), note="v3", version=current.version)
    certs.update(broken.replace(key_pem=ca.issue(("other.test",))[1]))
    # Certificates load on the first handshake that asks for them, so keep shaking hands.
    wait_until(lambda: served_name(tls_proxy, "renew.test", ca)
               and "cannot be loaded" in tls_proxy.output(), what="the refused renewal")
    # Each worker serves its own last good context, or the last good file in place: v2, or v1
    # in a worker no handshake had asked for v2 yet; never the broken v3 nor the default.
    good = {"CN=renew.test v1", "CN=renew.test v2"}
    assert all(served_name(tls_proxy, "renew.test", ca) in good for _ in range(6))


def test_websocket_over_tls(tls_proxy, routes, ws_backend, redis_client, ca):
    CertificateStore(redis_client).create(ca.record("ws", ("wss.test",)))
    routes.add("wss.test", [ws_backend.url])
    wait_until(lambda: served_name(tls_proxy, "wss.test", ca) == "CN=wss.test",
               what="the wss certificate")
    ws = websocket.create_connection(
        f"wss://127.0.0.1:{tls_proxy.port}/socket", host="wss.test", timeout=5,
        sslopt={"context": client_context(ca), "server_hostname": "wss.test"})
    for message in ("over", "tls" * 30_000):
        ws.send(message)
        assert ws.recv() == message
    ws.close()


def test_routes_asking_for_https_are_served_over_tls_without_a_redirect(tls_proxy, routes,
                                                                       backend, redis_client,
                                                                       ca):
    CertificateStore(redis_client).create(ca.record("always", ("always-tls.test",)))
    routes.add("always-tls.test", [backend.url], https_redirect="always")
    wait_until(lambda: served_name(tls_proxy, "always-tls.test", ca) == "CN=always-tls.test",
               what="the certificate")
    assert https(tls_proxy, "always-tls.test", ca)[0] == 200


def status_for(proxy, server_name: str | None, host: str) -> int:
    """The status of GET /echo for `host` on a connection whose handshake named
    `server_name` (None: no SNI, as a client connecting by address sends)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    with context.wrap_socket(raw, server_hostname=server_name) as sock:
        sock.sendall(f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                     .encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_a_name_the_connections_certificate_does_not_cover_is_421(tls_proxy, routes,
                                                                  backend, redis_client, ca):
    certs = CertificateStore(redis_client)
    certs.create(ca.record("front", ("front.test",)))
    certs.create(ca.record("hidden", ("hidden.test",)))
    certs.create(ca.record("pair", ("pair.test", "other.pair.test")))
    for host in ("front.test", "hidden.test", "pair.test", "other.pair.test", "plain.test"):
        routes.add(host, [backend.url])
    wait_until(lambda: served_name(tls_proxy, "pair.test", ca) == "CN=pair.test",
               what="the certificates")
    before = len(backend.requests)
    assert status_for(tls_proxy, "front.test", "hidden.test") == 421  # domain fronting
    assert status_for(tls_proxy, "front.test", "plain.test") == 421  # not on front's either
    assert status_for(tls_proxy, None, "hidden.test") == 421  # the default was served
    assert len(backend.requests) == before  # nothing reached a backend
    assert status_for(tls_proxy, "front.test", "front.test") == 200
    assert status_for(tls_proxy, "FRONT.test.", "front.test") == 200  # names compare normalized
    assert status_for(tls_proxy, "pair.test", "other.pair.test") == 200  # on the same one
    assert status_for(tls_proxy, None, "plain.test") == 200  # no certificate either way
    assert status_for(tls_proxy, "nobody.test", "plain.test") == 200

    # As a user would see it: curl connects for front.test and asks for hidden.test.
    done = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
         f"front.test:{tls_proxy.port}:127.0.0.1", "-H", "Host: hidden.test",
         f"https://front.test:{tls_proxy.port}/echo"],
        capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout == "421"
