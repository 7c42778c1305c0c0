"""The whole test Redis as plain data, to assert that a refused request changed nothing.

Left out: what running processes write about themselves while a test runs (heartbeats, the
table versions proxy workers serve, Dramatiq's broker liveness). The session's proxies and
workers keep writing those into the shared test Redis; they are no stored data.
"""

from __future__ import annotations

import redis

from app import redis as keys

LIVENESS = frozenset({keys.HEARTBEATS, keys.HEARTBEAT_STATES, keys.PROXY_SERVED,
                      "dramatiq:__heartbeats__"})


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
        if key in LIVENESS:
            continue
        kind = client.type(key)
        state[key] = (kind, readers[kind](key) if kind in readers else None)
    return state
