"""Host port allocation for containers: atomic in Redis, skipping ports bound on the host."""

from __future__ import annotations

import socket

import redis

from app import redis as keys
from app.errors import Conflict
from app.redis_errors import raise_unavailable

# Frees every port of one owner atomically; returns how many.
_RELEASE = """
local freed = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    freed = freed + 1
  end
end
return freed
"""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class PortStore:
    def __init__(self, client: redis.Redis, first: int = 20000, last: int = 29999,
                 restricted: frozenset[int] = frozenset()):
        self.client = client
        self.first, self.last = first, last
        self.restricted = restricted
        self._release = client.register_script(_RELEASE)

    def allocate(self, owner: str, *, is_free=port_is_free) -> int:
        """Claim one free port for `owner` (HSETNX makes two claimers never share one)."""
        try:
            taken = set(map(int, self.client.hkeys(keys.ports_allocated())))
            for port in range(self.first, self.last + 1):
                if port in taken or port in self.restricted or not is_free(port):
                    continue
                if self.client.hsetnx(keys.ports_allocated(), port, owner):
                    return port
        except redis.RedisError as ex:
            raise_unavailable(ex)  # Redis unreachable or refusing: 503
            raise
        raise Conflict(f"no free port left in {self.first}-{self.last}")

    def owned_by(self, owner: str) -> list[int]:
        allocated = self.client.hgetall(keys.ports_allocated())
        return sorted(int(p) for p, o in allocated.items() if o == owner)

    def release_all(self, owner: str) -> int:
        return int(self._release(keys=[keys.ports_allocated()], args=[owner]))
