"""The whole test Redis as plain data, to assert that a refused request changed nothing."""

from __future__ import annotations

import redis


def snapshot(client: redis.Redis) -> dict[str, object]:
    """Every key and its value (streams as their entries); the test database is small."""
    readers = {
        "string": client.get,
        "hash": client.hgetall,
        "set": lambda k: sorted(client.smembers(k)),
        "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        "list": lambda k: client.lrange(k, 0, -1),
        "stream": lambda k: client.xrange(k),
    }
    state = {}
    for key in sorted(client.scan_iter(count=1000)):
        kind = client.type(key)
        state[key] = (kind, readers[kind](key) if kind in readers else None)
    return state
