"""berth's own cap on new ACME orders per registered domain per week, checked before ordering.

Let's Encrypt limits certificates per registered domain per week; counting our own orders the
same way keeps a misconfiguration (or a retry storm) from spending that budget. The registered
domain comes from the Public Suffix List when Debian's `publicsuffix` file is installed;
without it, it is simply the last two labels (so `a.example.co.uk` counts as `co.uk`: stricter
than the CA, never looser).
"""

from __future__ import annotations

import functools
import secrets
from pathlib import Path

import redis

from app import redis as keys
from app.errors import RateLimited

PSL_PATH = Path("/usr/share/publicsuffix/public_suffix_list.dat")
WEEK_S = 7 * 86400


@functools.lru_cache(maxsize=1)
def _suffix_rules(path: Path = PSL_PATH) -> tuple[frozenset, frozenset, frozenset] | None:
    """(exact rules, wildcard parents, exceptions) of the list, or None when not installed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    exact, wildcard, exception = set(), set(), set()
    for line in lines:
        rule = line.strip().lower()
        if not rule or rule.startswith("//"):
            continue
        if rule.startswith("!"):
            exception.add(rule[1:])
        elif rule.startswith("*."):
            wildcard.add(rule[2:])
        else:
            exact.add(rule)
    return frozenset(exact), frozenset(wildcard), frozenset(exception)


def registered_domain(name: str) -> str:
    """The registrable domain of a hostname: public suffix plus one label."""
    labels = name.lower().rstrip(".").split(".")
    rules = _suffix_rules()
    if rules is None or len(labels) < 2:
        return ".".join(labels[-2:])
    exact, wildcard, exception = rules
    suffix_len = 1  # the implicit "*" rule: an unknown TLD is a public suffix
    for i in range(len(labels)):
        candidate = ".".join(labels[i:])
        if candidate in exception:
            suffix_len = len(labels) - i - 1
            break
        parent = ".".join(labels[i + 1:])
        if candidate in exact or (parent and parent in wildcard):
            suffix_len = len(labels) - i
            break
    return ".".join(labels[-(suffix_len + 1):]) if suffix_len < len(labels) else name

# Atomically: drop entries older than a week, refuse when any domain is at the cap (returning
# its index and oldest entry), else add one entry to every domain.
_RESERVE = """
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
  if redis.call('ZCARD', key) >= tonumber(ARGV[3]) then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {i, oldest[2]}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[1], ARGV[4])
  redis.call('EXPIRE', key, ARGV[5])
end
return 0
"""


class WeeklyOrderCap:
    def __init__(self, client: redis.Redis, cap: int):
        self.client = client
        self.cap = cap
        self._reserve = client.register_script(_RESERVE)

    def reserve(self, domains: tuple[str, ...], now: float) -> str | None:
        """Count one new order for the registered domains of `domains`, or raise RateLimited
        when one of them already had `cap` orders in the last 7 days. Returns the reservation
        (for `release` when the order could not be placed); None when there is no cap."""
        if self.cap <= 0:
            return None
        registered = sorted({registered_domain(d) for d in domains})
        reservation = secrets.token_hex(8)
        result = self._reserve(keys=[keys.acme_orders(r) for r in registered],
                               args=[now, now - WEEK_S, self.cap, reservation, WEEK_S + 3600])
        if result != 0:
            index, oldest = int(result[0]), float(result[1])
            raise RateLimited(
                f"berth's cap of {self.cap} new orders per week for {registered[index - 1]} "
                "is reached (BERTH_ACME_WEEKLY_ORDERS)",
                retry_after=oldest + WEEK_S, code="weeklyCap")
        return reservation

    def release(self, domains: tuple[str, ...], reservation: str | None) -> None:
        if reservation is None:
            return
        pipe = self.client.pipeline(transaction=True)
        for registered in {registered_domain(d) for d in domains}:
            pipe.zrem(keys.acme_orders(registered), reservation)
        pipe.execute()
