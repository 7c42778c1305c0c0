"""/api/v1/certificates in process (falcon TestClient) over a real Redis: validation, owner
scoping, 202 with the trace id, and the job each command enqueues with that trace id."""

from __future__ import annotations

import time

import dramatiq
import pytest

from app.certificates import CertificateCommands
from app.stores.certificates import CertificateStore

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BASE = "/api/v1/certificates"


def queued(redis_client, queue: str = "certificates") -> list[dramatiq.Message]:
    raw = redis_client.hvals(f"dramatiq:{queue}.msgs")
    return [dramatiq.Message.decode(r.encode()) for r in raw]


@pytest.fixture
def certs(api, redis_client):
    store = CertificateStore(redis_client)
    api.alice = api.token("user", "alice")
    api.bob = api.token("user", "bob")
    api.store = store
    return api


def _create(api, secret, name="site", domains=("site.example.com",), **extra):
    return api.post(BASE, secret, json={"name": name, "domains": list(domains), **extra},
                    headers={"X-Trace-Id": TRACE})


def test_create_answers_202_with_the_trace_id_and_enqueues_issue(certs, redis_client):
    created = _create(certs, certs.alice, domains=["Site.Example.com", "www.site.example.com"])
    assert created.status_code == 202, created.text
    assert created.json["trace_id"] == TRACE == created.headers["X-Trace-Id"]
    cert = created.json["certificate"]
    assert cert["id"] == "site" and cert["owner"] == "alice" and cert["status"] == "pending"
    assert cert["domains"] == ["site.example.com", "www.site.example.com"]
    assert cert["directory"] == "staging" and cert["key_type"] == "ec256"
    assert created.headers["Location"] == f"{BASE}/site"
    [message] = queued(redis_client)
    assert message.actor_name == "issue_certificate"
    assert message.kwargs == {"certificate": "site"}
    assert message.options["trace_id"] == TRACE


@pytest.mark.parametrize("payload, field", [
    ({"name": "w", "domains": ["*.example.com"]}, "domains"),
    ({"name": "Bad Name", "domains": ["a.example.com"]}, "name"),
    ({"name": "x", "domains": []}, "domains"),
    ({"name": "x", "domains": ["a.example.com"], "owner": "bob"}, "owner"),
    ({"name": "x", "domains": ["a.example.com"], "directory": "http://ca.example/dir"},
     "directory"),
    ({"name": "x", "domains": ["a.example.com"], "key_type": "dsa"}, "key_type"),
])
def test_create_validates(certs, payload, field):
    answer = certs.post(BASE, certs.alice, json=payload)
    assert answer.status_code == 400, answer.text
    assert answer.json["field"] == field


def test_create_with_directory_url_and_rsa(certs):
    created = _create(certs, certs.alice, directory="https://ca.example.net/dir",
                      key_type="rsa2048")
    assert created.status_code == 202
    assert created.json["certificate"]["directory"] == "https://ca.example.net/dir"


def test_duplicate_name_is_a_conflict(certs):
    assert _create(certs, certs.alice).status_code == 202
    assert _create(certs, certs.bob).status_code == 409


def test_owners_see_only_their_own(certs):
    _create(certs, certs.alice, name="alices")
    _create(certs, certs.bob, name="bobs", domains=["bob.example.com"])
    names = lambda secret: [c["id"] for c in certs.get(BASE, secret).json["items"]]  # noqa: E731
    assert names(certs.alice) == ["alices"]
    assert names(certs.bob) == ["bobs"]
    assert sorted(names(certs.admin)) == ["alices", "bobs"]
    for path in (f"{BASE}/alices", f"{BASE}/alices/renew", f"{BASE}/alices/revoke"):
        method = certs.get if path.endswith("alices") else certs.post
        assert method(path, certs.bob).status_code == 404
    assert certs.delete(f"{BASE}/alices", certs.bob).status_code == 404
    assert certs.get(f"{BASE}/alices", certs.admin).status_code == 200


def test_show_has_expiry_renewal_and_last_error_but_never_the_key(certs):
    _create(certs, certs.alice)
    stored = certs.store.get("site")
    now = time.time()
    certs.store.update(stored.replace(
        status="active", cert_pem="-----BEGIN CERTIFICATE-----\n...", key_pem="secret-key",
        not_before=now - 10, not_after=now + 90 * 86400, renew_after=now + 60 * 86400,
        renewal_source="lifetime", last_error="earlier failure",
        backoff_until=now + 300, backoff_reason="validation"))
    shown = certs.get(f"{BASE}/site", certs.alice).json
    assert 89 * 86400 < shown["expires_in_s"] <= 90 * 86400
    assert shown["renewal"] == {"renew_after": pytest.approx(now + 60 * 86400),
                                "source": "lifetime", "in_progress": False}
    assert shown["last_error"] == "earlier failure"
    assert shown["backoff"]["reason"] == "validation"
    assert shown["cert_pem"].startswith("-----BEGIN CERTIFICATE")
    listed = certs.get(BASE, certs.alice).json["items"][0]
    assert "cert_pem" not in listed
    for body in (shown, listed):
        assert "key_pem" not in body and "order_key_pem" not in body
        assert "secret-key" not in str(body)


def test_actions_enqueue_their_jobs(certs, redis_client):
    _create(certs, certs.alice)
    stored = certs.store.get("site")
    certs.store.update(stored.replace(status="active", cert_pem="(pem)",
                                      renew_after=time.time() + 3600))
    redis_client.delete("dramatiq:certificates", "dramatiq:certificates.msgs")  # the issue
    headers = {"X-Trace-Id": TRACE}
    renew = certs.post(f"{BASE}/site/renew", certs.alice, headers=headers)
    assert renew.status_code == 202 and renew.json["trace_id"] == TRACE
    assert certs.store.get("site").renew_after <= time.time()  # made due now
    revoke = certs.post(f"{BASE}/site/revoke", certs.alice, json={"reason": "keyCompromise"},
                        headers=headers)
    assert revoke.status_code == 202
    convert = certs.post(f"{BASE}/site/convert-to-production", certs.alice, headers=headers)
    assert convert.status_code == 202
    delete = certs.delete(f"{BASE}/site", certs.alice, headers=headers)
    assert delete.status_code == 202
    sent = sorted((m.actor_name, tuple(sorted(m.kwargs.items())), m.options["trace_id"])
                  for m in queued(redis_client))
    assert sent == [
        ("convert_certificate_to_production", (("certificate", "site"),), TRACE),
        ("delete_certificate", (("certificate", "site"),), TRACE),
        ("renew_certificate", (("certificate", "site"),), TRACE),
        ("revoke_certificate", (("certificate", "site"), ("reason", 1)), TRACE),
    ]


def test_refused_actions(certs):
    _create(certs, certs.alice)
    # Nothing issued yet: nothing to revoke.
    assert certs.post(f"{BASE}/site/revoke", certs.alice).status_code == 409
    bad = certs.post(f"{BASE}/site/revoke", certs.alice, json={"reason": "boredom"})
    assert bad.status_code == 400 and bad.json["field"] == "reason"
    assert certs.post(f"{BASE}/site/renew", certs.alice, json={"x": 1}).status_code == 400
    stored = certs.store.get("site")
    certs.store.update(stored.replace(status="failed", backoff_until=time.time() + 3600,
                                      backoff_reason="rate_limited", last_error="too many"))
    limited = certs.post(f"{BASE}/site/renew", certs.alice)
    assert limited.status_code == 409 and "rate-limited" in limited.json["description"]
    assert certs.get(f"{BASE}/nope", certs.alice).status_code == 404
    assert certs.post(f"{BASE}/site/unknown", certs.alice).status_code == 404


def test_a_route_host_gets_an_automatic_certificate_once(certs, redis_client, settings):
    commands = CertificateCommands(settings, certs.store, certs.broker)
    first = commands.for_route_host("App.Example.com", "alice")
    assert first.id == "auto-app-example-com" and first.domains == ("app.example.com",)
    assert commands.for_route_host("app.example.com", "alice").id == first.id
    _create(certs, certs.alice, name="multi", domains=["a.example.org", "b.example.org"])
    assert commands.for_route_host("b.example.org", "alice").id == "multi"
    issued = [m.kwargs["certificate"] for m in queued(redis_client)
              if m.actor_name == "issue_certificate"]
    assert sorted(issued) == ["auto-app-example-com", "multi"]
