"""Pebble (a test ACME CA) and pebble-challtestsrv (its DNS) on free loopback ports.

challtestsrv answers every A query with 127.0.0.1 and no AAAA query, so pebble validates
HTTP-01 for any name against 127.0.0.1:<http_port>, where the caller runs the responder
(the proxy). Only its DNS server listens; its challenge listeners are disabled.

Debian's pebble package ships no TLS certificate for pebble's own HTTPS listeners, so one is
made here for 127.0.0.1/localhost; `ca_bundle` is the file a client must trust to talk to it.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.procs import Proc, find_binary, free_port, wait_for_port

# Pebble's own knobs: no random validation sleeps, no fake badNonce rejections, and no reuse
# of valid authorizations, so every order really validates.
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}


def write_localhost_tls(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost; returns (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    # A unique subject: bundles of several instances' certificates must not shadow each other.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         f"pebble test listener {os.urandom(4).hex()}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "listener-cert.pem", directory / "listener-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Pebble:
    """pebble + pebble-challtestsrv, started together, stopped by PID.

    `http_port` is where pebble sends HTTP-01 validation requests (the proxy's plain port).
    `validity_s` sets the lifetime of issued certificates (pebble's default is five years).
    """

    def __init__(self, workdir: Path, *, http_port: int, validity_s: int | None = None,
                 env: dict[str, str] | None = None):
        self.workdir = workdir
        self.http_port = http_port
        self.validity_s = validity_s
        self.env = {**PEBBLE_ENV, **(env or {})}
        self.acme_port = free_port()
        self.management_port = free_port()
        self.dns_port = free_port()
        self.dns_management_port = free_port()
        self.pebble: Proc | None = None
        self.dns: Proc | None = None
        self.ca_bundle: Path | None = None
        self._key_path: Path | None = None

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://127.0.0.1:{self.management_port}"

    def start(self) -> Pebble:
        for binary in ("pebble", "pebble-challtestsrv"):
            if find_binary(binary) is None:
                raise RuntimeError(f"{binary} is not installed: run `make bootstrap`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.ca_bundle is None:
            self.ca_bundle, self._key_path = write_localhost_tls(self.workdir)
        self.dns = Proc(
            [find_binary("pebble-challtestsrv"), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
             "-tlsalpn01", "",
             "-management", f"127.0.0.1:{self.dns_management_port}"],
            self.workdir / "challtestsrv.log")
        wait_for_port(self.dns_port, proc=self.dns.popen)
        self.start_ca()
        return self

    def start_ca(self) -> None:
        """(Re)start pebble itself; a restarted pebble has new roots and forgets accounts."""
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.ca_bundle), "privateKey": str(self._key_path),
            "httpPort": self.http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        if self.validity_s:
            config["pebble"]["certificateValidityPeriod"] = self.validity_s
        config_path = self.workdir / "pebble-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        self.pebble = Proc([find_binary("pebble"), "-config", str(config_path),
                            "-dnsserver", f"127.0.0.1:{self.dns_port}"],
                           self.workdir / "pebble.log", env=self.env)
        wait_for_port(self.acme_port, proc=self.pebble.popen)
        wait_for_port(self.management_port, proc=self.pebble.popen)

    def stop_ca(self) -> None:
        """Stop pebble only (the CA becomes unreachable); `start_ca` brings it back."""
        if self.pebble is not None:
            self.pebble.stop()
            self.pebble = None

    def pause_ca(self) -> None:
        os.killpg(self.pebble.pid, signal.SIGSTOP)

    def resume_ca(self) -> None:
        os.killpg(self.pebble.pid, signal.SIGCONT)

    def root_pem(self) -> str:
        """Pebble's current root certificate: the trust anchor for what it issues."""
        response = requests.get(f"{self.management_url}/roots/0", verify=str(self.ca_bundle),
                                timeout=5)
        response.raise_for_status()
        return response.text

    def cert_status(self, serial_hex: str) -> dict:
        """{"Status": "Valid" | "Revoked", ...} for an issued certificate's serial."""
        response = requests.get(f"{self.management_url}/cert-status-by-serial/{serial_hex}",
                                verify=str(self.ca_bundle), timeout=5)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self.stop_ca()
        if self.dns is not None:
            self.dns.stop()
            self.dns = None
