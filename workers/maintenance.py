"""Housekeeping actors: stream retention."""

from __future__ import annotations

import logging
import time

import dramatiq

from app import redis as keys
from app.jobs import TRIM_STREAMS
from workers.deps import WorkerDeps

log = logging.getLogger(__name__)


def trim_streams(deps: WorkerDeps) -> dict[str, int]:
    """Trim every event stream to its retention: at most `events_maxlen` entries (approximate)
    and nothing older than `events_retention_hours`. Returns entries removed per stream."""
    settings = deps.settings
    min_id = int((time.time() - settings.events_retention_hours * 3600) * 1000)
    pipe = deps.redis.pipeline(transaction=False)
    for name in keys.ALL_STREAMS:
        pipe.xtrim(name, maxlen=settings.events_maxlen, approximate=True)
        pipe.xtrim(name, minid=f"{min_id}-0", approximate=False)
    results = pipe.execute()
    removed = {
        name: int(results[2 * i]) + int(results[2 * i + 1])
        for i, name in enumerate(keys.ALL_STREAMS)
    }
    deps.publisher.emit("system", "streams_trimmed", "worker", "streams",
                        {"removed": removed, "maxlen": settings.events_maxlen,
                         "min_id": f"{min_id}-0"})
    log.info("trimmed streams: %s", removed)
    return removed


def register(broker: dramatiq.Broker, deps: WorkerDeps) -> None:
    def run_trim_streams() -> None:  # an actor returning a value makes Dramatiq warn each run
        trim_streams(deps)

    dramatiq.actor(run_trim_streams, broker=broker,
                   actor_name=TRIM_STREAMS.actor_name, queue_name=TRIM_STREAMS.queue_name)
