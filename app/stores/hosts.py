"""Hostname ownership (ARCHITECTURE: Tenancy): a host belongs to the first owner to route it,
until the last of that owner's routes on it goes.

No other owner may route the host (any path under it), nor a wildcard covering it, nor add a
wildcard over hosts it holds, unless an admin overrides. Wildcards follow the router
(proxy/routing.py): `*.example.test` covers exactly one label under example.test, neither
example.test itself nor a.b.example.test.

Keys (app/redis.py): HOST_OWNERS (host -> holder), host_routes(host) (owner -> its routes on
the host; more than one owner only after an admin override: when the holder's count reaches
0 the claim passes to another of them) and hosts_under(parent) (owner -> exact hosts it holds
one label below parent), so the wildcard check reads one small hash, never a scan. HostClaims
keeps them in the route write's own transaction (app/stores/base.Guard).
"""

from __future__ import annotations

import json

import redis

from app import redis as keys
from app.errors import Conflict
from app.models import Route
from app.stores.base import Guard


def parent_of(host: str) -> str:
    """The domain one label up (`a.example.test` and `*.example.test` -> `example.test`);
    "" for a single label."""
    _label, _dot, parent = host.partition(".")
    return parent


def covering_wildcard(host: str) -> str | None:
    """The wildcard name that covers an exact host, as proxy.routing.wildcard_of has it."""
    parent = parent_of(host)
    return f"*.{parent}" if parent and not host.startswith("*.") else None


def refusal(host: str, owner: str, holder: str | None, wildcard_holder: str | None,
            owners_under: set[str]) -> str | None:
    """Why `owner` may not route `host`, or None. The description names only `host`, which
    the caller sent: never another owner, nor any host of theirs."""
    if holder not in (None, owner):
        return f"{host} is held by another owner"
    if wildcard_holder not in (None, owner):
        return f"{host} is covered by a wildcard route of another owner"
    if owners_under - {owner}:
        return f"{host} would cover hosts that another owner holds"
    return None


def read_refusal(client: redis.Redis, host: str, owner: str) -> str | None:
    """The same decision from a plain read (for checks that write no route: certificates,
    services, and the route check made before a certificate is asked for)."""
    wildcard = covering_wildcard(host)
    holder, wildcard_holder = client.hmget(keys.HOST_OWNERS, [host, wildcard or host])
    under = set(client.hkeys(keys.hosts_under(parent_of(host)))) \
        if host.startswith("*.") else set()
    return refusal(host, owner, holder, wildcard_holder if wildcard else None, under)


class HostClaims(Guard):
    """The Guard of route writes. With `override` (an admin's explicit choice) the claims of
    other owners are not checked, but still kept: the host stays its holder's."""

    def __init__(self, override: bool = False):
        self.override = override
        self.holders: dict[str, str | None] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.under: dict[str, dict[str, int]] = {}
        self.touched: set[str] = set()

    @staticmethod
    def _moves(old, new) -> bool:
        return old is None or new is None or (old.host, old.owner) != (new.host, new.owner)

    def keys(self, old, new) -> list[str]:
        if not self._moves(old, new):
            return []
        hosts = {r.host for r in (old, new) if r is not None}
        return [keys.HOST_OWNERS, *(keys.host_routes(h) for h in hosts),
                *(keys.hosts_under(parent_of(h)) for h in hosts if parent_of(h))]

    def check(self, pipe, old, new) -> None:
        self.holders, self.counts, self.under, self.touched = {}, {}, {}, set()
        if not self._moves(old, new):
            return
        hosts = {r.host for r in (old, new) if r is not None}
        for host in hosts:
            self.holders[host] = pipe.hget(keys.HOST_OWNERS, host)
            self.counts[host] = {o: int(n) for o, n in
                                 pipe.hgetall(keys.host_routes(host)).items()}
            parent = parent_of(host)
            if parent:
                self.under[parent] = {o: int(n) for o, n in
                                      pipe.hgetall(keys.hosts_under(parent)).items()}
        if new is not None and not self.override:
            wildcard = covering_wildcard(new.host)
            reason = refusal(
                new.host, new.owner, self.holders[new.host],
                pipe.hget(keys.HOST_OWNERS, wildcard) if wildcard else None,
                set(self.under.get(parent_of(new.host), {}))
                if new.host.startswith("*.") else set())
            if reason is not None:
                raise Conflict(reason, field="host")
        if old is not None:
            self._release(old.host, old.owner)
        if new is not None:
            self._acquire(new.host, new.owner)

    def stage(self, pipe, old, new) -> None:
        for host in self.touched:
            holder = self.holders[host]
            if holder is None:
                pipe.hdel(keys.HOST_OWNERS, host)
            else:
                pipe.hset(keys.HOST_OWNERS, host, holder)
            _rewrite(pipe, keys.host_routes(host), self.counts[host])
            parent = parent_of(host)
            if parent:
                _rewrite(pipe, keys.hosts_under(parent), self.under[parent])

    # -- the bookkeeping, on the values read in `check` ------------------------------------

    def _release(self, host: str, owner: str) -> None:
        self.touched.add(host)
        counts = self.counts[host]
        counts[owner] = counts.get(owner, 0) - 1
        if counts[owner] <= 0:  # also a route stored before claims were kept
            del counts[owner]
        if self.holders[host] == owner and owner not in counts:
            self._hand_over(host, min(counts) if counts else None)

    def _acquire(self, host: str, owner: str) -> None:
        self.touched.add(host)
        counts = self.counts[host]
        counts[owner] = counts.get(owner, 0) + 1
        if self.holders[host] is None:
            self._hand_over(host, owner)

    def _hand_over(self, host: str, owner: str | None) -> None:
        previous, self.holders[host] = self.holders[host], owner
        parent = parent_of(host)
        if not parent or host.startswith("*."):
            return  # only exact hosts are indexed under their parent
        under = self.under[parent]
        if previous is not None:
            under[previous] = under.get(previous, 0) - 1
            if under[previous] <= 0:
                del under[previous]
        if owner is not None:
            under[owner] = under.get(owner, 0) + 1


def _rewrite(pipe, key: str, values: dict[str, int]) -> None:
    pipe.delete(key)
    if values:
        pipe.hset(key, mapping=values)


def claim_stored_routes(client: redis.Redis) -> None:
    """Build the claims of routes stored before claims were kept (an upgrade), once: from
    every route, oldest first, so the first owner to have routed a host holds it, unless a
    claim made since says otherwise. One transaction, watched against route writes; then
    HOST_CLAIMS_BUILT says it is done and this is one EXISTS."""
    if client.exists(keys.HOST_CLAIMS_BUILT):
        return
    index = keys.index("route")
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(keys.HOST_CLAIMS_BUILT, keys.HOST_OWNERS, index)
                if pipe.exists(keys.HOST_CLAIMS_BUILT):
                    return
                ids = pipe.zrange(index, 0, -1)  # scored by creation time
                raws = pipe.mget([keys.record("route", i) for i in ids]) if ids else []
                routes = [Route.from_record(json.loads(r)) for r in raws if r is not None]
                holders = pipe.hgetall(keys.HOST_OWNERS)
                pipe.multi()
                _stage_claims(pipe, routes, holders)
                pipe.set(keys.HOST_CLAIMS_BUILT, "1")
                pipe.execute()
                return
            except redis.WatchError:
                continue


def _stage_claims(pipe, routes: list[Route], holders: dict[str, str]) -> None:
    counts: dict[str, dict[str, int]] = {}
    for route in routes:
        per_owner = counts.setdefault(route.host, {})
        per_owner[route.owner] = per_owner.get(route.owner, 0) + 1
        holders.setdefault(route.host, route.owner)
    under: dict[str, dict[str, int]] = {}
    for host, holder in holders.items():
        parent = parent_of(host)
        if parent and not host.startswith("*.") and host in counts:
            under.setdefault(parent, {})
            under[parent][holder] = under[parent].get(holder, 0) + 1
    holders = {h: o for h, o in holders.items() if h in counts}
    pipe.delete(keys.HOST_OWNERS)
    if holders:
        pipe.hset(keys.HOST_OWNERS, mapping=holders)
    for host, per_owner in counts.items():
        _rewrite(pipe, keys.host_routes(host), per_owner)
    for parent, per_owner in under.items():
        _rewrite(pipe, keys.hosts_under(parent), per_owner)
