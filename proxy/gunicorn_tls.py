"""gunicorn config of the `proxy-tls` process: TLS on BERTH_BIND_HOST:BERTH_HTTPS_PORT, the
certificate chosen per hostname (SNI) from the certificate store (see proxy/tls.py)."""

from pathlib import Path

from proxy.gunicorn_common import *  # noqa: F403 - a gunicorn config is a module of settings
from proxy.gunicorn_common import bind_to, settings
from proxy.tls_files import ensure_default_certificate

bind = bind_to(settings.https_port)
proc_name = "berth-proxy-tls"

# gunicorn serves TLS only with a certificate configured: the self-signed default, shown to
# names berth has no certificate for. Per-name certificates come from the SNI callback.
certfile = keyfile = str(ensure_default_certificate(Path(settings.tls_dir)))


def ssl_context(config, default_ssl_context_factory):
    """Called in each worker after the app is imported: add the SNI certificate choice."""
    from proxy.wsgi_tls import app

    return app.tls.server_context(default_ssl_context_factory())
