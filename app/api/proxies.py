"""/api/v1/proxies: the table versions each live proxy worker serves; /api/v1/jobs: whether
a worker runs a trace's job now. What `berth ... --wait` polls (app/cli/waiting.py).

    GET /api/v1/proxies             {"tables": {"route": n, "certificate": n},
                                     "proxies": [{"component", "instance", "age_s",
                                                  "route", "certificate"}]}
    GET /api/v1/jobs/{trace_id}     {"trace_id", "running": true|false}

`tables` holds the stored versions; a change is served once every listed worker reports at
least the version read after the change (app/served.py). `running` is true while a worker
runs a message of the trace (workers/broker.py HeldMiddleware); false while the message
waits in its queue, waits for a retry, sits with a dead worker until it is redelivered, or
once it is done. Any token may ask: neither names a record, and a trace id is not guessable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import falcon
import redis

from app import redis as keys
from app.api.params import query
from app.errors import ValidationError
from app.served import read_served
from app.settings import Settings

# Any 32 lowercase hex digits, as documented (all zeros too: no job runs under it).
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class ProxiesResource:
    def __init__(self, settings: Settings, client: redis.Redis,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.client = client
        self.clock = clock

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        resp.media = read_served(self.client, self.clock(), self.settings.heartbeat_stale_s)


class JobResource:
    def __init__(self, client: redis.Redis):
        self.client = client

    def on_get(self, req: falcon.Request, resp: falcon.Response, trace_id: str) -> None:
        query(req)
        if not _TRACE_ID.fullmatch(trace_id):
            raise ValidationError("trace_id must be 32 lowercase hex digits", field="trace_id")
        resp.media = {"trace_id": trace_id,
                      "running": bool(self.client.exists(keys.job_held(trace_id)))}
