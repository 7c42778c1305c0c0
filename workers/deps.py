"""What actors need, built once per worker process and passed to each actor module."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from app.events import Publisher
from app.settings import Settings


@dataclass(frozen=True)
class WorkerDeps:
    settings: Settings
    redis: redis.Redis
    publisher: Publisher


def create_deps(settings: Settings, client: redis.Redis) -> WorkerDeps:
    publisher = Publisher(client, maxlen=settings.events_maxlen, batch=settings.publisher_batch,
                          flush_ms=settings.publisher_flush_ms, buffer=settings.publisher_buffer)
    return WorkerDeps(settings=settings, redis=client, publisher=publisher)
