"""gunicorn config of the `proxy` process: plain HTTP on BERTH_BIND_HOST:BERTH_HTTP_PORT."""

from proxy.gunicorn_common import *  # noqa: F403 - a gunicorn config is a module of settings
from proxy.gunicorn_common import bind_to, settings

bind = bind_to(settings.http_port)
proc_name = "berth-proxy"
