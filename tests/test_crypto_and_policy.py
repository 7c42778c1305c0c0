"""Encryption at rest (app/crypto.py) and the certificate policies that need no CA."""

from __future__ import annotations

import pytest

from app.crypto import SecretBox, is_sealed
from app.errors import SettingsError
from app.settings import Settings
from workers.acme_client import RenewalWindow
from workers.certificates import backoff_s, lifetime_renewal, renewal_plan

KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n-----END PRIVATE KEY-----\n"


def test_seal_and_open_round_trip_bound_to_a_purpose():
    box = SecretBox("a secret key of 16+ characters")
    sealed = box.seal(KEY, "certificate-key:a")
    assert is_sealed(sealed) and "PRIVATE" not in sealed
    assert box.seal(KEY, "certificate-key:a") != sealed  # a fresh nonce every time
    assert box.open(sealed, "certificate-key:a") == KEY
    with pytest.raises(SettingsError):
        box.open(sealed, "certificate-key:b")  # moved to another record
    with pytest.raises(SettingsError):
        SecretBox("another secret key, 16+ chars").open(sealed, "certificate-key:a")


def test_without_a_secret_values_stay_plain_and_sealed_ones_are_refused():
    plain = SecretBox("")
    assert not plain.encrypts and plain.seal(KEY) == KEY and plain.open(KEY) == KEY
    sealed = SecretBox("a secret key of 16+ characters").seal(KEY)
    with pytest.raises(SettingsError, match="BERTH_SECRET_KEY"):
        plain.open(sealed)


def test_renewal_plan_uses_the_suggested_window_when_offered():
    assert renewal_plan(0, 90, None) == (60, "lifetime")
    assert lifetime_renewal(1000, 1000 + 90 * 86400) == 1000 + 60 * 86400
    assert renewal_plan(0, 90, RenewalWindow(renew_at=None, retry_at=5)) == (60, "lifetime")
    assert renewal_plan(0, 90, RenewalWindow(renew_at=42.5, retry_at=5)) == (42.5, "ari")


def test_backoff_doubles_up_to_the_cap():
    settings = Settings.from_env({}, acme_backoff_s=300, acme_backoff_max_s=1000)
    assert [backoff_s(settings, n) for n in (1, 2, 3, 4)] == [300, 600, 1000, 1000]


def test_settings_validate_the_new_variables():
    assert Settings.from_env({"BERTH_EXPIRY_WARN_DAYS": "1, 7,30"}).expiry_warn_days == (30, 7, 1)
    for env in ({"BERTH_EXPIRY_WARN_DAYS": "soon"}, {"BERTH_ACME_STAGING_URL": "http://x/dir"},
                {"BERTH_ACME_KEY_TYPE": "dsa"},
                {"BERTH_ACME_BACKOFF_S": "600", "BERTH_ACME_BACKOFF_MAX_S": "60"}):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env(env)
        assert any(name in str(caught.value) for name in env)
