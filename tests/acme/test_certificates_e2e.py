"""Certificates end to end: the real worker and scheduler processes, pebble validating HTTP-01
through the real proxy process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import time

import pytest
from cryptography import x509
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker

from app import redis as keys
from app.certificates import CertificateCommands
from app.crypto import SecretBox
from app.events import Event
from app.models import Certificate, Route
from app.settings import Settings
from app.stores.certificates import CertificateStore
from app.stores.routes import RouteStore
from app.tracing import new_trace_id, trace_context
from harness.pebble import Pebble
from harness.proxy import ProxyProcess
from proxy.certificates import CertIndex
from tests.acme.conftest import process_env, start_scheduler, start_worker
from tests.acme.pki import verify_chain
from tests.e2e.backends import HttpBackend
from tests.support.procs import wait_until
from workers.acme_client import AcmeAccounts
from workers.broker import create_broker

pytestmark = [pytest.mark.acme, pytest.mark.e2e]


class Platform:
    """Worker/scheduler processes over the test Redis, and the commands the API would run."""

    def __init__(self, redis_client, pebble: Pebble, tmp_path, **env):
        self.redis = redis_client
        self.pebble = pebble
        self.tmp_path = tmp_path
        self.env = process_env(_url(redis_client), pebble, **env)
        self.settings = Settings.from_env(self.env)
        self.store = CertificateStore(redis_client)
        self.broker = create_broker(self.settings)
        self.broker.flush_all()
        self.commands = CertificateCommands(self.settings, self.store, self.broker)
        self.procs = {}

    def start(self, name: str) -> None:
        log_path = self.tmp_path / f"{name}-{len(self.procs)}.log"
        if name.startswith("worker"):
            self.procs[name] = start_worker(self.env, log_path)
        else:
            self.procs[name] = start_scheduler(self.env, log_path)

    def create(self, name: str, *domains: str, trace_id: str | None = None) -> str:
        with trace_context(trace_id) as trace:
            self.commands.create({"id": name, "domains": domains}, "alice")
        return trace

    def wait_for(self, name: str, predicate, what: str, timeout: float = 30) -> Certificate:
        return wait_until(lambda: (c := self.store.find(name)) is not None and predicate(c)
                          and c, timeout=timeout, what=what)

    def events(self, subject: str) -> list[Event]:
        entries = self.redis.xrange(keys.stream("certificate"))
        return [e for e in (Event.from_entry(*x) for x in entries) if e.subject == subject]

    def types(self, subject: str) -> list[str]:
        return [e.type for e in self.events(subject)]

    def close(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.broker.close()

    def logs(self) -> str:
        return "\n".join(f"----- {n} -----\n{p.output()}" for n, p in self.procs.items())


def _url(client) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


@contextlib.contextmanager
def platform_for(redis_client, pebble, tmp_path, **env):
    platform = Platform(redis_client, pebble, tmp_path, **env)
    try:
        yield platform
    except BaseException:
        print(platform.logs())
        raise
    finally:
        platform.close()


def test_worker_issues_with_the_callers_trace(redis_client, pebble, proxy, tmp_path,
                                              pebble_root):
    with platform_for(redis_client, pebble, tmp_path) as platform:
        platform.start("worker")
        trace = platform.create("site", "site.example.com", "www.site.example.com",
                                trace_id=new_trace_id())
        cert = platform.wait_for("site", lambda c: c.status == "active", "issuance")
        for name in ("site.example.com", "www.site.example.com"):
            verify_chain(cert.cert_pem, pebble_root, name)
        wait_until(lambda: "ready" in platform.types("site"), what="ready event")
        events = platform.events("site")
        assert [e.type for e in events] == ["generation_started", "ready"]
        assert {e.trace_id for e in events} == {trace}


def _account_orders(redis_client, pebble, email: str) -> list[str]:
    """Every order the CA holds for the account berth uses with `email`."""
    accounts = AcmeAccounts(redis_client, SecretBox("end-to-end secret key 0123456789"),
                            ca_bundle=str(pebble.ca_bundle))
    acme = accounts.client(pebble.directory_url, email)
    account = acme._fetch(acme.acme.net.account.uri).json()
    return acme._fetch(account["orders"]).json()["orders"]


def _requeue_messages_of_dead_workers(settings: Settings, queue: str) -> None:
    """Run Dramatiq's own recovery pass now: it moves the unacknowledged messages of workers
    whose heartbeat stopped back to their queue. A live worker would run it by chance, after
    its 60 s heartbeat timeout; here it runs at once, and counts every worker as dead. Call it
    only while no worker is alive, once every message but the killed worker's is acknowledged:
    any other would be delivered a second time, so more than one worker holding messages of
    `queue` fails here rather than as a doubled job later."""
    broker = RedisBroker(url=settings.redis_url, heartbeat_timeout=1,
                         maintenance_chance=MAINTENANCE_SCALE)
    try:
        # Dramatiq's key for what a worker fetched and has not acknowledged yet.
        acks = f"{keys.DRAMATIQ_NAMESPACE}:__acks__.*.{queue}"
        holders = [k.decode() for k in broker.client.scan_iter(acks) if broker.client.scard(k)]
        assert len(holders) <= 1, (
            f"several workers hold unacknowledged {queue} messages: {sorted(holders)}")
        broker.do_qsize(queue)
    finally:
        broker.close()


def test_sigkilled_worker_mid_issuance_redelivery_completes_the_same_order(
        redis_client, pebble, proxy, tmp_path, pebble_root):
    email = f"kill-{os.getpid()}@example.com"
    with platform_for(redis_client, pebble, tmp_path, BERTH_ACME_EMAIL=email,
                      BERTH_ACME_LOCK_TTL_S="3") as platform:
        platform.start("worker")
        # With the proxy paused, pebble's validation request waits unanswered: the order is
        # placed and recorded, its challenge answered, and the worker is stuck polling.
        os.killpg(proxy.proc.pid, signal.SIGSTOP)
        try:
            platform.create("killed", "killed.example.com")
            cert = platform.wait_for("killed", lambda c: bool(c.order_url), "order recorded")
            wait_until(lambda: list(redis_client.scan_iter(keys.acme_challenge("*"))),
                       what="challenge published")
            platform.procs.pop("worker").kill()
        finally:
            os.killpg(proxy.proc.pid, signal.SIGCONT)
        assert platform.store.get("killed").status == "issuing"
        _requeue_messages_of_dead_workers(platform.settings, "certificates")
        platform.start("worker-again")
        done = platform.wait_for("killed", lambda c: c.status == "active", "redelivered issue")
        verify_chain(done.cert_pem, pebble_root, "killed.example.com")
        assert not done.order_url
        assert _account_orders(redis_client, pebble, email) == [cert.order_url]
        wait_until(lambda: "ready" in platform.types("killed"), what="ready event")
        assert platform.types("killed") == ["generation_started", "ready"]
        assert pebble.cert_status(done.serial)["Status"] == "Valid"


def test_scheduler_renews_certificates_that_look_due(redis_client, pebble, proxy, tmp_path):
    with platform_for(redis_client, pebble, tmp_path, BERTH_RENEWAL_SCAN_S="1") as platform:
        platform.start("worker")
        platform.create("due", "due.example.com")
        first = platform.wait_for("due", lambda c: c.status == "active", "issuance")
        platform.store.update(first.replace(renew_after=time.time() - 1))
        platform.start("scheduler")
        renewed = platform.wait_for("due", lambda c: c.serial != first.serial, "renewal")
        assert renewed.renew_after > time.time()
        wait_until(lambda: "renewed" in platform.types("due"), what="renewed event")
        assert platform.types("due") == ["generation_started", "ready", "renewal_started",
                                         "renewed"]
        renewal = platform.events("due")[-1]
        assert renewal.trace_id and renewal.trace_id != platform.events("due")[0].trace_id


def test_ca_stopped_backoff_is_respected_by_the_scheduler(redis_client, proxy, tmp_path):
    ca = Pebble(tmp_path / "ca", http_port=proxy.port).start()
    try:
        with platform_for(redis_client, ca, tmp_path, BERTH_RENEWAL_SCAN_S="1",
                          BERTH_TRIM_INTERVAL_S="1", BERTH_ACME_BACKOFF_S="600") as platform:
            platform.start("worker")
            platform.create("down", "down.example.com")
            serving = platform.wait_for("down", lambda c: c.status == "active", "issuance")
            ca.stop_ca()
            platform.store.update(serving.replace(renew_after=time.time() - 1))
            platform.start("scheduler")
            failed = platform.wait_for("down", lambda c: c.backoff_until > 0, "backoff")
            assert failed.backoff_reason == "unavailable" and failed.failures == 1
            assert failed.status == "active" and failed.serial == serving.serial
            assert failed.cert_pem == serving.cert_pem
            # What the TLS proxy picks for the host is still the stored certificate.
            index = CertIndex(platform.store.list())
            assert index.find("down.example.com").serial == serving.serial
            wait_until(lambda: "renewal_failed" in platform.types("down"), what="event")
            why = platform.events("down")[-1]
            assert why.type == "renewal_failed" and why.data["reason"] == "unavailable"
            assert "cannot be reached" in why.data["error"]
            # The scheduler keeps running (each trim it enqueues is one more cycle of its
            # 1-second jobs) but enqueues no renewal during the backoff.
            trims_before = _trims(redis_client)
            wait_until(lambda: _trims(redis_client) >= trims_before + 3, timeout=30,
                       what="three more scheduler cycles")
            assert platform.store.get("down").failures == 1
            assert platform.types("down").count("renewal_started") == 1
    finally:
        ca.stop()


def _trims(redis_client) -> int:
    entries = redis_client.xrange(keys.stream("system"))
    return sum(1 for _id, fields in entries if fields.get("type") == "streams_trimmed")


def test_issued_certificate_serves_a_page_over_proxy_tls(redis_client, pebble, proxy, tmp_path,
                                                         pebble_root):
    backend = HttpBackend("site").start()
    tls = None
    with platform_for(redis_client, pebble, tmp_path) as platform:
        try:
            platform.start("worker")
            platform.create("page", "page.example.com")
            cert = platform.wait_for("page", lambda c: c.status == "active", "issuance")
            routes = RouteStore(redis_client)
            routes.create(routes.new("alice", Route.clean(
                {"host": "page.example.com", "targets": [backend.url]})))
            tls = ProxyProcess(tmp_path / "tls", _url(redis_client),
                               {"BERTH_SECRET_KEY": platform.env["BERTH_SECRET_KEY"],
                                "BERTH_TLS_DIR": str(tmp_path / "tls" / "files")},
                               workers=1, config="proxy/gunicorn_tls.py",
                               module="proxy.wsgi_tls:app", port_variable="BERTH_HTTPS_PORT")
            tls.start()
            # Verified as a browser would: SNI page.example.com, trusting pebble's root only.
            trust = ssl.create_default_context(cadata=pebble_root)

            def fetch():
                raw = socket.create_connection(("127.0.0.1", tls.port), timeout=5)
                with trust.wrap_socket(raw, server_hostname="page.example.com") as sock:
                    served = x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))
                    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: page.example.com\r\n"
                                 b"Connection: close\r\n\r\n")
                    answer = b""
                    while chunk := sock.recv(65536):
                        answer += chunk
                return answer, served

            answer, served = wait_until(lambda: (r := fetch())[0].startswith(b"HTTP/1.1 200")
                                        and r, what="page over TLS")
            assert format(served.serial_number, "x") == cert.serial
            assert b"x-backend: site" in answer.lower()
        finally:
            if tls is not None:
                tls.stop()
            backend.stop()
