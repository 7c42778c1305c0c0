"""The `berth` entry point: parse, connect, run one command, report failure as one line."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from app.cli.args import positive_float
from app.cli.client import DEFAULT_TIMEOUT_S, DEFAULT_URL, ApiClient
from app.cli.errors import CliError, UsageError
from app.cli.output import clean

# The commands, each a module app/cli/<noun>.py with `register(commands, common)`, in the
# order `berth --help` lists them.
NOUNS = ("status", "routes", "services", "certs", "metrics", "alerts", "tokens", "events")

TOKEN_FILE = Path(".berth/admin-token")  # written by `make run`
_CHECKOUT = Path(__file__).resolve().parents[2]


class BerthParser(argparse.ArgumentParser):
    """argparse with a usage error in one line and a hint, not argparse's usage block.
    Sub-commands' parsers are of the same class (argparse's add_subparsers default)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The connection and output options, accepted before and after the command. Copies on a
    sub-command default to SUPPRESS, so they only override the top level when given."""
    unset = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection and output")
    group.add_argument("--url", default=unset,
                       help=f"management API base URL (default: $BERTH_URL, else {DEFAULT_URL})")
    group.add_argument("--token", default=unset, metavar="SECRET",
                       help="API token (default: $BERTH_TOKEN; prefer it or --token-file, "
                            "since arguments show in the process list)")
    group.add_argument("--token-file", default=unset, metavar="PATH",
                       help=f"read the token from PATH (default, when no token is given: "
                            f"{TOKEN_FILE} in the current directory or the berth checkout, "
                            "if it exists)")
    group.add_argument("--json", action="store_true",
                       default=argparse.SUPPRESS if suppress else False,
                       help="print JSON for scripts instead of text for people")
    group.add_argument("--timeout", default=unset, type=positive_float, metavar="SECONDS",
                       help=f"give up on an answer after SECONDS (default: {DEFAULT_TIMEOUT_S:g})")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every command, or only the command `only`."""
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)
    parser = BerthParser(
        prog="berth", description="Command line of the berth edge platform.",
        epilog="Exit status: 0 done, 1 failed (one line on stderr), 2 bad usage, "
               "130 interrupted. Run `berth COMMAND --help` for a command's options.")
    _add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for noun in (only,) if only else NOUNS:
        importlib.import_module(f"app.cli.{noun}").register(commands, common)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command named in `argv` when it is one of NOUNS, read with the real global options
    so that their values are skipped. Only that command's module is then imported and built:
    building all of them cost every command a fifth of its start-up."""
    finder = argparse.ArgumentParser(add_help=False)
    _add_common(finder, suppress=False)
    finder.add_argument("command", nargs="?")
    finder.add_argument("rest", nargs=argparse.REMAINDER)
    try:
        found, _unknown = finder.parse_known_args(argv)
    except SystemExit:  # a malformed global option: the full parser reports it
        return None
    return found.command if found.command in NOUNS else None


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as ex:
        raise UsageError("Cannot read token file", f"{path}: {ex.strerror or ex}") from None
    if not token:
        raise UsageError("Cannot read token file", f"{path} is empty")
    return token


def resolve_token(args: argparse.Namespace, environ: Mapping[str, str],
                  cwd: Path | None = None) -> str | None:
    """--token, else --token-file, else $BERTH_TOKEN, else the admin token file if present."""
    if args.token and args.token_file:
        raise UsageError("Invalid options", "give --token or --token-file, not both")
    if args.token:
        return args.token.strip()
    if args.token_file:
        return _read_token(Path(args.token_file))
    if environ.get("BERTH_TOKEN", "").strip():
        return environ["BERTH_TOKEN"].strip()
    for path in ((cwd or Path.cwd()) / TOKEN_FILE, _CHECKOUT / TOKEN_FILE):
        if path.is_file():
            return _read_token(path)
    return None


def make_client(args: argparse.Namespace, environ: Mapping[str, str]) -> ApiClient:
    url = args.url or environ.get("BERTH_URL", "").strip() or DEFAULT_URL
    return ApiClient(url, resolve_token(args, environ), timeout=args.timeout or DEFAULT_TIMEOUT_S)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # a non-UTF-8 terminal gets "?", not a crash
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(command_of(argv)).parse_args(argv)
        return args.func(args, make_client(args, environ))
    except CliError as ex:
        print(ex.line(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`berth events tail | head`): stop without a word.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as ex:  # a bug or an answer outside the contract: still one line
        from app.logs import redact  # only on this path: logging costs every command's start

        if environ.get("BERTH_DEBUG"):
            import traceback

            traceback.print_exc()
        print(clean(redact(f"berth: Unexpected error: {type(ex).__name__}: {ex} "
                           "(BERTH_DEBUG=1 shows the traceback)")), file=sys.stderr)
        return 1
