"""workers/acme_client.py against a real pebble with real HTTP-01 validation."""

from __future__ import annotations

import json
import time

import pytest

from app import redis as keys
from app.crypto import SecretBox, is_sealed
from app.errors import ChallengeFailed, Unavailable
from app.redis import create_client
from app.stores.challenges import ChallengeStore
from tests.acme.pki import verify_chain
from workers.acme_client import AcmeAccounts, account_id, describe, generate_key_pem

pytestmark = pytest.mark.acme


def _issue(acme, challenges, domains, key_type="ec256"):
    key_pem = generate_key_pem(key_type)
    order_url = acme.place_order(domains)
    return acme.complete_order(order_url, key_pem, challenges, time.time() + 30), key_pem


def test_issue_validated_through_the_proxy(accounts, pebble, proxy, redis_client, pebble_root):
    acme = accounts.client(pebble.directory_url, "ops@example.com")
    issued, _ = _issue(acme, ChallengeStore(redis_client), ("www.example.com",))
    leaf = verify_chain(issued.cert_pem, pebble_root, "www.example.com")
    assert issued.domains == ("www.example.com",)
    assert issued.not_before <= time.time() < issued.not_after
    assert issued.serial == format(leaf.serial_number, "x")
    assert pebble.cert_status(issued.serial)["Status"] == "Valid"
    # Challenge answers are removed once the order is validated.
    assert not list(redis_client.scan_iter(keys.acme_challenge("*")))


def test_multiple_names_and_rsa(accounts, pebble, proxy, redis_client, pebble_root):
    acme = accounts.client(pebble.directory_url, "")
    names = ("a.example.net", "b.example.net", "c.example.org")
    issued, key_pem = _issue(acme, ChallengeStore(redis_client), names, key_type="rsa2048")
    assert sorted(issued.domains) == sorted(names)
    for name in names:
        verify_chain(issued.cert_pem, pebble_root, name)
    assert "BEGIN PRIVATE KEY" in key_pem


def test_account_is_reused_and_its_key_sealed_at_rest(redis_client, pebble, proxy):
    box = SecretBox("another secret key 0123456789")
    first = AcmeAccounts(redis_client, box, ca_bundle=str(pebble.ca_bundle))
    uri = first.client(pebble.directory_url, "a@example.com").acme.net.account.uri
    stored = json.loads(redis_client.get(keys.acme_account(
        account_id(pebble.directory_url, "a@example.com"))))
    assert is_sealed(stored["key"]) and stored["uri"] == uri
    assert "BEGIN" not in stored["key"] and '"d"' not in stored["key"]
    # Another process (new cache) with the same Redis gets the same account.
    second = AcmeAccounts(redis_client, box, ca_bundle=str(pebble.ca_bundle))
    assert second.client(pebble.directory_url, "a@example.com").acme.net.account.uri == uri
    # Another e-mail on the same directory is another account.
    assert second.client(pebble.directory_url, "b@example.com").acme.net.account.uri != uri


def test_failed_validation_raises_challenge_failed(accounts, pebble, proxy, redis_server):
    # The answers go to another database than the proxy reads: pebble gets a 404.
    elsewhere = create_client(redis_server.url.rsplit("/", 1)[0] + "/5")
    acme = accounts.client(pebble.directory_url, "")
    with pytest.raises(ChallengeFailed) as caught:
        _issue(acme, ChallengeStore(elsewhere), ("fails.example.com",))
    assert "fails.example.com" in caught.value.description
    elsewhere.flushdb()


def test_unreachable_ca_is_unavailable(redis_client, pebble):
    accounts = AcmeAccounts(redis_client, SecretBox(), ca_bundle=str(pebble.ca_bundle),
                            timeout_s=2)
    with pytest.raises(Unavailable):
        accounts.client("https://127.0.0.1:9/dir", "")


def test_revoke(accounts, pebble, proxy, redis_client):
    acme = accounts.client(pebble.directory_url, "")
    issued, _ = _issue(acme, ChallengeStore(redis_client), ("revoke.example.com",))
    acme.revoke(issued.cert_pem, reason=4)
    assert pebble.cert_status(issued.serial)["Status"] == "Revoked"
    acme.revoke(issued.cert_pem, reason=4)  # already revoked: done, not an error


def test_pebble_offers_no_renewal_information(accounts, pebble, proxy, redis_client):
    acme = accounts.client(pebble.directory_url, "")
    issued, _ = _issue(acme, ChallengeStore(redis_client), ("ari.example.com",))
    window = acme.renewal_window(issued.cert_pem)
    assert not acme.supports_renewal_info and window.renew_at is None
    assert describe(issued.cert_pem).serial == issued.serial
