"""The web process's WSGI app with the observability routes mounted, for end-to-end tests:
`gunicorn -c app/api/gunicorn_conf.py tests.support.observability_web:app`. Mounting twice
is harmless (falcon replaces a route), so this keeps working once app/api/app.py mounts them."""

from app.api import wsgi
from app.api.observability import add_observability_routes

add_observability_routes(wsgi.app, wsgi.settings, wsgi.client, wsgi.broker)
app = wsgi.app
