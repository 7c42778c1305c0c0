"""Entry for `python -m workers.consumers` (`consumer` in the Procfile)."""

import signal
import sys
import threading

from app.logs import setup_logging
from app.redis import create_client
from app.settings import load_or_exit
from workers.broker import create_broker
from workers.consumers import create_consumer


def main() -> int:
    settings = load_or_exit()
    setup_logging(settings.log_level, settings.log_format)
    client = create_client(settings.redis_url)
    consumer = create_consumer(settings, client, create_broker(settings))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return consumer.run(stop)


if __name__ == "__main__":
    sys.exit(main())
