"""The per-worker TLS contexts: chosen by name, rebuilt on renewal, last good kept."""

from __future__ import annotations

import ssl
import stat

from app.certificates import key_purpose
from app.crypto import SecretBox
from proxy.certificates import CertIndex
from proxy.tls import TlsContexts
from proxy.tls_files import ensure_default_certificate
from tests.e2e.pki import LocalCA


class Table:
    """Stands in for the TableCache: `get()` gives the current index."""

    def __init__(self, *certs):
        self.index = CertIndex(certs)

    def get(self):
        return self.index


def test_contexts_by_name_renewal_and_last_good(tmp_path):
    ca = LocalCA()
    first = ca.record("site", ("site.test", "*.site.test"))
    table = Table(first)
    tls = TlsContexts(table, SecretBox(""), tmp_path)
    context = tls.context_for("site.test")
    assert isinstance(context, ssl.SSLContext)
    assert tls.context_for("www.site.test") is context and tls.builds == 1
    assert tls.context_for("other.test") is None and tls.context_for(None) is None
    pem = tmp_path / "site.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in pem.read_text()

    renewed = ca.record("site", ("site.test",), note="v2")
    table.index = CertIndex([renewed])
    assert tls.context_for("site.test") is not context and tls.builds == 2
    good = pem.read_text()

    broken = ca.record("site", ("site.test",), note="v3").replace(
        key_pem=ca.issue(("x.test",))[1])
    table.index = CertIndex([broken])
    assert tls.context_for("site.test") is tls.context_for("site.test") is not None
    assert tls.builds == 2  # the broken one was tried once, the last good one serves
    assert pem.read_text() == good
    assert [p.name for p in tmp_path.iterdir()] == ["site.pem"]


def test_sealed_keys_are_opened(tmp_path):
    ca = LocalCA()
    box = SecretBox("a secret key of some length")
    cert = ca.record("sealed", ("sealed.test",))
    sealed = cert.replace(key_pem=box.seal(cert.key_pem, key_purpose(cert.id)))
    assert TlsContexts(Table(sealed), box, tmp_path).context_for("sealed.test") is not None


def test_default_certificate_is_made_once(tmp_path):
    path = ensure_default_certificate(tmp_path)
    made = path.read_text()
    assert ensure_default_certificate(tmp_path).read_text() == made
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(path)


def test_misdirected_when_the_served_certificate_does_not_cover_the_host():
    ca = LocalCA()
    index = CertIndex([ca.record("site", ("site.test", "*.site.test")),
                       ca.record("other", ("other.test",))])
    assert not index.misdirected("site.test", "site.test")
    assert not index.misdirected("site.test", "www.site.test")  # its wildcard
    assert not index.misdirected("www.site.test", "site.test")  # same certificate
    assert index.misdirected("site.test", "other.test")
    assert index.misdirected("site.test", "a.b.site.test")  # a wildcard covers one label
    assert index.misdirected("site.test", "uncertified.test")
    assert index.misdirected(None, "other.test")  # the default was served
    assert not index.misdirected(None, "uncertified.test")
    assert not index.misdirected("unknown.test", "uncertified.test")
