"""Publishes N events from many greenlets in a gevent-patched process (as in a proxy worker).

Usage: python -m tests.support.gevent_publisher REDIS_URL N
Prints "published=<n> dropped=<n> blocked_max_ms=<float>" when done.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from app.events import Event, Publisher  # noqa: E402
from app.redis import create_client  # noqa: E402


def main(url, total):
    total = int(total)
    publisher = Publisher(create_client(url), batch=100, flush_ms=50)
    worst = 0.0

    def produce(offset):
        nonlocal worst
        for i in range(offset, total, 10):
            started = time.perf_counter()
            publisher.publish("request", Event.create("proxy_request_completed", "proxy",
                                                      f"req-{i}", {"i": i}))
            worst = max(worst, time.perf_counter() - started)
            if i % 50 == 0:
                gevent.sleep(0)

    gevent.joinall([gevent.spawn(produce, n) for n in range(10)])
    publisher.flush(timeout=20)
    print(f"published={publisher.published} dropped={publisher.dropped} "
          f"blocked_max_ms={worst * 1000:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
