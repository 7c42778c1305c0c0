"""Which table versions the proxy workers serve, so a command can say "served" and mean it.

Each proxy worker (proxy and proxy-tls processes, every gunicorn worker) keeps the route table
and the certificate index in memory (proxy/route_cache.py). It records the version of each in
the hash `app.redis.PROXY_SERVED`, under its heartbeat's member "component/instance": with
every heartbeat, and at once after each reload (proxy/served.py). A change is served once
every live proxy worker (heartbeat younger than the stale limit) reports a version at least
the one the change produced: versions only grow, and a worker reads the version before the
records, so a version n in memory holds every change up to n.

`read_served` is what GET /api/v1/proxies answers and what `berth ... --wait` polls.
"""

from __future__ import annotations

import json

import redis

from app import redis as keys
from app.heartbeat import parse_heartbeats

PROXY_COMPONENTS = ("proxy", "proxy-tls")
TABLES = ("route", "certificate")  # the nouns whose tables the proxy holds


def encode(versions: dict[str, int]) -> str:
    return json.dumps(versions, separators=(",", ":"), sort_keys=True)


def _decode(raw: str | None) -> dict:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def read_served(client: redis.Redis, now_s: float, stale_s: float) -> dict:
    """{"tables": {noun: stored version}, "proxies": [{"component", "instance", "age_s",
    "route", "certificate"}]} for every live proxy worker, in one transaction; a worker that
    has not reported a table yet has None for it."""
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(keys.HEARTBEATS)
    pipe.hgetall(keys.PROXY_SERVED)
    for noun in TABLES:
        pipe.get(keys.table_version(noun))
    beats, served, *versions = pipe.execute()
    proxies = []
    for beat in parse_heartbeats(beats, now_s, stale_s):
        if beat["component"] not in PROXY_COMPONENTS or not beat["alive"]:
            continue
        reported = _decode(served.get(f"{beat['component']}/{beat['instance']}"))
        proxies.append({"component": beat["component"], "instance": beat["instance"],
                        "age_s": beat["age_s"],
                        **{noun: _version(reported.get(noun)) for noun in TABLES}})
    return {"tables": {noun: int(v or 0) for noun, v in zip(TABLES, versions, strict=True)},
            "proxies": proxies}


def _version(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
