"""Header policy: hop-by-hop, forwarding, internal headers, rules."""

from __future__ import annotations

from proxy.headers import (
    TrustedProxies,
    apply_rules,
    forwarding_headers,
    request_headers,
    response_headers,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"


def env(**headers) -> dict:
    return {"REQUEST_METHOD": "GET", "CONTENT_TYPE": "text/plain",
            **{f"HTTP_{k.upper()}": v for k, v in headers.items()}}


def test_request_headers_drop_hop_by_hop_internal_and_named_ones():
    out = dict(request_headers(
        env(connection="close, X-Secret", x_secret="1", keep_alive="1", te="trailers",
            upgrade="h2c", host="a.test", x_berth_user="root", x_forwarded_for="1.2.3.4",
            accept="*/*", expect="100-continue", content_length="3"),
        forwarding=[("X-Forwarded-For", "127.0.0.1")], trace_id=TRACE, rules=()))
    assert out["Accept"] == "*/*" and out["Content-Type"] == "text/plain"
    assert out["X-Forwarded-For"] == "127.0.0.1" and out["X-Trace-Id"] == TRACE
    assert out["traceparent"].split("-")[1] == TRACE
    lower = {k.lower() for k in out}
    assert not lower & {"connection", "x-secret", "keep-alive", "te", "upgrade", "host",
                        "x-berth-user", "expect", "content-length"}


def test_drop_extra_and_rules():
    out = request_headers(env(authorization="Basic eDp5", accept="a"), forwarding=[],
                          trace_id=TRACE, rules=(("accept", "Accept", None),
                                                 ("x-env", "X-Env", "prod")),
                          drop=frozenset({"authorization"}), extra=[("X-Berth-User", "ann")])
    names = [k for k, _ in out]
    assert "Authorization" not in names and "Accept" not in names
    assert ("X-Berth-User", "ann") in out and ("X-Env", "prod") in out


def test_forwarding_untrusted_and_trusted():
    headers = env(x_forwarded_for="6.6.6.6", x_forwarded_proto="https",
                  x_forwarded_host="evil.test", forwarded="for=6.6.6.6")
    untrusted = dict(forwarding_headers(headers, peer="10.0.0.5", trusted=False,
                                        client_ip="10.0.0.5", scheme="http", host="a.test"))
    assert untrusted == {"X-Forwarded-For": "10.0.0.5", "X-Forwarded-Proto": "http",
                         "X-Forwarded-Host": "a.test", "X-Real-IP": "10.0.0.5",
                         "Forwarded": 'for=10.0.0.5;host="a.test";proto=http'}
    trusted = dict(forwarding_headers(headers, peer="::1", trusted=True, client_ip="6.6.6.6",
                                      scheme="https", host="a.test"))
    assert trusted["X-Forwarded-For"] == "6.6.6.6, ::1"
    assert trusted["X-Forwarded-Proto"] == "https"
    assert trusted["X-Forwarded-Host"] == "evil.test"
    assert trusted["Forwarded"] == 'for=6.6.6.6, for="[::1]";host="a.test";proto=https'


def test_client_ip_skips_trusted_hops_from_the_right():
    trusted = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    assert trusted.client_ip("127.0.0.1", "1.1.1.1, 2.2.2.2, 10.1.1.1") == "2.2.2.2"
    assert trusted.client_ip("127.0.0.1", "10.0.0.1, 10.0.0.2") == "10.0.0.1"
    assert trusted.client_ip("8.8.8.8", "1.1.1.1") == "8.8.8.8"  # untrusted peer
    assert trusted.client_ip("127.0.0.1", None) == "127.0.0.1"
    assert not TrustedProxies().trusts("127.0.0.1")
    assert not trusted.trusts("not-an-ip")


def test_response_headers():
    upstream = [("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "5"),
                ("Transfer-Encoding", "chunked"), ("Server", "nginx"), ("Date", "x"),
                ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Trace-Id", "spoofed"),
                ("X-Remove", "1")]
    out = response_headers(upstream, trace_id=TRACE, rules=(("x-remove", "X-Remove", None),),
                           hsts=True)
    assert out == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                   ("Strict-Transport-Security", "max-age=31536000"), ("X-Trace-Id", TRACE)]


def test_apply_rules_replaces_every_copy():
    out = apply_rules([("Vary", "a"), ("vary", "b")], (("vary", "Vary", "c"),))
    assert out == [("Vary", "c")]
