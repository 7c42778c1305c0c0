"""Text for people and JSON for scripts: tables, times, and terminal-safe strings.

Everything shown to a person goes through `clean`, because event subjects and data come from
the outside world (request paths, hostnames) and must not be able to move the cursor, recolour
the terminal or fake a line.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import tzinfo

# C0 and C1 controls, DEL, and the Unicode bidirectional overrides.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(value: object) -> str:
    """`value` as one terminal-safe line: None is "-", whitespace controls become spaces and
    other control characters are shown escaped (\\x1b, \\u202e)."""
    if value is None:
        return "-"
    return _UNSAFE.sub(_escape, str(value))


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in "\t\n\r":
        return " "
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> str:
    """A plain-text table: one header line, then one line per row, columns two spaces apart.
    A column whose values are all numbers is right-aligned; None shows as "-"."""
    cells = [[clean(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_is_number(r[i]) or r[i] is None for r in rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w)
                 for v, w, num in zip(values, widths, numeric, strict=True)]
        return (indent + "  ".join(parts)).rstrip()

    return "\n".join([line(list(headers))] + [line(r) for r in cells])


def pairs(rows: Sequence[tuple[str, object]]) -> str:
    """One `key  value` line per row, the values aligned; None shows as "-"."""
    width = max(len(key) for key, _ in rows)
    return "\n".join(clean(f"{key.ljust(width)}  {'-' if value is None else value}")
                     for key, value in rows)


def number(value: float | None, unit: str = "", digits: int = 1) -> str | None:
    return None if value is None else f"{value:.{digits}f}{unit}"


def when(ts_s: float | None, tz: tzinfo | None = None) -> str | None:
    """A Unix time in seconds as a local date and time, `2025-01-31 14:05:09`."""
    if not ts_s:
        return None
    from datetime import datetime  # here, not at the top: most commands print no time

    return datetime.fromtimestamp(ts_s, tz).strftime("%Y-%m-%d %H:%M:%S")


def stamp(ts_ms: int | None, *, date: bool = False, tz: tzinfo | None = None) -> str:
    """A Unix time in milliseconds as a local time, `14:05:09.123` (with `date`,
    `2025-01-31 14:05:09.123`)."""
    from datetime import datetime

    pattern = "%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f"
    if not ts_ms:
        return "-".ljust(len(datetime(2000, 1, 1).strftime(pattern)) - 3)
    return datetime.fromtimestamp(ts_ms / 1000, tz).strftime(pattern)[:-3]


def ago(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def say(text: str = "") -> None:
    """One or more lines for people on stdout, flushed (a `tail` is read as it happens)."""
    print(text, flush=True)


def emit_json(value: object, *, lines: bool = False) -> None:
    """JSON for scripts on stdout: indented, or one compact object per line with `lines`."""
    if lines:
        print(json.dumps(value, separators=(",", ":")), flush=True)
    else:
        print(json.dumps(value, indent=2), flush=True)


def warn(text: str) -> None:
    """A progress note on stderr (never on stdout, which may be piped into a script)."""
    print(clean(f"berth: {text}"), file=sys.stderr, flush=True)
