"""The web process's app with the service routes mounted on it, for bench/services.py while
app.api.wsgi does not mount them yet (its composition root belongs to the API's owner).

    gunicorn -c app/api/gunicorn_conf.py bench._services_web:app
"""

from app.api.services import add_service_routes
from app.api.wsgi import app, broker, client, settings
from app.services import ServiceCommands
from app.stores.health import HealthStore
from app.stores.routes import RouteStore
from app.stores.services import ServiceStore
from workers.containers import Engine

engine = Engine(settings.docker_host, pull=settings.image_pull)
add_service_routes(app, ServiceCommands(settings, ServiceStore(client), RouteStore(client),
                                        HealthStore(client), broker, engine))
