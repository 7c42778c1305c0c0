"""A generic JSON-document repository with atomic multi-key writes and optimistic versions.

Layout per noun (see app/redis.py): one string key per record holding its JSON, a sorted set
of all ids and one per owner (listing without KEYS), hashes for unique attributes, and a
table version counter bumped (and announced on a pub/sub channel) by every change, so caches
such as the proxy's route table can refresh without polling every record.

Every write runs under WATCH on the keys it reads and commits in one MULTI/EXEC; a record
whose `version` differs from the caller's is refused with Conflict. A write's `extra`, a
function of (pipeline, record), adds the caller's own commands to that transaction (the event
that reports the change, a key the change makes obsolete): they commit with the change or not
at all. It is called with the record the write returns (the removed one for a delete), once per
attempt (again after a WATCH conflict), and must only queue commands on the pipeline.

A store whose records keep a rule across records (a host held by one owner, the last admin
token) gives its writes a Guard: the keys it reads are WATCHed with the record's, its check
runs on what they hold before the transaction, and its commands commit with the change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

from app import redis as keys
from app.errors import Conflict, NotFound
from app.models import now_s
from app.redis_errors import raise_unavailable

# A write's `extra`: queues more commands on the write's MULTI, given the record it returns.
Extra = Callable[[redis.client.Pipeline, Any], object]


class Guard:
    """A rule a write must keep beyond its own record; `old`/`new` are None when absent.

    keys: what `check` reads (WATCHed, so a concurrent change retries the write); check:
    reads them on the pipeline (immediate mode) and raises to refuse; stage: queues the
    commands that keep the rule's own keys in step, in the write's MULTI."""

    def keys(self, old, new) -> list[str]:
        return []

    def check(self, pipe, old, new) -> None:
        return None

    def stage(self, pipe, old, new) -> None:
        return None


def _dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


class Repository:
    noun: str = ""
    model: type = object
    # unique attribute name -> function of a model giving its value (None: not indexed)
    unique: dict[str, Callable] = {}

    def __init__(self, client: redis.Redis):
        self.client = client

    # -- reads ---------------------------------------------------------------------------

    def get(self, record_id: str, *, owner: str | None = None):
        """The record, or NotFound; with `owner`, records of other owners are NotFound too."""
        raw = self._call(self.client.get, keys.record(self.noun, record_id))
        if raw is None:
            raise NotFound(f"no {self.noun} named {record_id!r}")
        item = self.model.from_record(json.loads(raw))
        if owner is not None and item.owner != owner:
            raise NotFound(f"no {self.noun} named {record_id!r}")
        return item

    def find(self, record_id: str):
        try:
            return self.get(record_id)
        except NotFound:
            return None

    def list(self, *, owner: str | None = None, offset: int = 0, limit: int = 1000) -> list:
        index = keys.owner_index(self.noun, owner) if owner else keys.index(self.noun)
        ids = self._call(self.client.zrange, index, offset, offset + limit - 1)
        return self.get_many(ids)

    def count(self, *, owner: str | None = None) -> int:
        index = keys.owner_index(self.noun, owner) if owner else keys.index(self.noun)
        return self._call(self.client.zcard, index)

    def get_many(self, ids: list[str]) -> list:
        if not ids:
            return []
        raws = self._call(self.client.mget, [keys.record(self.noun, i) for i in ids])
        return [self.model.from_record(json.loads(r)) for r in raws if r is not None]

    def lookup(self, unique_name: str, value: str) -> str | None:
        """The id holding a unique attribute value, if any."""
        return self._call(self.client.hget, keys.unique_index(self.noun, unique_name), value)

    def table_version(self) -> int:
        return int(self._call(self.client.get, keys.table_version(self.noun)) or 0)

    # -- writes --------------------------------------------------------------------------

    def guard(self) -> Guard | None:
        """The rule every write of this noun keeps (none by default); see Guard."""
        return None

    def create(self, item, *, extra: Extra | None = None, guard: Guard | None = None):
        """Store a new record (version 1); Conflict if the id or a unique value is taken."""
        item = item.replace(version=1)
        return self._write(item.id, None, item, extra=extra, guard=guard)

    def update(self, item, *, expected_version: int | None = None, extra: Extra | None = None,
               guard: Guard | None = None):
        """Replace a record; Conflict when its stored version is not `expected_version`
        (default: the version `item` carries)."""
        expected = item.version if expected_version is None else expected_version
        return self._write(item.id, expected, item.replace(version=expected + 1,
                                                            updated_at=now_s()),
                           extra=extra, guard=guard)

    def delete(self, record_id: str, *, expected_version: int | None = None,
               extra: Extra | None = None, guard: Guard | None = None):
        """Remove a record and its index entries; returns the removed record."""
        return self._write(record_id, expected_version, None, deleting=True, extra=extra,
                           guard=guard)

    def _write(self, record_id: str, expected: int | None, new, *, deleting: bool = False,
               extra: Extra | None = None, guard: Guard | None = None):
        record_key = keys.record(self.noun, record_id)
        unique_keys = {name: keys.unique_index(self.noun, name) for name in self.unique}
        guard = guard or self.guard()
        try:
            with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(record_key, *unique_keys.values())
                        old = self._load(pipe, record_key)
                        self._check_version(record_id, old, new, expected, deleting)
                        if guard is not None:
                            guarded = guard.keys(old, new)
                            if guarded:  # after the load: which keys depends on the record
                                pipe.watch(*guarded)
                            guard.check(pipe, old, new)
                        self._check_unique(record_id, new, pipe, unique_keys)
                        pipe.multi()
                        self._stage(pipe, record_key, old, new, unique_keys)
                        if guard is not None:
                            guard.stage(pipe, old, new)
                        written = new if new is not None else old
                        if extra is not None:
                            extra(pipe, written)
                        pipe.execute()
                        return written
                    except redis.WatchError:
                        continue
        except redis.RedisError as ex:
            raise_unavailable(ex)  # Redis unreachable or refusing: 503
            raise

    def _load(self, pipe, record_key: str):
        raw = pipe.get(record_key)
        return self.model.from_record(json.loads(raw)) if raw else None

    def _check_version(self, record_id, old, new, expected, deleting) -> None:
        if old is None and (deleting or expected is not None):
            raise NotFound(f"no {self.noun} named {record_id!r}")
        if old is not None and expected is None and not deleting:
            raise Conflict(f"a {self.noun} named {record_id!r} already exists")
        if old is not None and expected is not None and old.version != expected:
            raise Conflict(f"{self.noun} {record_id!r} changed since version {expected} "
                           f"(now {old.version}); read it again and retry")

    def _check_unique(self, record_id, new, pipe, unique_keys) -> None:
        if new is None:
            return
        for name, key in unique_keys.items():
            value = self.unique[name](new)
            if value is None:
                continue
            holder = pipe.hget(key, value)
            if holder is not None and holder != record_id:
                # The holder may be another owner's: its id is not the caller's to see.
                raise Conflict(f"{name} {value!r} is already used by another {self.noun}")

    def _stage(self, pipe, record_key: str, old, new, unique_keys) -> None:
        if old is not None:
            for name, key in unique_keys.items():
                value = self.unique[name](old)
                if value is not None and (new is None or self.unique[name](new) != value):
                    pipe.hdel(key, value)
        if new is None:
            pipe.delete(record_key)
            pipe.zrem(keys.index(self.noun), old.id)
            pipe.zrem(keys.owner_index(self.noun, old.owner), old.id)
        else:
            pipe.set(record_key, _dumps(new.to_record()))
            pipe.zadd(keys.index(self.noun), {new.id: new.created_at}, nx=True)
            if old is not None and old.owner != new.owner:
                pipe.zrem(keys.owner_index(self.noun, old.owner), old.id)
            pipe.zadd(keys.owner_index(self.noun, new.owner), {new.id: new.created_at})
            for name, key in unique_keys.items():
                value = self.unique[name](new)
                if value is not None:
                    pipe.hset(key, value, new.id)
        pipe.incr(keys.table_version(self.noun))
        pipe.publish(keys.changes_channel(self.noun), new.id if new is not None else old.id)

    @staticmethod
    def _call(fn, *args):
        try:
            return fn(*args)
        except redis.RedisError as ex:
            raise_unavailable(ex)  # Redis unreachable or refusing: 503
            raise
