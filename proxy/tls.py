"""TLS for the proxy-tls process: a certificate per hostname, chosen during the handshake.

gunicorn's `ssl_context` hook gives us its context (loaded with the self-signed default
certificate, served to names berth has no certificate for); `TlsContexts.server_context` adds
an SNI callback. For a name the certificate index covers (exact, then wildcard) the callback
switches the connection to that certificate's own SSLContext, built once per worker and kept
under the certificate's fingerprint. A renewal brings a new fingerprint, so the next handshake
gets a new context and open connections keep theirs: no restart, no reload signal.

Python loads certificates from files only, so a context is built from one combined PEM
(key, then chain) in BERTH_TLS_DIR, put in place with os.replace once it has loaded: a reader
never sees half a file, and the file in place is always the last good one. When a renewed
certificate cannot be loaded, the last good context for that certificate keeps serving.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import ssl
from pathlib import Path

from app.certificates import private_key_pem
from app.crypto import SecretBox
from app.errors import BerthError
from app.models import Certificate
from proxy.certificates import CertIndex
from proxy.route_cache import TableCache
from proxy.routing import normalize_host
from proxy.tls_files import write_private

log = logging.getLogger(__name__)

# The name a connection's handshake asked for (SNI), normalized, kept on its socket for the
# app's misdirected-request check (proxy/app.py); absent when the client sent none.
SERVER_NAME = "berth_server_name"

def fingerprint(cert: Certificate) -> str:
    return hashlib.sha256(cert.cert_pem.encode()).hexdigest()


class TlsContexts:
    """Per worker: SSLContexts by certificate fingerprint, and the SNI callback using them."""

    def __init__(self, certificates: TableCache[CertIndex], box: SecretBox, directory: Path):
        self.certificates = certificates
        self.box = box
        self.directory = Path(directory)
        self._by_fingerprint: dict[str, ssl.SSLContext] = {}
        self._current: dict[str, str] = {}  # certificate id -> fingerprint in use
        self._unusable: set[str] = set()  # fingerprints that failed to load
        self.builds = 0

    def server_context(self, base: ssl.SSLContext) -> ssl.SSLContext:
        """gunicorn's context, with the default certificate, choosing per name on SNI."""
        base.minimum_version = ssl.TLSVersion.TLSv1_2
        base.sni_callback = self._on_sni
        # gevent's server would shake hands inside its accept greenlet, where a client that
        # gives up (a scanner, an untrusted certificate) ends in a traceback on stderr; this
        # way gunicorn's connection handler does it and treats failures as client errors.
        base.wrap_socket = functools.partial(base.wrap_socket, do_handshake_on_connect=False)
        return base

    def context_for(self, host: str | None) -> ssl.SSLContext | None:
        """The context serving `host`, or None for the default certificate."""
        index = self.certificates.get()
        cert = index.find(host) if index is not None else None
        if cert is None:
            return None
        wanted = fingerprint(cert)
        context = self._by_fingerprint.get(wanted)
        if context is not None:
            return context
        last = self._current.get(cert.id)
        if wanted in self._unusable:  # tried once already; not on every handshake
            return self._by_fingerprint.get(last) if last else None
        try:
            context = self._build(cert)
        except (ssl.SSLError, OSError, ValueError, BerthError) as ex:
            self._unusable.add(wanted)
            if not last:  # this worker never loaded it: the file in place is the last good one
                last = self._load_last_good_file(cert)
            log.error("certificate %s cannot be loaded (%s); %s", cert.id, ex,
                      "serving the last good one" if last else "serving the default one")
            return self._by_fingerprint.get(last) if last else None
        self._by_fingerprint[wanted] = context
        self._current[cert.id] = wanted
        if last and last != wanted:  # renewed: open connections keep their own reference
            self._by_fingerprint.pop(last, None)
            log.info("certificate %s renewed: new handshakes use %s", cert.id, wanted[:16])
        return context

    def _load_last_good_file(self, cert: Certificate) -> str | None:
        """Load `<id>.pem` (written by any worker, only once it loaded); its cache key."""
        path = self.directory / f"{cert.id}.pem"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(path)
        except (ssl.SSLError, OSError):
            return None
        key = f"file:{cert.id}"
        self._by_fingerprint[key] = context
        self._current[cert.id] = key
        return key

    def _build(self, cert: Certificate) -> ssl.SSLContext:
        """A context from a staged file that replaces `<id>.pem` only once it has loaded, so
        the file in place is always the last good one."""
        path = self.directory / f"{cert.id}.pem"
        staged = path.with_name(f".{cert.id}.{os.getpid()}.pem")
        write_private(staged, private_key_pem(cert, self.box).strip() + "\n"
                      + cert.cert_pem.strip() + "\n")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(staged)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        os.replace(staged, path)
        self.builds += 1
        return context

    def _on_sni(self, connection, server_name: str | None, _base: ssl.SSLContext) -> None:
        try:
            name = normalize_host(server_name) if server_name else None
            setattr(connection, SERVER_NAME, name)
            context = self.context_for(name)
            if context is not None:
                connection.context = context
        except Exception:  # an exception here would abort the handshake with no answer
            log.exception("choosing a certificate for %r failed; serving the default one",
                          server_name)
        return None
