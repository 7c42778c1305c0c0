"""A consumer process for tests: counts events per subject through a Reader until stopped.

Usage: python -m tests.support.counting_consumer REDIS_URL STREAM GROUP CONSUMER [SLEEP_S]
Each batch's effects (HINCRBY per subject) are applied with the XACK in one script; the
optional sleep inside the handler makes a SIGKILL land mid-batch.
"""

import signal
import sys
import threading
import time

from app.events import Reader
from app.redis import create_client


def main(url, stream, group, consumer, sleep_s="0"):
    client = create_client(url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def handler(events, pipe):
        for event in events:
            pipe.hincrby("test:counts", event.subject, 1)
        pipe.incrby("test:applied", len(events))
        time.sleep(float(sleep_s))

    Reader(client, stream, group, consumer, handler, batch=50, block_ms=200,
           claim_idle_ms=500).run(stop)


if __name__ == "__main__":
    main(*sys.argv[1:])
