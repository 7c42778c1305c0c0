"""Argument types shared by the commands: each turns one command-line string into a value or
raises argparse.ArgumentTypeError, which argparse prints as a usage error (exit 2)."""

from __future__ import annotations

import argparse
import re

_SIZE = re.compile(r"^(\d+)\s*([kmg]?)(i?b)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return number


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def key_value(value: str) -> tuple[str, str]:
    """`NAME=VALUE` (the value may be empty or contain '=')."""
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=VALUE")
    return key, val


def size(value: str) -> int:
    """Bytes: `1048576`, `512k`, `10M`, `1GiB` (powers of 1024)."""
    match = _SIZE.match(value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size such as 512k, 10M or 1G")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]
