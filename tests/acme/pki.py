"""Checking issued chains against pebble's root, as a TLS client would."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store


def load_chain(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode("ascii"))


def verify_chain(chain_pem: str, root_pem: str, name: str) -> x509.Certificate:
    """The leaf, after verifying it chains to `root_pem` and is valid for `name`."""
    leaf, *intermediates = load_chain(chain_pem)
    verifier = (PolicyBuilder().store(Store(load_chain(root_pem)))
                .time(datetime.datetime.now(datetime.UTC))
                .build_server_verifier(x509.DNSName(name)))
    verifier.verify(leaf, intermediates)
    return leaf
