"""A real redis-server that can be made to refuse writes with a real MISCONF.

Redis answers MISCONF to every write (and to PING) after a snapshot failed while it has save
points and stop-writes-on-bgsave-error (the default): what a full or read-only disk does. Here
the snapshot fails because its directory is moved to /proc, where no file can be created;
`dir` is a protected setting, so this server lets loopback clients change it. Accepting
writes again is a snapshot that succeeds, in the server's own directory.
"""

from __future__ import annotations

import contextlib
import time

import redis

from harness.procs import Proc, RedisServer, find_binary, wait_for_port, wait_until


class RefusingRedis(RedisServer):
    def start(self) -> RefusingRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Proc([find_binary("redis-server"), "--bind", "127.0.0.1",
                          "--port", str(self.port), "--save", "", "--appendonly", "no",
                          "--dir", str(self.workdir), "--protected-mode", "yes",
                          "--enable-protected-configs", "local"],
                         self.workdir / f"redis-{self.port}.log")
        wait_for_port(self.port, proc=self.proc.popen)
        return self

    def _client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def _snapshot(self, client: redis.Redis, status: str) -> None:
        """BGSAVE (again, once one in progress ends) until the last one's status is this."""
        def done() -> bool:
            with contextlib.suppress(redis.ResponseError):  # one already in progress
                client.bgsave()
            time.sleep(0.05)
            info = client.info("persistence")
            return not info["rdb_bgsave_in_progress"] and info["rdb_last_bgsave_status"] == status
        wait_until(done, timeout=10, what=f"a snapshot with status {status}")

    def refuse_writes(self) -> None:
        client = self._client()
        try:
            client.config_set("stop-writes-on-bgsave-error", "yes")
            client.config_set("save", "3600 1")  # without save points Redis never refuses
            client.config_set("dir", "/proc")
            self._snapshot(client, "err")
        finally:
            client.close()

    def accept_writes(self) -> None:
        client = self._client()
        try:
            client.config_set("dir", str(self.workdir))
            self._snapshot(client, "ok")
            client.config_set("save", "")
        finally:
            client.close()

    @contextlib.contextmanager
    def refusing(self):
        self.refuse_writes()
        try:
            yield
        finally:
            self.accept_writes()
