"""Encryption at rest for secrets stored in Redis (ACME account keys, certificate keys).

With BERTH_SECRET_KEY set, `SecretBox.seal` returns `enc:v1:<base64url(nonce|ciphertext)>`:
AES-256-GCM under a key derived from the secret with HKDF-SHA256, the record's purpose bound
as associated data so a sealed value cannot be moved to another slot unnoticed. Without a
secret the value is stored as is (development); `open` then refuses sealed values, so a
missing or wrong secret is an error, never garbage.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.errors import SettingsError

PREFIX = "enc:v1:"
_INFO = b"berth at-rest encryption v1"


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


class SecretBox:
    def __init__(self, secret_key: str = ""):
        self._aead = None
        if secret_key:
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=_INFO).derive(secret_key.encode("utf-8"))
            self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings) -> SecretBox:
        return cls(settings.secret_key)

    @property
    def encrypts(self) -> bool:
        return self._aead is not None

    def seal(self, plaintext: str, purpose: str = "") -> str:
        """The value to store: encrypted when a secret key is configured."""
        if not plaintext or self._aead is None:
            return plaintext
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), purpose.encode("utf-8"))
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, stored: str, purpose: str = "") -> str:
        """The plaintext of a stored value (a plain value passes through unchanged)."""
        if not is_sealed(stored):
            return stored
        if self._aead is None:
            raise SettingsError("BERTH_SECRET_KEY: a stored secret is encrypted, but no secret "
                                "key is configured")
        raw = base64.urlsafe_b64decode(stored[len(PREFIX):])
        try:
            plain = self._aead.decrypt(raw[:12], raw[12:], purpose.encode("utf-8"))
        except InvalidTag:
            raise SettingsError("BERTH_SECRET_KEY: a stored secret does not decrypt with the "
                                "configured secret key") from None
        return plain.decode("utf-8")
