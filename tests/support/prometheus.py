"""A strict reader of the Prometheus text exposition format (0.0.4), for tests."""

from __future__ import annotations

import re

SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? '
                    r'([-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]Inf|NaN)$')


def parse_exposition(text: str) -> dict[str, list[tuple[dict, float]]]:
    """Checks the text format line by line; returns samples by metric name."""
    assert text.endswith("\n")
    samples: dict[str, list] = {}
    typed: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in typed, f"{name} declared twice"
            typed[name] = kind
            continue
        assert SAMPLE.match(line), line
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        labels = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', line))
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, f"{name} has no TYPE"
        samples.setdefault(name, []).append((labels, float(line.rsplit(" ", 1)[1])))
    return samples
