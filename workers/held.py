"""Says in Redis which traces a worker is running now, so `--wait` can tell a command that
waits for a worker from one a worker runs (app/api/proxies.py GET /api/v1/jobs/{trace_id}).

While a message runs, the key `app.redis.job_held(trace_id)` exists with an expiry of
`ttl_ms`; one thread per worker process renews the markers of every message running there
every ttl_ms / 4, and the marker goes when the message is done. A worker that dies (SIGKILL)
renews nothing: its markers expire within ttl_ms, while its messages wait for redelivery
(workers/broker.py). Two messages of one trace may run at once (a route's certificate with
its route): the marker goes when this process runs none of the trace, and another process
still running one sets it again within a renewal.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import redis
from dramatiq.middleware import Middleware

from app import redis as keys
from app.background import ProcessThread

log = logging.getLogger(__name__)


class HeldMiddleware(Middleware):
    def __init__(self, client: redis.Redis, ttl_ms: int = 5000):
        self.client = client
        self.ttl_ms = ttl_ms
        self._running: Counter[str] = Counter()  # trace id -> messages running here
        self._lock = threading.Lock()
        self._renewing = ProcessThread("berth-job-held", self._renew)

    def before_process_message(self, broker, message):
        trace_id = message.options.get("trace_id")
        if not trace_id:
            return
        with self._lock:
            self._running[trace_id] += 1
        self._renewing.ensure_started()
        self._hold([trace_id])

    def after_process_message(self, broker, message, *, result=None, exception=None):
        trace_id = message.options.get("trace_id")
        with self._lock:
            if not trace_id or trace_id not in self._running:
                return
            self._running[trace_id] -= 1
            done = self._running[trace_id] <= 0
            if done:
                del self._running[trace_id]
        if done:
            try:
                self.client.delete(keys.job_held(trace_id))
            except redis.RedisError as ex:  # it expires by itself within ttl_ms
                log.debug("could not clear the held marker of %s: %s", trace_id, ex)

    after_skip_message = after_process_message

    def before_worker_shutdown(self, broker, worker):
        self._renewing.stop()

    def _hold(self, trace_ids: list[str]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for trace_id in trace_ids:
                pipe.set(keys.job_held(trace_id), 1, px=self.ttl_ms)
            pipe.execute()
        except redis.RedisError as ex:  # only `--wait`'s note depends on it; the job goes on
            log.debug("could not mark %d trace(s) held: %s", len(trace_ids), ex)

    def _renew(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl_ms / 4000):
            with self._lock:
                running = list(self._running)
            if running:
                self._hold(running)
