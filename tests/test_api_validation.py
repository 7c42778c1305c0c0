"""Validation and the OpenAPI document agree on the inputs schemathesis found them to differ on:
integers past 2**53, the all-zero trace id, hosts with control characters or empty, integral
JSON numbers such as 138265.0, and the 414/431 the HTTP server answers by itself."""

from __future__ import annotations

import pytest

from app.api.openapi import build_document
from app.errors import ValidationError
from app.models import check_int
from tests.support import schema
from tests.support.api import bearer

DOC = build_document()
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
ROUTE = {"host": "app.example.test", "targets": ["http://127.0.0.1:9"]}


def component(name: str) -> dict:
    return DOC["components"]["schemas"][name]


def query_schema(path: str, name: str, method: str = "get") -> dict:
    item = DOC["paths"][path]
    params = [*item.get("parameters", []), *item[method].get("parameters", [])]
    return next(p["schema"] for p in params if p["name"] == name)


def request_integers(node, where="$"):
    """(where, schema) of every integer in a request body or query parameter schema."""
    if isinstance(node, dict):
        if "$ref" in node:
            yield from request_integers(schema.resolve(DOC, node["$ref"]), where)
            return
        types = node.get("type")
        if types == "integer" or (isinstance(types, list) and "integer" in types):
            yield where, node
        for key, value in node.items():
            if key not in ("description", "default", "examples", "enum"):
                yield from request_integers(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from request_integers(value, f"{where}/{i}")


def request_schemas():
    for path, item in DOC["paths"].items():
        for method in HTTP_METHODS:
            op = item.get(method)
            if op is None:
                continue
            for param in [*item.get("parameters", []), *op.get("parameters", [])]:
                yield f"{method} {path} ?{param['name']}", param["schema"]
            if "requestBody" in op:
                yield f"{method} {path} body", op["requestBody"]["content"][
                    "application/json"]["schema"]


def test_every_request_integer_has_bounds_within_2_53():
    found = 0
    for where, body in request_schemas():
        for at, integer in request_integers(body, where):
            found += 1
            assert "minimum" in integer and "maximum" in integer, at
            assert -(2**53) <= integer["minimum"] <= integer["maximum"] <= 2**53, at
    assert found >= 15  # ports, replicas, versions, limits, alert rules...


def test_integers_past_2_53_are_refused_naming_the_field(api):
    created = api.post("/api/v1/routes", api.admin, json=ROUTE)
    route_id = created.json["id"]
    too_big = 2**53 + 1
    patched = api.client.simulate_patch(f"/api/v1/routes/{route_id}", headers=bearer(api.admin),
                                        json={"version": too_big, "hsts": True})
    assert patched.status_code == 400
    assert patched.json["field"] == "version" and str(2**53) in patched.json["description"]
    assert schema.errors(DOC, component("RoutePatch"), {"version": too_big})
    body = api.post("/api/v1/routes", api.admin,
                    json={**ROUTE, "host": "b.example.test", "max_body_bytes": too_big})
    assert body.status_code == 400 and body.json["field"] == "max_body_bytes"
    assert schema.errors(DOC, component("RouteCreate"), {**ROUTE, "max_body_bytes": too_big})
    # In the query too: 16 digits and more get the range, not "must be an integer".
    deleted = api.delete(f"/api/v1/routes/{route_id}", api.admin,
                         params={"version": str(too_big)})
    assert deleted.status_code == 400 and deleted.json["field"] == "version"
    assert "from 1 to" in deleted.json["description"]
    assert schema.errors(DOC, query_schema("/api/v1/routes/{route_id}", "version", "delete"),
                         too_big)
    # A version of 10 digits is within range: not found stale, not malformed.
    stale = api.delete(f"/api/v1/routes/{route_id}", api.admin,
                       params={"version": "1234567890"})
    assert stale.status_code == 409


def test_an_all_zero_trace_id_is_refused_by_schema_and_api(api):
    pattern = query_schema("/api/v1/events", "trace_id")
    zero, upper = "0" * 32, "0AF7651916CD43DD8448EB211C80319C"
    assert schema.errors(DOC, pattern, zero) and not schema.errors(DOC, pattern, upper)
    refused = api.get("/api/v1/events", api.admin, params={"trace_id": zero})
    assert refused.status_code == 400 and refused.json["field"] == "trace_id"
    assert "not all zero" in refused.json["description"]
    assert api.get("/api/v1/events", api.admin, params={"trace_id": upper}).status_code == 200
    # Surrounding spaces are outside the pattern, so outside what the API takes.
    spaced = api.get("/api/v1/events", api.admin, params={"trace_id": f" {upper[1:]}"})
    assert spaced.status_code == 400 and schema.errors(DOC, pattern, f" {upper[1:]}")


@pytest.mark.parametrize("host", ["a\x01b.example.test", "tab\t.example.test", "sp ace.test",
                                  "under_score.test"])
def test_a_host_with_controls_or_punctuation_gets_an_accurate_message(api, host):
    refused = api.post("/api/v1/routes", api.admin, json={**ROUTE, "host": host})
    assert refused.status_code == 400 and refused.json["field"] == "host"
    assert refused.json["description"] == (
        f"host {host!r} is not a valid DNS name: use letters, digits and hyphens, in labels "
        "of at most 63 characters separated by dots, optionally after '*.'")
    assert "253" not in refused.json["description"]
    assert schema.errors(DOC, component("RouteCreate"), {**ROUTE, "host": host})
    for path in ("/api/v1/orchestrator/metrics", "/api/v1/orchestrator/metrics/series"):
        filtered = api.get(path, api.admin, params={"host": host})
        assert filtered.status_code == 400 and filtered.json["field"] == "host", path
        assert "DNS name" in filtered.json["description"], path
        assert schema.errors(DOC, query_schema(path, "host"), host), path


def test_the_metrics_host_filter_takes_what_the_schema_allows(api):
    path = "/api/v1/orchestrator/metrics"
    for host in ("shop.example.test", "*.example.test", "_unmatched", "SHOP.example.test."):
        assert not schema.errors(DOC, query_schema(path, "host"), host), host
        assert api.get(path, api.admin, params={"host": host}).status_code == 200, host
    assert schema.errors(DOC, query_schema(path, "host"), "a" * 254)
    assert api.get(path, api.admin, params={"host": "a" * 254}).status_code == 400


def test_an_empty_host_is_refused_by_schema_and_api(api):
    assert schema.errors(DOC, component("RouteCreate"), {**ROUTE, "host": ""})
    assert schema.errors(DOC, component("CertificateCreate"), {"name": "c", "domains": [""]})
    assert schema.errors(DOC, component("ServiceCreate"),
                         {"name": "s", "image": "nginx", "port": 80, "hostname": ""})
    refused = api.post("/api/v1/routes", api.admin, json={**ROUTE, "host": ""})
    assert refused.status_code == 400 and refused.json["field"] == "host"
    cert = api.post("/api/v1/certificates", api.admin, json={"name": "c", "domains": [""]})
    assert cert.status_code == 400 and cert.json["field"] == "domains"
    # What the pattern allows, the API takes (one trailing dot is the DNS root).
    for host in ("x.example.test", "X-1.Example.TEST.", "xn--bcher-kva.example.test"):
        assert not schema.errors(DOC, component("RouteCreate"), {**ROUTE, "host": host}), host
    for host in ("0", "a.123", "a..b", "a.b..", "-a.test", "ab--c.test"):
        assert schema.errors(DOC, component("RouteCreate"), {**ROUTE, "host": host}), host
        assert api.post("/api/v1/routes", api.admin,
                        json={**ROUTE, "host": host}).status_code == 400, host


def test_an_integral_number_is_an_integer(api):
    created = api.post("/api/v1/routes", api.admin, json={**ROUTE, "max_body_bytes": 138265.0})
    assert created.status_code == 201, created.text
    assert created.json["max_body_bytes"] == 138265
    assert isinstance(created.json["max_body_bytes"], int)
    assert '"max_body_bytes": 138265,' in created.text  # stored as an int, not 138265.0
    assert not schema.errors(DOC, component("RouteCreate"), {**ROUTE, "max_body_bytes": 8.0})
    for value in (1.5, True, "1", 1e300):
        refused = api.post("/api/v1/routes", api.admin,
                           json={**ROUTE, "host": "c.example.test", "max_body_bytes": value})
        assert refused.status_code == 400, value
        assert refused.json == {"title": "Invalid input", "field": "max_body_bytes",
                                "description": f"max_body_bytes must be an integer from 0 to "
                                               f"{2**40}"}


def test_check_int_converts_integral_floats_only():
    assert check_int(8080.0, "port", 1, 65535) == 8080
    assert type(check_int(8080.0, "port", 1, 65535)) is int
    for value in (8080.5, float("inf"), float("nan"), False, None):
        with pytest.raises(ValidationError):
            check_int(value, "port", 1, 65535)


def test_every_operation_documents_the_http_servers_own_refusals():
    for path, item in DOC["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                assert {"414", "431"} <= set(item[method]["responses"]), f"{method} {path}"


def test_a_url_with_controls_or_non_ascii_is_refused_as_its_uri_format_says(api):
    # urlsplit("https://\x84") has the host "\x84": it used to be taken as a directory.
    for directory in ("https://\x84", "https://ca.example.test/a b", "https://bücher.example/"):
        refused = api.post("/api/v1/certificates", api.admin,
                           json={"name": "c", "domains": ["c.example.test"],
                                 "directory": directory})
        assert refused.status_code == 400 and refused.json["field"] == "directory", directory
        assert "printable ASCII" in refused.json["description"]
    target = api.post("/api/v1/routes", api.admin, json={**ROUTE, "targets": ["http://\x85/"]})
    assert target.status_code == 400 and target.json["field"] == "targets"
    assert schema.errors(DOC, component("RouteCreate"), {**ROUTE, "targets": ["ftp://a.test"]})
