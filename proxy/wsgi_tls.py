"""Entry for `gunicorn -c proxy/gunicorn_tls.py proxy.wsgi_tls:app`: the TLS proxy built from
the environment. Imported in each worker after fork; it opens no connection."""

from app.events import create_publisher
from app.logs import setup_logging
from app.redis import create_client
from app.settings import load_or_exit
from proxy.app import create_proxy

settings = load_or_exit()
setup_logging(settings.log_level, settings.log_format)
client = create_client(settings.redis_url)
publisher = create_publisher(settings, client)
app = create_proxy(settings, client, publisher, scheme="https", component="proxy-tls")
