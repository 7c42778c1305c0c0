"""What actors need, built once per worker process and passed to each actor module."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from app.events import Publisher, create_publisher
from app.settings import Settings


@dataclass(frozen=True)
class WorkerDeps:
    settings: Settings
    redis: redis.Redis
    publisher: Publisher


def create_deps(settings: Settings, client: redis.Redis) -> WorkerDeps:
    publisher = create_publisher(settings, client)
    return WorkerDeps(settings=settings, redis=client, publisher=publisher)
