"""gunicorn settings of the web process, from berth's Settings (the environment).

The gevent worker monkey-patches before it imports the app, so nothing here imports the app
at module level; the hooks import it inside the worker. The access log stays off: request
lines would carry query strings, and berth logs what it needs itself; gunicorn's own messages
are routed through app.logs like every other line.
"""

import sys

from app.gunicorn_logging import berth_logger
from app.settings import load_or_exit

_settings = load_or_exit()

bind = f"{_settings.bind_host}:{_settings.web_port}"
workers = _settings.web_workers
worker_class = "app.web_worker.WebWorker"  # outside app.api: imported before gevent patches
worker_connections = 1000
proc_name = "berth-web"
accesslog = None
errorlog = "-"
logger_class = berth_logger(_settings)
loglevel = _settings.log_level
timeout = 30
graceful_timeout = 5  # long-lived event streams are cut after this on shutdown
keepalive = 5
# gunicorn's control socket defaults to one path per user; several gunicorn processes of one
# user (web, proxies, tests) would fight over it, and berth does not use it.
control_socket_disable = True


def post_worker_init(worker):
    """Start this worker's heartbeat as soon as it is ready, not on its first request."""
    from app.api import wsgi

    wsgi.heartbeat.ensure_started()


def worker_exit(server, worker):
    """Flush buffered events and remove this worker's heartbeat on a clean exit."""
    wsgi = sys.modules.get("app.api.wsgi")
    if wsgi is None:  # the app never loaded
        return
    wsgi.publisher.close(timeout=2.0)
    wsgi.heartbeat.stop()
