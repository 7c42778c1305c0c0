"""Component heartbeats: each long-running process records "I am alive" in one Redis hash.

Hash `app.redis.HEARTBEATS`: field "component/instance" -> last beat in ms since the epoch,
where instance is "<hostname>:<pid>"; hash `app.redis.HEARTBEAT_STATES`: the same field ->
why that process is degraded (its loops that are failing, app/background.py `degraded()`),
absent while it is healthy. Both are written together, by one script.

A process removes its own fields when it stops cleanly. A crashed one stays: it is reported
stale once its beat is older than the stale limit, and removed (by the next beat of any
process, or the next status read) once older than the forget limit, so a dead process is not
listed for ever. The hashes hold one field per process, so reading them whole is cheap.

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
from app.background import Backoff, ProcessThread, degraded

log = logging.getLogger(__name__)

FORGET_S = 600.0  # default: a beat older than this is removed

# KEYS: beats, states. ARGV: member ('' to only forget), now ms, state ('' when healthy),
# forget entries whose beat is older than this (ms). Returns how many were forgotten.
_BEAT = """
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if ARGV[3] == '' then redis.call('HDEL', KEYS[2], ARGV[1])
  else redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
end
local forgotten = 0
local beats = redis.call('HGETALL', KEYS[1])
for i = 1, #beats, 2 do
  if (tonumber(beats[i + 1]) or 0) < tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[1], beats[i])
    redis.call('HDEL', KEYS[2], beats[i])
    redis.call('HDEL', KEYS[3], beats[i])
    forgotten = forgotten + 1
  end
end
return forgotten
"""

# The beats, the degraded states, and what processes report with their beat (the proxy's
# served table versions): a forgotten process leaves none of the three behind.
_BEAT_KEYS = [keys.HEARTBEATS, keys.HEARTBEAT_STATES, keys.PROXY_SERVED]


def instance_name(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def state_text(states: dict[str, str]) -> str:
    return "; ".join(f"{name}: {reason}" for name, reason in sorted(states.items()))


class Heartbeat:
    def __init__(self, client: redis.Redis, component: str, every_s: float = 5.0,
                 forget_s: float = FORGET_S, *,
                 also: Callable[[redis.client.Pipeline], None] | None = None):
        self.client = client
        self.component = component
        self.every_s = every_s
        self.forget_s = forget_s
        self.also = also
        self._script = client.register_script(_BEAT)
        self._beating = ProcessThread(f"berth-heartbeat-{component}", self._run)

    @property
    def member(self) -> str:
        return f"{self.component}/{instance_name()}"

    def ensure_started(self) -> None:
        """Start beating in this process unless already started here (safe after fork)."""
        self._beating.ensure_started()

    def beat(self) -> None:
        now_ms = int(time.time() * 1000)
        beat = {"keys": _BEAT_KEYS,
                "args": [self.member, now_ms, state_text(degraded()),
                         now_ms - int(self.forget_s * 1000)]}
        if self.also is None:
            self._script(**beat)
            return
        pipe = self.client.pipeline(transaction=False)  # one round trip per beat
        self._script(**beat, client=pipe)
        self.also(pipe)
        pipe.execute()

    def stop(self) -> None:
        """Stop beating and remove this process from the hashes (best effort)."""
        thread = self._beating.stop()
        if thread is None:  # not beating in this process
            return
        if thread is not threading.current_thread():
            thread.join(timeout=2.0)  # so no beat lands after the removal
        try:
            self.client.pipeline(transaction=True).hdel(keys.HEARTBEATS, self.member).hdel(
                keys.HEARTBEAT_STATES, self.member).execute()
        except redis.RedisError as ex:
            log.warning("could not remove heartbeat %s: %s", self.member, ex)

    def _run(self, stop: threading.Event) -> None:
        # Not reported as a degraded loop: a heartbeat that cannot be written reports nothing.
        backoff = Backoff(f"heartbeat of {self.member}", log, report=False)
        while not stop.is_set():
            try:
                self.beat()
                backoff.succeeded()
            except redis.RedisError as ex:
                backoff.failed(ex)
            stop.wait(self.every_s)


def forget(client: redis.Redis, member: str) -> None:
    """Remove one process's entries, for the process that saw it exit (gunicorn's arbiter
    for its workers): a dead process is then not counted for the stale limit."""
    pipe = client.pipeline(transaction=True)
    for key in _BEAT_KEYS:
        pipe.hdel(key, member)
    pipe.execute()


def forget_dead(client: redis.Redis, now_s: float, forget_s: float = FORGET_S) -> int:
    """Remove the entries whose beat is older than `forget_s`; how many were removed."""
    script = client.register_script(_BEAT)
    return int(script(keys=_BEAT_KEYS, args=["", 0, "", int((now_s - forget_s) * 1000)]))


def read_heartbeats(client: redis.Redis, now_s: float, stale_s: float) -> list[dict]:
    """Every recorded component, sorted, with its age and state: "alive", "degraded" (beating,
    with some loop failing: `reason` says which and why) or "stale" (no beat for `stale_s`;
    `alive` is False only then)."""
    pipe = client.pipeline(transaction=True)
    raw, states = pipe.hgetall(keys.HEARTBEATS).hgetall(keys.HEARTBEAT_STATES).execute()
    return parse_heartbeats(raw, now_s, stale_s, states)


def parse_heartbeats(raw: dict, now_s: float, stale_s: float,
                     states: dict | None = None) -> list[dict]:
    """`read_heartbeats` of the hashes read elsewhere (a pipeline); without `states`, every
    beating component counts as alive."""
    components = []
    states = {_text(k): _text(v) for k, v in (states or {}).items()}
    for member, value in raw.items():
        member = _text(member)
        component, _, instance = member.partition("/")
        try:
            last_seen_ms = int(value)
        except (TypeError, ValueError):
            continue
        age_s = round(max(0.0, now_s - last_seen_ms / 1000), 3)
        alive = age_s < stale_s
        reason = states.get(member, "")
        state = "stale" if not alive else "degraded" if reason else "alive"
        components.append({"component": component, "instance": instance,
                           "last_seen_ms": last_seen_ms, "age_s": age_s, "alive": alive,
                           "state": state, "reason": reason})
    components.sort(key=lambda c: (c["component"], c["instance"]))
    return components


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value
