"""gunicorn settings shared by the `proxy` and `proxy-tls` processes.

A gunicorn config file is a module of settings, so each process's file star-imports this one
and adds its bind (and TLS hooks). Request limits are enforced by gunicorn's parser before
the app sees anything: request line -> 414, header count or size -> 431, Content-Length with
Transfer-Encoding, differing or repeated Content-Length, chunked HTTP/1.0 -> 400.
Slow clients: a request head must arrive within `keepalive` seconds (the same timer that
closes idle keep-alive connections); body reads and response writes then time out after
BERTH_PROXY_CLIENT_TIMEOUT_S without progress (set on the socket by the app).
"""

import os
import socket

from gunicorn.http import body as _gunicorn_body
from gunicorn.http import wsgi as _gunicorn_wsgi
from gunicorn.http.errors import InvalidChunkSize

from app.gunicorn_logging import berth_logger
from app.settings import load_or_exit

settings = load_or_exit()

# Responses say "Server: berth", not the server software and its version.
_gunicorn_wsgi.SERVER = "berth"

# gunicorn reads chunk sizes of any magnitude; a proxy in front of berth that wraps them at
# 64 bits would see the chunk end elsewhere and the two would disagree where requests start.
_MAX_CHUNK_SIZE = (1 << 63) - 1
_parse_chunk_size = _gunicorn_body.ChunkedReader.parse_chunk_size


def _bounded_chunk_size(self, unreader, data=None):
    size, rest = _parse_chunk_size(self, unreader, data)
    if size > _MAX_CHUNK_SIZE:
        raise InvalidChunkSize(b"chunk size out of range")
    return size, rest


_gunicorn_body.ChunkedReader.parse_chunk_size = _bounded_chunk_size

workers = settings.proxy_workers
# gunicorn's gevent worker with a cheaper per-request path (proxy/worker.py).
worker_class = "proxy.worker.ProxyWorker"
# One listening socket per worker, so the kernel spreads new connections over the workers.
# With one shared socket, whichever worker wakes first takes a burst of connections and
# keeps them for their whole keep-alive life (32 benchmark connections split 26/6). A worker
# that exits drops the connections still queued on its own socket; see also on_starting.
# An inherited socket (BERTH_PROXY_LISTEN_FD, under `make run`) is one socket, shared by the
# arbiter's workers: it outlives the arbiter, which per-worker sockets cannot (see bind_to).
# Measured in the same run (`python -m bench.proxy --only berth --rounds 5 --duration 4`,
# 2026-12-07, 2 cores busy with other work), shared / per-worker, medians: 1.00x small and
# 1.07x at 16 KiB with berth at ~1,300 req/s; 0.97x and 1.23x at ~3,300 req/s. Rounds of one
# target spread 2x, so no difference shows at this noise; the burst split above may still
# cost throughput on a quiet machine, where berth makes ~7,400 req/s.
reuse_port = settings.proxy_listen_fd < 0
worker_connections = settings.proxy_worker_connections
keepalive = settings.proxy_keepalive_s
timeout = 30  # a worker that stops notifying the arbiter this long is replaced
graceful_timeout = 10
limit_request_line = settings.proxy_limit_request_line
limit_request_fields = settings.proxy_limit_request_fields
limit_request_field_size = settings.proxy_limit_request_field_size
header_map = "drop"  # headers with "_" could pose as others in the WSGI environ
# gunicorn switches to its optional C parser (gunicorn_h1c) whenever that is installed; it
# takes "GET  /path" (two spaces) as a request and answers an unknown Transfer-Encoding
# 400 rather than 501. The framing guarantees (tests/hostile) hold for this one.
http_parser = "python"
# berth decides itself whom to believe (BERTH_TRUSTED_PROXIES); gunicorn believes nobody, so
# a client's X-Forwarded-Proto never changes wsgi.url_scheme.
forwarded_allow_ips = ""
sendfile = False
accesslog = None  # every request is an event on events:request:stream instead
errorlog = "-"
logger_class = berth_logger(settings)  # gunicorn's lines in berth's format
loglevel = settings.log_level
control_socket_disable = True  # several gunicorn processes run side by side; berth uses none


def bind_to(port: int) -> str:
    """gunicorn's `bind` for a proxy listening on `port`: BERTH_BIND_HOST:port, or the socket
    inherited on BERTH_PROXY_LISTEN_FD. supervisord's fcgi-program passes it as fd 0 and keeps
    it open while it runs (app/supervisor_sockets.py), so while a SIGKILLed arbiter is
    replaced, new connections wait in its backlog instead of being refused. gunicorn 27 takes
    it as `fd://N`: it dups the descriptor, closes N, and leaves the socket's listen backlog as
    supervisord set it (socket_backlog)."""
    if settings.proxy_listen_fd >= 0:
        return f"fd://{settings.proxy_listen_fd}"
    return f"{settings.bind_host}:{port}"


def on_starting(server):
    """Refuse to start when something listens on our address already: with reuse_port a
    second proxy on the same port would not fail to bind, it would share the traffic."""
    if server.master_pid or os.environ.get("LISTEN_FDS"):
        return  # a re-exec (USR2) or systemd hands the listeners over on purpose
    for address in server.cfg.address:
        if isinstance(address, tuple):
            _refuse_if_taken(*address)


def _refuse_if_taken(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR forgives TIME_WAIT leftovers, never a listening socket.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as ex:
            raise SystemExit(f"berth proxy: cannot listen on {host}:{port}: "
                             f"{ex.strerror or ex}") from None


def pre_request(worker, req):
    """Nothing: gunicorn's default logs every request line at debug level, one logging call
    per request; each request is an event on events:request:stream instead."""


def post_worker_init(worker):
    """After fork and app import: start the route refresher, heartbeat and event flusher."""
    start = getattr(worker.wsgi, "start", None)
    if start is not None:
        start()


_arbiter_redis = None


def child_exit(server, worker):
    """In the arbiter, once a worker exited (crashes included): its heartbeat and served
    report go at once, so `--wait` and `berth status` do not count it for the stale limit."""
    global _arbiter_redis
    from app.heartbeat import forget, instance_name
    from app.redis import create_client

    component = server.proc_name.removeprefix("berth-")  # proxy, proxy-tls
    try:
        _arbiter_redis = _arbiter_redis or create_client(settings.redis_url)
        forget(_arbiter_redis, f"{component}/{instance_name(worker.pid)}")
    except Exception as ex:  # noqa: BLE001 - never let the arbiter fail over this
        server.log.warning("could not remove the entries of worker %s: %s", worker.pid, ex)


def worker_exit(server, worker):
    """Flush this worker's pending events and remove its heartbeat."""
    stop = getattr(worker.wsgi, "stop", None)
    if stop is not None:
        stop()
