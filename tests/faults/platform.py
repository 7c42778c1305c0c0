"""The berth processes a fault test runs, and what it checks of them after the fault: that none
exited or was replaced (the same PIDs, children included: gunicorn and Dramatiq workers), that
each beats again, and that no log holds a traceback."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import redis

from app import redis as keys
from harness.procs import Proc


def process_tree(pid: int) -> set[int]:
    """`pid` and its descendants now."""
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(child) for child in (task / "children").read_text().split()]
    return found


class Processes:
    """Named processes; `stop()` ends each one by its PID. As a context manager it stops them
    all on the way out, after printing their logs when the block failed."""

    def __init__(self):
        self.procs: dict[str, Proc] = {}

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            print(self.logs())
        self.stop()

    def __setitem__(self, name: str, proc: Proc) -> None:
        self.procs[name] = proc

    def __getitem__(self, name: str) -> Proc:
        return self.procs[name]

    def pids(self) -> dict[str, set[int]]:
        return {name: process_tree(proc.pid) for name, proc in self.procs.items()
                if proc.alive()}

    def gone(self, before: dict[str, set[int]]) -> dict[str, set[int]]:
        """Of the PIDs in `before`, those no longer running, per process name."""
        return {name: dead for name, pids in before.items()
                if (dead := {pid for pid in pids if not Path(f"/proc/{pid}").exists()})}

    def tracebacks(self) -> dict[str, str]:
        """Per process, the first traceback of its log (with what preceded it)."""
        found = {}
        for name, proc in self.procs.items():
            text = proc.output()
            at = text.find("Traceback (most recent call last)")
            if at >= 0:
                found[name] = text[max(0, at - 500):at + 2500]
        return found

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"----- {name} (pid {proc.pid}) -----\n{proc.output()[-tail:]}"
                         for name, proc in self.procs.items())

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def beating_since(client: redis.Redis, pids: set[int], since_ms: int) -> set[str]:
    """The components whose processes among `pids` recorded a heartbeat at or after
    `since_ms` (members are "component/host:pid")."""
    beats = client.hgetall(keys.HEARTBEATS)
    return {member.partition("/")[0] for member, at in beats.items()
            if int(member.rsplit(":", 1)[1]) in pids and int(at) >= since_ms}


def explain(client: redis.Redis, outcomes) -> list[dict]:
    """The request events of failed outcomes (by trace id): what the proxy says happened."""
    wanted = {o.trace_id: o for o in outcomes if o.trace_id}
    found = [json.loads(fields["data"]) | {"trace_id": fields["trace_id"]}
             for _id, fields in client.xrange(keys.stream("request"))
             if fields.get("trace_id") in wanted]
    return found or [o.error for o in outcomes]
