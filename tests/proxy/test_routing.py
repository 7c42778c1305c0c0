"""The route table: host normalisation, exact-then-wildcard hosts, longest segment prefix."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from app.models import Route
from proxy.routing import RouteTable, Target, normalize_host, prefix_matches, strip_prefix

_ids = itertools.count()


def route(host: str, prefix: str = "/", target: str = "http://127.0.0.1:9000") -> Route:
    return Route(id=f"rt_{next(_ids)}", host=host, targets=(target,), owner="t",
                 path_prefix=prefix)


def test_normalize_host():
    assert normalize_host("Example.COM") == "example.com"
    assert normalize_host("example.com:8080") == "example.com"
    assert normalize_host("example.com.") == "example.com"
    assert normalize_host("example.com:") == "example.com"
    assert normalize_host("[::1]:8080") == "[::1]"
    assert normalize_host("bücher.de") == "xn--bcher-kva.de"
    # A UTF-8 Host header reaches WSGI as latin-1 text.
    assert normalize_host("bücher.de".encode().decode("latin-1")) == "xn--bcher-kva.de"
    for bad in (None, "", ":80", "a:b:c", "host:port", "[::1", "\udcff.test", "a b.test"):
        assert normalize_host(bad) is None, bad


def test_exact_before_wildcard_and_longest_prefix():
    table = RouteTable.build([route("*.example.com"), route("app.example.com"),
                              route("app.example.com", "/api"),
                              route("app.example.com", "/api/v2/")])
    assert table.match("x.example.com", "/")[0].route.host == "*.example.com"
    assert table.match("app.example.com", "/")[0].prefix == "/"
    assert table.match("app.example.com", "/api")[0].prefix == "/api"
    assert table.match("app.example.com", "/api/v2/x")[0].prefix == "/api/v2/"
    assert table.match("app.example.com", "/apix")[0].prefix == "/"
    assert table.match("example.com", "/") is None
    assert table.match("a.b.example.com", "/") is None
    assert table.match(None, "/") is None


def test_remaining_path():
    table = RouteTable.build([route("h.test", "/api"), route("h.test", "/files/")])
    assert table.match("h.test", "/api")[1] == "/"
    assert table.match("h.test", "/api/a/b")[1] == "/a/b"
    assert table.match("h.test", "/files/x")[1] == "/x"


def test_target_parsing():
    target = Target.parse("https://backend.internal/base/")
    assert (target.host, target.port, target.tls, target.base_path) == (
        "backend.internal", 443, True, "/base")
    assert target.host_header == "backend.internal"
    target = Target.parse("http://127.0.0.1:8081")
    assert (target.port, target.base_path, target.host_header) == (8081, "", "127.0.0.1:8081")
    assert Target.parse("http://[::1]:81").host_header == "[::1]:81"


# -- property: the indexed matcher agrees with a brute-force reading of the rules ----------

labels = st.sampled_from(["a", "b", "app", "api"])
hosts = st.builds(lambda sub, wild: f"*.{sub}.test" if wild else f"{sub}.test", labels,
                  st.booleans()) | st.builds(lambda a, b: f"{a}.{b}.test", labels, labels)
segments = st.lists(st.sampled_from(["api", "v1", "x", "files"]), max_size=3)
prefixes = st.builds(lambda segs, slash: "/" + "/".join(segs) + ("/" if slash and segs else ""),
                     segments, st.booleans())
paths = st.builds(lambda segs, tail: "/" + "/".join(segs) + tail, segments,
                  st.sampled_from(["", "/", "x", "/y"]))


def reference(routes: list[Route], host: str, path: str) -> Route | None:
    def best(candidates):
        matching = [r for r in candidates if prefix_matches(r.path_prefix, path)]
        return max(matching, key=lambda r: len(r.path_prefix), default=None)

    exact = best([r for r in routes if r.host == host])
    if exact is not None:
        return exact
    parent = host.split(".", 1)[1] if "." in host else None
    return best([r for r in routes if parent and r.host == f"*.{parent}"])


@given(st.lists(st.tuples(hosts, prefixes), max_size=12, unique=True),
       st.tuples(labels, labels), paths)
def test_matcher_agrees_with_the_rules(pairs, host_labels, path):
    routes = [route(host, prefix) for host, prefix in pairs]
    table = RouteTable.build(routes)
    for host in (f"{host_labels[0]}.test", f"{host_labels[0]}.{host_labels[1]}.test"):
        found = table.match(host, path)
        expected = reference(routes, host, path)
        assert (found[0].route if found else None) == expected
        if found:
            entry, below = found
            assert below.startswith("/")
            assert below == strip_prefix(entry.prefix, path)
            # Prefix and remainder give back the path.
            assert entry.prefix.rstrip("/") + below in (path, path + "/")
