"""Re-export of `harness.procs`, where the process helpers moved so `bench` can share them."""

from harness.procs import (
    ROOT,
    VENV_BIN,
    Proc,
    RedisServer,
    find_binary,
    free_port,
    wait_for_port,
    wait_until,
)

__all__ = [
    "ROOT",
    "VENV_BIN",
    "Proc",
    "RedisServer",
    "find_binary",
    "free_port",
    "wait_for_port",
    "wait_until",
]
