"""Entry for `python -m scheduler`: builds the scheduler from the environment and runs it
until SIGTERM or SIGINT."""

import signal
import threading

from app.events import create_publisher
from app.logs import setup_logging
from app.redis import create_client
from app.settings import load_or_exit
from scheduler.app import create_scheduler
from workers.broker import create_broker

settings = load_or_exit()
setup_logging(settings.log_level, settings.log_format)
client = create_client(settings.redis_url)
publisher = create_publisher(settings, client)
scheduler = create_scheduler(settings, client, create_broker(settings), publisher)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
scheduler.start()
stop.wait()
scheduler.shutdown()
publisher.close()
