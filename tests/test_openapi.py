"""The OpenAPI document: well-formed, complete (routes <-> paths), and true to the code."""

import re
import time

import pytest

from app import redis as keys
from app.alerts.rules import merge
from app.alerts.state import Signal, apply_signals
from app.api import events as api_events
from app.api import services as api_services
from app.api.openapi import build_document
from app.certificates import REVOCATION_REASONS
from app.choices import SCOPES
from app.events import Event
from app.metrics.aggregate import aggregate, apply
from app.models import NAME_RE, Certificate, Route, Service, Token, fresh_fields
from app.stores import ServiceStore
from app.tracing import format_traceparent
from tests.support import schema
from tests.support.api import bearer

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
    assert names("/api/v1/services") == set(api_services.LIST_PARAMS)
    assert names("/api/v1/services/{name}/logs") == set(api_services.LOGS_PARAMS)
    stream = next(p for p in DOC["paths"]["/api/v1/events"]["get"]["parameters"]
                  if p["name"] == "stream")
    assert stream["schema"]["enum"] == list(api_events.DOMAINS)


def request_schema(path, method):
    body = DOC["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return schema.resolve(DOC, body["$ref"])


def test_create_schemas_are_what_the_code_accepts():
    service = request_schema("/api/v1/services", "post")
    assert set(service["properties"]) == Service.CREATE_FIELDS | {"owner"}
    assert service["additionalProperties"] is False
    every = {"name": "web", "image": "registry.example.com:5000/team/app:1.2", "port": 8080,
             "hostname": "web.example.test", "command": ["httpd", "-f"], "env": {"A_1": "x"},
             "replicas": 3, "memory_mb": 64, "cpus": 0.5, "restart": "always",
             "labels": {"team": "a"}, "health": {"path": "/h", "interval_s": 5, "timeout_s": 1},
             "bind": "127.0.0.1"}
    assert not schema.errors(DOC, service, {**every, "owner": "bob"})
    assert Service.clean(every)["image"] == every["image"]
    redeploy = request_schema("/api/v1/services/{name}/redeploy", "post")
    assert set(redeploy["properties"]) == Service.REDEPLOY_FIELDS
    assert set(request_schema("/api/v1/services/{name}/scale", "post")["properties"]) == {
        "replicas"}

    certificate = request_schema("/api/v1/certificates", "post")
    body = {"name": "site", "domains": ["a.example.test"], "directory": "staging",
            "key_type": "rsa2048"}
    assert set(certificate["properties"]) == set(body)
    assert not schema.errors(DOC, certificate, body)
    assert Certificate.clean(body)["key_type"] == "rsa2048"
    assert schema.errors(DOC, certificate, {**body, "directory": "http://ca.example/dir"})
    revoke = request_schema("/api/v1/certificates/{name}/revoke", "post")
    assert revoke["properties"]["reason"]["enum"] == list(REVOCATION_REASONS)

    assert set(request_schema("/api/v1/routes", "post")["properties"]) == Route.EDITABLE
    rules = request_schema("/api/v1/orchestrator/alert-rules", "put")
    effective = merge().public()  # the defaults, with every field
    assert not schema.errors(DOC, rules, effective)
    shown = schema.resolve(DOC, body_schema("/api/v1/orchestrator/alert-rules", "get",
                                            "200")["$ref"])
    assert not schema.errors(DOC, shown["properties"]["effective"], effective)
    assert schema.errors(DOC, rules, {"rules": {"error_rate": {"threshold": 2}}})


def documented_fields(name: str) -> set[str]:
    return set(schema.resolve(DOC, f"#/components/schemas/{name}")["properties"])


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
    api.redis.hset(keys.HEARTBEATS, "proxy/h:2", int(time.time() * 1000))
    api.redis.hset(keys.PROXY_SERVED, "proxy/h:2", '{"route":3}')
    proxies = api.get("/api/v1/proxies", api.admin)
    conforms("/api/v1/proxies", "get", "200", proxies)
    assert proxies.json["proxies"][0]["route"] == 3
    conforms("/api/v1/jobs/{trace_id}", "get", "200", api.get(f"/api/v1/jobs/{'1' * 32}",
                                                               api.admin))
    api.publisher.flush()
    events = api.get("/api/v1/events", api.admin, params={"limit": 1})
    conforms("/api/v1/events", "get", "200", events)
    assert events.json["items"]


def test_real_responses_of_routes_certificates_and_services_match(api, redis_client):
    route = api.post("/api/v1/routes", api.admin,
                     json={"host": "app.example.test", "targets": ["http://127.0.0.1:9"],
                           "auto_certificate": True})
    conforms("/api/v1/routes", "post", "201", route)
    assert set(route.json) <= documented_fields("Route")

    created = api.post("/api/v1/certificates", api.admin,
                       json={"name": "site", "domains": ["site.example.test"]})
    conforms("/api/v1/certificates", "post", "202", created)
    listed = api.get("/api/v1/certificates", api.admin)
    conforms("/api/v1/certificates", "get", "200", listed)
    assert {c["id"] for c in listed.json["items"]} == {"site", "auto-app-example-test"}
    shown = api.get("/api/v1/certificates/site", api.admin)
    conforms("/api/v1/certificates/{name}", "get", "200", shown)
    assert set(shown.json) == documented_fields("CertificateDetail")
    revoke = api.post("/api/v1/certificates/site/revoke", api.admin)
    assert revoke.status_code == 409  # nothing issued yet
    renew = api.post("/api/v1/certificates/site/renew", api.admin)
    conforms("/api/v1/certificates/{name}/renew", "post", "202", renew)

    ServiceStore(redis_client).create(Service(id="web", image="busybox", port=80,
                                              owner="root", hostname="web.localhost",
                                              revision=1, **fresh_fields()))
    services = api.get("/api/v1/services", api.admin)
    conforms("/api/v1/services", "get", "200", services)
    assert set(services.json["items"][0]) == documented_fields("Service")
    conforms("/api/v1/services/{name}", "get", "200", api.get("/api/v1/services/web",
                                                                api.admin))


def test_real_responses_of_observability_match(api, redis_client):
    now = time.time()
    requests = [Event(type="proxy_request_completed", source="proxy", subject="shop.test",
                      ts_ms=int(now * 1000),
                      data={"host": "shop.test", "method": "GET", "status": status,
                            "duration_ms": 12.5, "upstream": "http://127.0.0.1:9001"})
                for status in (200, 200, 503)]
    pipe = redis_client.pipeline(transaction=True)
    apply(aggregate(requests), pipe)
    pipe.execute()
    apply_signals(redis_client, [Signal(merge().rules["service_failed"], "web", True,
                                        message="down")], int(now * 1000))
    metrics = api.get("/api/v1/orchestrator/metrics", api.admin, params={"window": "total"})
    conforms("/api/v1/orchestrator/metrics", "get", "200", metrics)
    assert metrics.json["routers"] and metrics.json["services"]
    series = api.get("/api/v1/orchestrator/metrics/series", api.admin)
    conforms("/api/v1/orchestrator/metrics/series", "get", "200", series)
    assert series.json["points"][-1]["requests"] == 3
    alerts = api.get("/api/v1/orchestrator/alerts", api.admin, params={"state": "all"})
    conforms("/api/v1/orchestrator/alerts", "get", "200", alerts)
    [alert] = alerts.json["items"]
    assert set(alert) == documented_fields("Alert")
    conforms("/api/v1/orchestrator/alerts/{alert_id}/ack", "post", "200",
             api.post(f"/api/v1/orchestrator/alerts/{alert['id']}/ack", api.admin))
    conforms("/api/v1/orchestrator/alert-rules", "get", "200",
             api.get("/api/v1/orchestrator/alert-rules", api.admin))
    replaced = api.client.simulate_put(
        "/api/v1/orchestrator/alert-rules", headers=bearer(api.admin),
        json={"rules": {"error_rate": {"threshold": 0.2, "window": "1m"}},
              "webhooks": ["https://hooks.example.test/x"]})
    conforms("/api/v1/orchestrator/alert-rules", "put", "200", replaced)
    overview = api.get("/api/v1/orchestrator/overview", api.admin)
    conforms("/api/v1/orchestrator/overview", "get", "200", overview)
    assert overview.json["routers"] and overview.json["alerts"]
    exposition = api.get("/metrics", api.admin)
    assert exposition.status_code == 200
    assert exposition.headers["content-type"] in DOC["paths"]["/metrics"]["get"]["responses"][
        "200"]["content"]
    for path in ("/dashboard", "/dashboard/index.html", "/dashboard/app.js",
                 "/dashboard/app.css"):
        page = api.get(path)
        template = "/dashboard" if path == "/dashboard" else "/dashboard/{name}"
        assert page.status_code == 200, path
        assert page.headers["content-type"] in DOC["paths"][template]["get"]["responses"][
            "200"]["content"], path


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
