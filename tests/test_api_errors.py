"""Malformed input to every endpoint gets a JSON 4xx: walks every operation in the OpenAPI
document with missing/invalid tokens, unknown and bad query parameters, bad JSON, wrong types,
unknown fields, bad ids and wrong methods. Never a 5xx, never a traceback."""

import json
import re

import pytest

from app.api.openapi import build_document
from app.api.params import MAX_BODY_BYTES
from tests.support import schema
from tests.support.api import bearer

DOC = build_document()
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ABSENT_ID = "tok_000000000000"


def documented():
    for path, item in DOC["paths"].items():
        for method in METHODS:
            if method.lower() in item:
                yield path, method, item[method.lower()], item.get("parameters", [])


VALID_BODIES = {"updateRoute": {"version": 1, "hsts": True},
                "revokeCertificate": {"reason": "superseded"},
                "redeployService": {"image": "nginx:1.27", "env": {"A": "1"}},
                "scaleService": {"replicas": 2}}


def concrete(path: str, value: str = ABSENT_ID) -> str:
    for name in ("token_id", "route_id", "name", "alert_id", "trace_id"):
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"teach this test a value for {path}"
    return path


def wrong_value(prop: dict):
    """A JSON value of the wrong type for a property schema."""
    kind = prop.get("type")
    return {"string": 12345, "integer": "x", "number": "x", "boolean": "yes",
            "object": "x", "array": "x"}.get(kind)


def bad_query_values(param: dict) -> list[str]:
    spec = param["schema"]
    values = []
    if "enum" in spec:
        values.append("not-one-of-them")
    if spec.get("type") == "integer":
        values += ["abc", "1.5", str(spec.get("minimum", 0) - 1)]
        if "maximum" in spec:
            values.append(str(spec["maximum"] + 1))
    if "pattern" in spec:  # a value the pattern refuses (a text pattern refuses controls)
        values.append(next(v for v in ("<no match!>", "no\x01match")
                           if not re.search(spec["pattern"], v)))
    if "maxLength" in spec:
        values.append("a" * (spec["maxLength"] + 1))
    return values


def cases(path, method, op, path_params):
    """(label, request kwargs, expected status or None for any 4xx, needs a token)."""
    secured = op.get("security") != []
    url = concrete(path)
    if secured:
        yield "no token", dict(path=url), 401, False
        yield "unknown token", dict(path=url, headers=bearer("brt_" + "0" * 43)), 401, False
        yield "not bearer", dict(path=url, headers={"Authorization": "Token abc"}), 401, False
    yield "unknown query parameter", dict(path=url, query_string="zzz=1"), 400, True
    for param in op.get("parameters", []):
        if param["in"] == "query":
            for value in bad_query_values(param):
                yield (f"{param['name']}={value[:20]}",
                       dict(path=url, params={param["name"]: value}), 400, True)
            yield (f"{param['name']} twice",
                   dict(path=url, query_string=f"{param['name']}=a&{param['name']}=b"), 400, True)
        if param["in"] == "header":
            yield (f"bad {param['name']}",
                   dict(path=url, headers={param["name"]: "<no match!>"}), 400, True)
    for param in path_params:
        yield f"{param['name']} malformed", dict(path=concrete(path, "bad id!")), 400, True
        yield f"{param['name']} too long", dict(path=concrete(path, "a" * 101)), 400, True
        if param["name"] == "trace_id":
            continue  # names no record: every well-formed trace id gets an answer
        # An operation that takes a body gets a valid one, so only the id can be at fault.
        body = VALID_BODIES.get(op.get("operationId"))
        yield (f"{param['name']} absent",
               dict(path=url, json=body) if body else dict(path=url), 404, True)
    if "requestBody" in op:
        body_schema = schema.resolve(
            DOC, op["requestBody"]["content"]["application/json"]["schema"]["$ref"])
        as_json = {"Content-Type": "application/json"}
        for label, raw in (("bad JSON", "{"), ("truncated", '{"name": '),
                           ("NaN", '{"name": NaN}'), ("not UTF-8", b"\xff\xfe{}"),
                           ("array", "[]"), ("string", '"x"'), ("number", "1"),
                           ("nested deeply", "[" * 100_000 + "]" * 100_000)):
            yield label, dict(path=url, body=raw, headers=as_json), None, True
        yield ("too large", dict(path=url, body="{" + " " * MAX_BODY_BYTES + "}",
                                 headers=as_json), 413, True)
        yield ("not JSON media type", dict(path=url, body="{}",
                                           headers={"Content-Type": "text/plain"}), 415, True)
        yield "unknown field", dict(path=url, json={"zzz": 1}), 400, True
        if body_schema.get("required"):
            yield "missing required", dict(path=url, json={}), 400, True
            if op["requestBody"].get("required"):
                yield "empty body", dict(path=url), 400, True
        base = {name: "ok" for name in body_schema.get("required", [])}
        for name, prop in body_schema.get("properties", {}).items():
            yield f"{name} wrong type", dict(path=url, json={**base, name: wrong_value(prop)}), \
                400, True
            if "pattern" in prop or "enum" in prop:
                yield (f"{name} invalid", dict(path=url, json={**base, name: "Not Valid!"}),
                       400, True)
    for other in METHODS:
        if other.lower() not in DOC["paths"][path]:
            yield f"{other} not allowed", dict(path=url, method=other), 405, True


def check(response, label):
    problems = []
    if not 400 <= response.status_code < 500:
        problems.append(f"status {response.status_code}")
    if not response.headers.get("content-type", "").startswith("application/json"):
        problems.append(f"content-type {response.headers.get('content-type')}")
    try:
        body = json.loads(response.text)
    except ValueError:
        return [f"{label}: not JSON: {response.text[:200]!r}"]
    if not (isinstance(body, dict) and isinstance(body.get("title"), str)
            and isinstance(body.get("description"), str) and body["description"]):
        problems.append(f"body {body!r}")
    if "Traceback" in response.text or 'File "' in response.text:
        problems.append("traceback in body")
    if not response.headers.get("x-trace-id"):
        problems.append("no X-Trace-Id")
    return [f"{label}: {p}" for p in problems]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path, method, op, path_params",
                         list(documented()), ids=lambda v: v if isinstance(v, str) else "")
def test_malformed_input_gets_a_json_4xx(api, path, method, op, path_params):
    failures = []
    walked = 0
    for label, request, expected, needs_token in cases(path, method, op, path_params):
        request = dict(request)
        verb = request.pop("method", method)
        headers = dict(request.pop("headers", {}))
        if needs_token:
            headers.update(bearer(api.admin))
        response = api.client.simulate_request(verb, headers=headers, **request)
        walked += 1
        failures += check(response, label)
        if expected is not None and response.status_code != expected:
            failures.append(f"{label}: expected {expected}, got {response.status_code} "
                            f"{response.text[:200]}")
    assert walked >= 3
    assert not failures, "\n".join(failures)


def test_unknown_route_is_json_404(api):
    for path in ("/", "/api", "/api/v1", "/api/v2/tokens", "/api/v1/tokens/a/b", "/%ff"):
        response = api.get(path, api.admin)
        assert response.status_code == 404, path
        assert not check(response, path)


def test_internal_errors_are_generic_json_500(api, caplog):
    def explode(req, resp):
        raise RuntimeError("secret internals")

    class Boom:
        on_get = staticmethod(explode)

    api.app.add_route("/api/v1/boom", Boom())
    response = api.get("/api/v1/boom", api.admin)
    assert response.status_code == 500
    assert set(response.json) == {"title", "description"}
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert "secret internals" in caplog.text  # the log has the details
