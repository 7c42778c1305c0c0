"""Operator commands that talk to Redis directly (no API token needed yet).

    python -m app.admin ensure-token --path .berth/admin-token

ensure-token: when the file holds a secret that still authenticates as an admin token, print
"admin token: <path>" and nothing secret. Otherwise issue a new admin token (name "admin",
owner "admin"), write its secret to the file (mode 0600, parent directory created 0700,
written to a temporary file and renamed into place) and print the secret this once.

Settings come from the environment (REDIS_URL). Exit status 1 with one line on stderr when
Redis is unreachable; 2 for invalid settings or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

import redis

from app.errors import Unavailable
from app.redis import create_client
from app.settings import load_or_exit
from app.stores.tokens import TokenStore

ADMIN = "admin"


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        return None


def write_secret(path: Path, secret: str) -> None:
    """Atomically replace `path` with `secret`, readable by its owner only."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True)
    temp = parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secret + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def ensure_token(store: TokenStore, path: Path, out) -> None:
    current = read_secret(path)
    token = store.authenticate(current) if current else None
    if token is not None and token.scope == ADMIN:
        print(f"admin token: {path}", file=out)
        return
    token, secret = store.issue(name=ADMIN, scope=ADMIN, owner=ADMIN)
    write_secret(path, secret)
    print(f"admin token: {secret}", file=out)
    print(f"  saved to {path} (mode 0600); it is not shown again. "
          f"Use it with: BERTH_TOKEN=$(cat {path})", file=out)


def _where(url: str) -> str:
    """The Redis location without credentials, for messages."""
    parts = urlsplit(url)
    return parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"


def main(argv: list[str] | None = None, environ=None, out=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.admin", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser("ensure-token", help="make sure an admin token file exists")
    ensure.add_argument("--path", type=Path, default=Path(".berth/admin-token"),
                        help="file holding the admin token's secret (default: %(default)s)")
    args = parser.parse_args(argv)
    out = out or sys.stdout

    settings = load_or_exit(environ)
    client = create_client(settings.redis_url)
    try:
        ensure_token(TokenStore(client), args.path, out)
    except (Unavailable, redis.RedisError):
        print(f"berth admin: cannot reach Redis at {_where(settings.redis_url)}",
              file=sys.stderr)
        return 1
    except OSError as ex:
        print(f"berth admin: cannot write {args.path}: {ex.strerror or ex}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
