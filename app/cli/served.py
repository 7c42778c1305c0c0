"""`--wait` means served: once a change of the route table or the certificate index is done,
wait until every live proxy worker has loaded it (app/served.py says how workers report).

The version to reach is the stored one read after the change, so it holds the change (and
perhaps later ones: waiting for those too costs moments, never correctness). Within
SERVED_TIMEOUT_S every live worker has it, or NotServed names those that have not; the caller
exits 1 then, like any `--wait` that does not reach the state it waits for. With no proxy
worker alive there is nothing to wait for; the caller is told so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from app.cli.client import ApiClient
from app.cli.errors import CliError

PROXIES_PATH = "/api/v1/proxies"
SERVED_TIMEOUT_S = 10.0
POLL_S = 0.05
NAMES = {"route": "route table", "certificate": "certificate index"}


class NotServed(CliError):
    pass


def _lagging(proxies: list[dict], table: str, version: int, stored: int) -> list[dict]:
    """The workers that do not serve `version` yet. One reporting more than is `stored`
    holds a table from before Redis lost its data (versions count from 0 again), so it has
    not loaded the change either."""
    return [p for p in proxies
            if not isinstance(p.get(table), int) or not version <= p[table] <= stored]


def wait_served(client: ApiClient, table: str, *, timeout: float = SERVED_TIMEOUT_S,
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> tuple[int, int]:
    """(version, live proxy workers) once each of them serves `table` at that version or
    later; NotServed after `timeout` seconds, naming every worker still behind."""
    status = client.get(PROXIES_PATH).data
    version = int(status["tables"][table])
    deadline = clock() + timeout
    while True:
        behind = _lagging(status["proxies"], table, version, int(status["tables"][table]))
        if not behind:
            return version, len(status["proxies"])
        if clock() >= deadline:
            names = ", ".join(
                f"{p.get('component')}/{p.get('instance')} (at {p.get(table)})" for p in behind)
            raise NotServed("Not served", f"after {timeout:g}s, {len(behind)} of "
                            f"{len(status['proxies'])} proxy workers do not serve "
                            f"{NAMES[table]} version {version} yet: {names}")
        sleep(POLL_S)
        status = client.get(PROXIES_PATH).data
