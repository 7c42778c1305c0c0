"""The OpenAPI document: well-formed, complete (routes <-> paths), and true to the code."""

import re

import pytest

from app import redis as keys
from app.api import events as api_events
from app.api.openapi import build_document
from app.models import NAME_RE, SCOPES, Token
from app.tracing import format_traceparent
from tests.support import schema

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DOC = build_document()


def falcon_routes(app) -> dict[str, set[str]]:
    """uri template -> the methods its resource implements, read from the app's router."""
    routes: dict[str, set[str]] = {}

    def walk(nodes):
        for node in nodes:
            if node.resource is not None:
                routes[node.uri_template] = {
                    m for m in HTTP_METHODS if callable(getattr(node.resource, f"on_{m}", None))}
            walk(node.children)

    walk(app._router._roots)
    return routes


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def operations():
    for path, item in DOC["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def test_document_is_served_without_a_token(api):
    response = api.get("/openapi.json")
    assert response.status_code == 200
    assert response.json == DOC


def test_document_structure():
    assert re.match(r"^3\.[01]\.\d+$", DOC["openapi"])
    assert DOC["info"]["title"] and DOC["info"]["version"]
    assert DOC["components"]["securitySchemes"]["bearer"] == {
        **DOC["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    operation_ids = [op["operationId"] for _p, _m, op in operations()]
    assert len(operation_ids) == len(set(operation_ids))
    for ref in set(refs(DOC)):
        assert schema.resolve(DOC, ref), ref
    for path, item in DOC["paths"].items():
        assert path.startswith("/")
        assert set(item) <= {*HTTP_METHODS, "parameters", "summary", "description"}
        templated = set(re.findall(r"{(\w+)}", path))
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert templated == declared, path
        assert all(p["required"] for p in item.get("parameters", []) if p["in"] == "path")
    for path, method, op in operations():
        where = f"{method.upper()} {path}"
        assert op["responses"], where
        assert any(code.startswith("2") for code in op["responses"]), where
        for code, response in op["responses"].items():
            assert re.match(r"^[1-5]\d\d$", code), where
            target = schema.resolve(DOC, response["$ref"]) if "$ref" in response else response
            assert target["description"], where
        for param in op.get("parameters", []):
            assert {"name", "in", "schema"} <= set(param) and param["in"] in (
                "query", "header", "path", "cookie"), where
        if "requestBody" in op:
            assert "application/json" in op["requestBody"]["content"], where
        if op.get("security") != []:
            assert "401" in op["responses"], where
        assert "400" in op["responses"], where


def test_every_route_is_documented_and_every_documented_route_exists(api):
    documented = {path: {m for m in HTTP_METHODS if m in item}
                  for path, item in DOC["paths"].items()}
    assert falcon_routes(api.app) == documented


def test_error_responses_use_the_error_schema():
    for name, response in DOC["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}, name
    assert DOC["components"]["schemas"]["Error"]["required"] == ["title", "description"]


def test_token_create_schema_is_what_token_clean_accepts():
    body = DOC["paths"]["/api/v1/tokens"]["post"]["requestBody"]["content"]["application/json"]
    create = schema.resolve(DOC, body["schema"]["$ref"])
    assert create["additionalProperties"] is False
    assert create["required"] == ["name"]
    assert create["properties"]["name"]["pattern"] == NAME_RE.pattern
    assert create["properties"]["scope"]["enum"] == list(SCOPES)
    every = {"name": "ci", "scope": "admin", "owner": "bob"}
    assert set(every) == set(create["properties"])
    assert Token.clean(every) == every
    assert not schema.errors(DOC, create, every)


def test_query_parameters_are_what_the_code_reads():
    def names(path):
        op = DOC["paths"][path]["get"]
        return {p["name"] for p in op["parameters"] if p["in"] == "query"}

    assert names("/api/v1/events") == set(api_events.SEARCH_PARAMS)
    assert names("/api/v1/events/stream") == set(api_events.TAIL_PARAMS)
    stream = next(p for p in DOC["paths"]["/api/v1/events"]["get"]["parameters"]
                  if p["name"] == "stream")
    assert stream["schema"]["enum"] == list(api_events.DOMAINS)


def body_schema(path, method, status):
    return DOC["paths"][path][method]["responses"][status]["content"]["application/json"][
        "schema"]


def conforms(path, method, status, response):
    assert response.status_code == int(status), response.text
    problems = schema.errors(DOC, body_schema(path, method, status), response.json)
    assert not problems, problems


def test_real_responses_match_their_schemas(api):
    conforms("/healthz", "get", "200", api.get("/healthz"))
    created = api.post("/api/v1/tokens", api.admin, json={"name": "x", "owner": "bob"})
    conforms("/api/v1/tokens", "post", "201", created)
    token_schema = schema.resolve(DOC, "#/components/schemas/Token")
    assert set(created.json["token"]) == set(token_schema["properties"])
    conforms("/api/v1/tokens", "get", "200", api.get("/api/v1/tokens", api.admin))
    job = api.post("/api/v1/orchestrator/jobs/trim-streams", api.admin,
                   headers={"traceparent": format_traceparent("1" * 32)})
    conforms("/api/v1/orchestrator/jobs/trim-streams", "post", "202", job)
    api.redis.hset(keys.HEARTBEATS, "worker/h:1", 1)
    status = api.get("/api/v1/orchestrator/status", api.admin)
    conforms("/api/v1/orchestrator/status", "get", "200", status)
    api.publisher.flush()
    events = api.get("/api/v1/events", api.admin, params={"limit": 1})
    conforms("/api/v1/events", "get", "200", events)
    assert events.json["items"]


@pytest.mark.parametrize("status", ["400", "401", "404", "405"])
def test_real_errors_match_the_error_schema(api, status):
    response = {
        "400": lambda: api.get("/api/v1/events", api.admin, params={"limit": "x"}),
        "401": lambda: api.get("/api/v1/tokens"),
        "404": lambda: api.delete("/api/v1/tokens/tok_000000000000", api.admin),
        "405": lambda: api.client.simulate_patch("/healthz"),
    }[status]()
    assert response.status_code == int(status)
    assert not schema.errors(DOC, {"$ref": "#/components/schemas/Error"}, response.json)
