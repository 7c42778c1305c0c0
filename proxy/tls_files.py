"""Files of the TLS proxy: private PEM files written atomically, and the self-signed default
certificate. Kept apart from proxy/tls.py so the gunicorn config (run before the workers
monkey-patch the standard library) imports nothing but this."""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEFAULT_NAME = "default.pem"


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by this user only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temp, path)


def ensure_default_certificate(directory: Path, days: int = 365) -> Path:
    """A self-signed certificate for names berth has none for (made once, renewed when it
    nears its end). Clients rightly distrust it; it only lets the handshake complete."""
    path = directory / DEFAULT_NAME
    now = datetime.datetime.now(datetime.UTC)
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            if cert.not_valid_after_utc - now > datetime.timedelta(days=30):
                return path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth default certificate")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    write_private(path, key_pem + cert.public_bytes(serialization.Encoding.PEM).decode())
    return path
