"""The worker, and berth's other processes, exactly as the Procfile runs them, for tests and
benchmarks.

A command line and its environment assignments come from the Procfile's line, so a test or a
benchmark starts a process the way `make run` does (notably the worker's 100 ms Dramatiq idle
wait: Dramatiq 2.2 reads it only from the `dramatiq_worker_timeout` environment variable, which
the Procfile sets in front of the command). Only the worker's processes and threads may differ,
to fit a test.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from harness.procs import ROOT, VENV_BIN, Proc

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def procfile_command(name: str, procfile: Path = ROOT / "Procfile") -> tuple[list[str], dict]:
    """(argv, environment assignments) of one Procfile entry; the program from the venv."""
    for line in procfile.read_text().splitlines():
        label, sep, command = line.partition(":")
        if sep and label.strip() == name:
            words = shlex.split(command)
            env = {}
            while words and _ASSIGNMENT.match(words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            return [str(VENV_BIN / words[0]), *words[1:]], env
    raise LookupError(f"no {name!r} process in {procfile}")


def start_process(name: str, env: dict, log_path: Path) -> Proc:
    """Start the Procfile's `name` with `env` on top of its assignments; returns at once."""
    args, procfile_env = procfile_command(name)
    return Proc(args, log_path, env={**procfile_env, **env})


def _with_option(args: list[str], option: str, value: int) -> list[str]:
    if option in args:
        at = args.index(option) + 1
        return [*args[:at], str(value), *args[at + 1:]]
    return [*args, option, str(value)]


def worker_command(processes: int = 1, threads: int = 8) -> tuple[list[str], dict]:
    """The Procfile's worker with `processes` and `threads`: (argv, its environment)."""
    args, env = procfile_command("worker")
    args = _with_option(_with_option(args, "--processes", processes), "--threads", threads)
    return args, env


def start_worker(env: dict, log_path: Path, *, processes: int = 1, threads: int = 8) -> Proc:
    """Start the worker with `env` on top of the Procfile's assignments; returns at once."""
    args, procfile_env = worker_command(processes, threads)
    return Proc(args, log_path, env={**procfile_env, **env})
