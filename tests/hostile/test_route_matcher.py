"""Property tests of the proxy's route matcher (proxy/routing.py) under hostile Host headers
and paths: lookups never raise, exact hosts beat wildcards, the longest path prefix wins, and
every answer equals a plain reference reading of the rules written independently here."""

from __future__ import annotations

import itertools

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.models import Route
from proxy.routing import RouteTable, normalize_host

_ids = itertools.count()

# Characters that make Host parsing interesting: separators, IDNA full stops and
# fullwidth letters, case folding, brackets and ports, controls and spaces.
HOST_ALPHABET = list("abAB01.-_:[]@*%/ \t\x00\x7f") + [
    "\u3002", "\uff0e", "\uff61", "\uff41", "\u0130", "\u00df", "\u00e9", "\u200d", "\ufe0f"]
PATH_ALPHABET = list("/.aAp%;?#:@ \x00") + ["\u00e9", "\ufffd"]

LABELS = ["a", "b", "app"]
ROUTE_HOSTS = (st.sampled_from(LABELS).map(lambda a: f"{a}.test")
               | st.tuples(st.sampled_from(LABELS), st.sampled_from(LABELS))
               .map(lambda ab: f"{ab[0]}.{ab[1]}.test")
               | st.sampled_from(LABELS).map(lambda a: f"*.{a}.test")
               | st.just("*.test"))
SEGMENTS = st.sampled_from(["api", "v1", "api-v1", "x", ".well-known"])
PREFIXES = st.builds(lambda segs, slash: "/" + "/".join(segs) + ("/" if slash and segs else ""),
                     st.lists(SEGMENTS, max_size=3), st.booleans())
PATHS = (st.builds(lambda segs, tail: "/" + "/".join(segs) + tail, st.lists(SEGMENTS, max_size=4),
                   st.sampled_from(["", "/", "x", "/y", "//", "?q", "%2f"]))
         | st.text(PATH_ALPHABET, max_size=30))
REQUEST_HOSTS = (ROUTE_HOSTS.map(lambda h: h.replace("*", "sub"))
                 | st.tuples(st.sampled_from(LABELS), ROUTE_HOSTS)
                 .map(lambda pair: f"{pair[0]}.{pair[1].lstrip('*.')}")
                 | st.text(HOST_ALPHABET, max_size=24)
                 | st.text(max_size=24))


def route(host: str, prefix: str) -> Route:
    return Route(id=f"rt_{next(_ids):06d}", host=host, targets=("http://127.0.0.1:9",),
                 owner="t", path_prefix=prefix)


# -- the reference: the documented rules, read as plainly as possible -------------------


def ref_covers(prefix: str, path: str) -> bool:
    """`/api` covers `/api` and `/api/...`; `/api/` covers `/api/...` only; `/` all."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def ref_below(prefix: str, path: str) -> str:
    rest = path[len(prefix):]
    if prefix.endswith("/"):
        return "/" + rest
    return rest or "/"


def ref_match(routes: list[Route], host: str | None, path: str) -> tuple[Route, str] | None:
    if not host:
        return None
    names = [host]
    first, dot, parent = host.partition(".")
    if dot and parent:
        names.append("*." + parent)  # exactly one label up
    for name in names:
        covering = [r for r in routes if r.host == name and ref_covers(r.path_prefix, path)]
        if covering:
            best = max(covering, key=lambda r: len(r.path_prefix))
            return best, ref_below(best.path_prefix, path)
    return None


# -- properties -----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(HOST_ALPHABET, max_size=40) | st.text(max_size=40))
@example("h.test\u3002")  # an IDNA full stop at the end: the trailing dot goes as with "."
@example("[::1]:8080")
@example("a" * 300)
def test_normalize_host_never_raises_and_yields_a_clean_name(raw):
    host = normalize_host(raw)
    if host is None:
        return
    if host.startswith("["):  # an IP literal: never a route's host (the API refuses them)
        assert host.endswith("]")
        return
    assert host and host == host.lower() and host.isascii()
    assert not any(c.isspace() or ord(c) < 0x20 or c in "*@/%:[]" for c in host)
    assert not host.endswith(".")
    assert normalize_host(host) == host  # a normalised host is its own normal form


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ROUTE_HOSTS, PREFIXES), max_size=14, unique=True),
       REQUEST_HOSTS, PATHS)
def test_matcher_equals_the_reference_and_never_raises(pairs, raw_host, path):
    routes = [route(host, prefix) for host, prefix in pairs]
    table = RouteTable.build(routes)
    host = normalize_host(raw_host)
    found = table.match(host, path)
    expected = ref_match(routes, host, path)
    assert (None if found is None else (found[0].route, found[1])) == expected
    if found is None:
        return
    entry, below = found
    exact = [r for r in routes if r.host == host and ref_covers(r.path_prefix, path)]
    if exact:  # exact host beats wildcard
        assert entry.route.host == host
    else:
        assert entry.route.host.startswith("*.") and host.endswith(entry.route.host[1:])
    same_host = [r for r in routes if r.host == entry.route.host
                 and ref_covers(r.path_prefix, path)]
    assert all(len(r.path_prefix) <= len(entry.prefix) for r in same_host)  # longest wins
    assert below.startswith("/") or path == entry.prefix


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(LABELS), st.sampled_from(LABELS), PATHS)
def test_wildcards_cover_exactly_one_label(sub, deeper, path):
    table = RouteTable.build([route("*.app.test", "/")])
    if not path.startswith("/"):
        path = "/" + path
    assert table.match(f"{sub}.app.test", path) is not None
    assert table.match("app.test", path) is None
    assert table.match(f"{deeper}.{sub}.app.test", path) is None
