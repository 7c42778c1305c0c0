"""gunicorn settings shared by the `proxy` and `proxy-tls` processes.

A gunicorn config file is a module of settings, so each process's file star-imports this one
and adds its bind (and TLS hooks). Request limits are enforced by gunicorn's parser before
the app sees anything: request line -> 414, header count or size -> 431, Content-Length with
Transfer-Encoding, differing or repeated Content-Length, chunked HTTP/1.0 -> 400.
Slow clients: a request head must arrive within `keepalive` seconds (the same timer that
closes idle keep-alive connections); body reads and response writes then time out after
BERTH_PROXY_CLIENT_TIMEOUT_S without progress (set on the socket by the app).
"""

from gunicorn.http import wsgi as _gunicorn_wsgi

from app.settings import load_or_exit

settings = load_or_exit()

# Responses say "Server: berth", not the server software and its version.
_gunicorn_wsgi.SERVER = "berth"

workers = settings.proxy_workers
worker_class = "gevent"
worker_connections = settings.proxy_worker_connections
keepalive = settings.proxy_keepalive_s
timeout = 30  # a worker that stops notifying the arbiter this long is replaced
graceful_timeout = 10
limit_request_line = settings.proxy_limit_request_line
limit_request_fields = settings.proxy_limit_request_fields
limit_request_field_size = settings.proxy_limit_request_field_size
header_map = "drop"  # headers with "_" could pose as others in the WSGI environ
# berth decides itself whom to believe (BERTH_TRUSTED_PROXIES); gunicorn believes nobody, so
# a client's X-Forwarded-Proto never changes wsgi.url_scheme.
forwarded_allow_ips = ""
sendfile = False
accesslog = None  # every request is an event on events:request:stream instead
errorlog = "-"
loglevel = settings.log_level
control_socket_disable = True  # several gunicorn processes run side by side; berth uses none


def post_worker_init(worker):
    """After fork and app import: start the route refresher, heartbeat and event flusher."""
    start = getattr(worker.wsgi, "start", None)
    if start is not None:
        start()


def worker_exit(server, worker):
    """Flush this worker's pending events and remove its heartbeat."""
    stop = getattr(worker.wsgi, "stop", None)
    if stop is not None:
        stop()
