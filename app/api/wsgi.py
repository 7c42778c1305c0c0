"""Entry for gunicorn (`web` in the Procfile): `gunicorn -c app/api/gunicorn_conf.py
app.api.wsgi:app`.

This module is the web process's composition root: it alone wires concrete dependencies,
including the two things `app/` may not import elsewhere: the Dramatiq broker from
workers/broker.py (the one place that builds it, with the trace middleware that stamps
enqueued messages) and the container engine from workers/containers.py (service commands
and logs). Nothing here connects: Redis clients connect on first use, after gunicorn has
forked, and the engine on its first call, so the web process starts while Docker is down.
"""

from app.api.app import create_api
from app.events import create_publisher
from app.heartbeat import Heartbeat
from app.logs import setup_logging
from app.redis import create_client
from app.settings import load_or_exit
from workers.broker import create_broker
from workers.containers import Engine

settings = load_or_exit()
setup_logging(settings.log_level, settings.log_format)
client = create_client(settings.redis_url)
broker = create_broker(settings)
publisher = create_publisher(settings, client)
heartbeat = Heartbeat(client, "web")
engine = Engine(settings.docker_host, pull=settings.image_pull)
app = create_api(settings, client, broker, publisher, heartbeat=heartbeat, engine=engine)
