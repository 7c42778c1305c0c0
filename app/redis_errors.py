"""Which Redis errors mean "Redis cannot serve this now" (wait and retry) rather than a bug.

Redis refuses commands for a while without being down: MISCONF (a failed snapshot with
stop-writes-on-bgsave-error: a full or read-only disk), READONLY (a replica after a failover),
OOM (maxmemory), LOADING (a restart reading its dataset), NOREPLICAS (min-replicas-to-write),
MASTERDOWN, BUSY (a long script), NOSCRIPT (a restart flushed the script cache; redis-py's
Script reloads by itself, a raw EVALSHA does not). redis-py raises some of these as
ResponseError subclasses and the rest as plain ResponseError, and a pipeline prefixes the
message with "Command # n (...) of pipeline caused error: ", so the code is looked for as a
word after that prefix too.
"""

from __future__ import annotations

import re

import redis
from redis.exceptions import NoScriptError, OutOfMemoryError, ReadOnlyError

_CODES = ("MISCONF", "READONLY", "OOM", "LOADING", "NOREPLICAS", "MASTERDOWN", "BUSY",
          "NOSCRIPT", "TRYAGAIN", "CLUSTERDOWN")
_CODE = re.compile(r"(?:^|caused error: |: )(" + "|".join(_CODES) + r")\b")
_WORDS = {"MISCONF": "refusing writes (MISCONF: it cannot persist to disk)",
          "READONLY": "refusing writes (READONLY replica)",
          "OOM": "refusing writes (OOM: maxmemory reached)",
          "LOADING": "loading its dataset",
          "NOREPLICAS": "refusing writes (NOREPLICAS)"}


def refusal(ex: BaseException) -> str | None:
    """Why Redis cannot serve now, when `ex` says so (unreachable, timed out, or one of the
    codes above); None for an error that retrying would only repeat."""
    if isinstance(ex, redis.BusyLoadingError):
        return _WORDS["LOADING"]
    # redis-py strips the code from the message of these subclasses
    if isinstance(ex, ReadOnlyError):
        return _WORDS["READONLY"]
    if isinstance(ex, OutOfMemoryError):
        return _WORDS["OOM"]
    if isinstance(ex, NoScriptError):
        return "without the script (NOSCRIPT: restarted)"
    if isinstance(ex, redis.ConnectionError | redis.TimeoutError):
        return f"unreachable ({type(ex).__name__})"
    if isinstance(ex, redis.ResponseError):
        found = _CODE.search(str(ex))
        if found:
            return _WORDS.get(found.group(1), f"refusing commands ({found.group(1)})")
    return None


def is_refusal(ex: BaseException) -> bool:
    return refusal(ex) is not None


def raise_unavailable(ex: BaseException, what: str = "the store") -> None:
    """Raise app.errors.Unavailable (the domain error, 503 at the API) from `ex` when it says
    Redis cannot serve now; return otherwise, for the caller to re-raise `ex`."""
    from app.errors import Unavailable

    reason = refusal(ex)
    if reason is not None:
        raise Unavailable(f"{what} is {reason}: {ex}") from ex
