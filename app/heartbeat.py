"""Component heartbeats: each long-running process records "I am alive" in one Redis hash.

Hash `app.redis.HEARTBEATS`: field "component/instance" -> last beat in ms since the epoch,
where instance is "<hostname>:<pid>". A process removes its own field when it stops cleanly;
a crashed one stays and is reported not alive once its beat is older than the stale limit.

A process may report more with its beat (`also`: commands queued on the beat's pipeline);
the proxy reports the table versions it serves that way (app/served.py).

The beating thread (app/background.py) starts on `ensure_started()`, which is cheap and
fork-aware: call it after fork (gunicorn `post_worker_init`, dramatiq `after_worker_boot`) or
on every request; it opens no connection before then.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from app import redis as keys
from app.background import ProcessThread

log = logging.getLogger(__name__)


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    def __init__(self, client: redis.Redis, component: str, every_s: float = 5.0, *,
                 also: Callable[[redis.client.Pipeline], None] | None = None):
        self.client = client
        self.component = component
        self.every_s = every_s
        self.also = also
        self._beating = ProcessThread(f"berth-heartbeat-{component}", self._run)

    @property
    def member(self) -> str:
        return f"{self.component}/{instance_name()}"

    def ensure_started(self) -> None:
        """Start beating in this process unless already started here (safe after fork)."""
        self._beating.ensure_started()

    def beat(self) -> None:
        if self.also is None:
            self.client.hset(keys.HEARTBEATS, self.member, int(time.time() * 1000))
            return
        pipe = self.client.pipeline(transaction=False)  # one round trip per beat
        pipe.hset(keys.HEARTBEATS, self.member, int(time.time() * 1000))
        self.also(pipe)
        pipe.execute()

    def stop(self) -> None:
        """Stop beating and remove this process from the hash (best effort)."""
        thread = self._beating.stop()
        if thread is None:  # not beating in this process
            return
        if thread is not threading.current_thread():
            thread.join(timeout=2.0)  # so no beat lands after the removal
        try:
            self.client.hdel(keys.HEARTBEATS, self.member)
        except redis.RedisError as ex:
            log.warning("could not remove heartbeat %s: %s", self.member, ex)

    def _run(self, stop: threading.Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                self.beat()
                if failing:
                    log.info("heartbeat of %s restored", self.member)
                failing = False
            except redis.RedisError as ex:
                if not failing:
                    log.warning("heartbeat of %s failed: %s", self.member, ex)
                failing = True
            stop.wait(self.every_s)


def read_heartbeats(client: redis.Redis, now_s: float, stale_s: float) -> list[dict]:
    """Every recorded component, sorted, with its age and whether it counts as alive."""
    return parse_heartbeats(client.hgetall(keys.HEARTBEATS), now_s, stale_s)


def parse_heartbeats(raw: dict, now_s: float, stale_s: float) -> list[dict]:
    """`read_heartbeats` of an HGETALL of the heartbeats hash read elsewhere (a pipeline)."""
    components = []
    for member, value in raw.items():
        member = member.decode() if isinstance(member, bytes) else member
        component, _, instance = member.partition("/")
        try:
            last_seen_ms = int(value)
        except (TypeError, ValueError):
            continue
        age_s = round(max(0.0, now_s - last_seen_ms / 1000), 3)
        components.append({"component": component, "instance": instance,
                           "last_seen_ms": last_seen_ms, "age_s": age_s,
                           "alive": age_s < stale_s})
    components.sort(key=lambda c: (c["component"], c["instance"]))
    return components
