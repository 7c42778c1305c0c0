"""The OpenAPI 3.1 document of the management API, served at /openapi.json.

Built from the same constants the code validates with (name pattern, scopes, stream domains,
limits), so the document and the code cannot drift apart silently; tests/test_openapi.py
checks that every route is documented and every documented route exists.
"""

from __future__ import annotations

import falcon

from app.api import events as ev
from app.api.params import ID_PATTERN, STREAM_ID_PATTERN, query
from app.models import NAME_RE, SCOPES

VERSION = "1"

_ERROR_RESPONSES = {
    "400": ("BadRequest", "Malformed input: invalid JSON, a missing, malformed or unknown field "
                          "or query parameter. `field` names the offending input."),
    "401": ("Unauthorized", "No token, a malformed Authorization header, or an unknown or "
                            "revoked token. Carries `WWW-Authenticate: Bearer`."),
    "403": ("Forbidden", "The token is valid but its scope does not allow this."),
    "404": ("NotFound", "No such resource, or it belongs to another owner."),
    "405": ("MethodNotAllowed", "The path exists but not with this method; see `Allow`."),
    "409": ("Conflict", "The resource already exists or changed meanwhile."),
    "413": ("ContentTooLarge", "The body is larger than 64 KiB."),
    "415": ("UnsupportedMediaType", "The body is not sent as application/json."),
    "500": ("InternalError", "An unexpected error; details are in the server log under the "
                             "response's X-Trace-Id."),
    "503": ("Unavailable", "Redis (or another backing service) is unreachable."),
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _errors(*codes: str) -> dict:
    return {code: {"$ref": f"#/components/responses/{_ERROR_RESPONSES[code][0]}"}
            for code in codes}


_COMMON = ("400", "405", "500", "503")
_AUTHED = ("401", *_COMMON)


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_FILTER_PARAMS = [
    _query("stream", {"type": "string", "enum": list(ev.DOMAINS)},
           "Only this domain's stream. Default: every domain except `dead`."),
    _query("type", {"type": "string", "maxLength": 100}, "Only events of this type."),
    _query("subject", {"type": "string", "maxLength": 200}, "Only events about this subject."),
    _query("trace_id", {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
           "Only events of this trace."),
]

_ROUTE_FIELDS = {
    "host": {"type": "string", "maxLength": 253,
             "description": "Exact hostname or `*.domain` (IDNA-normalised)."},
    "targets": {"type": "array", "minItems": 1, "maxItems": 32,
                "items": {"type": "string", "format": "uri"}},
    "path_prefix": {"type": "string", "pattern": "^/", "default": "/"},
    "strip_prefix": {"type": "boolean"},
    "preserve_host": {"type": "boolean"},
    "request_headers": {"type": "object", "maxProperties": 50,
                        "additionalProperties": {"type": ["string", "null"]}},
    "response_headers": {"type": "object", "maxProperties": 50,
                         "additionalProperties": {"type": ["string", "null"]}},
    "https_redirect": {"type": "string", "enum": ["auto", "always", "never"]},
    "hsts": {"type": "boolean"},
    "auth": {"type": "object", "required": ["type"],
             "properties": {"type": {"type": "string", "enum": ["none", "token", "basic"]}}},
    "max_body_bytes": {"type": "integer", "minimum": 0},
    "auto_certificate": {"type": "boolean"},
}

_SCHEMAS = {
    "Route": {
        "type": "object",
        "required": ["id", "host", "targets", "owner", "version"],
        "properties": {"id": {"type": "string"}, "owner": {"type": "string"},
                       "version": {"type": "integer"}, "service": {"type": "string"},
                       "created_at": {"type": "number"}, "updated_at": {"type": "number"},
                       **_ROUTE_FIELDS},
    },
    "RouteList": {"type": "object", "required": ["items"],
                  "properties": {"items": {"type": "array", "items": _ref("Route")}}},
    "RouteCreate": {"type": "object", "additionalProperties": False,
                    "required": ["host", "targets"], "properties": _ROUTE_FIELDS},
    "RoutePatch": {"type": "object", "additionalProperties": False, "required": ["version"],
                   "properties": {"version": {"type": "integer", "minimum": 1},
                                  **_ROUTE_FIELDS}},
    "Error": {
        "type": "object",
        "required": ["title", "description"],
        "properties": {
            "title": {"type": "string"},
            "description": {"type": "string"},
            "field": {"type": "string", "description": "The input field at fault, if one is."},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "redis"],
        "properties": {"status": {"type": "string", "enum": ["ok", "unavailable"]},
                       "redis": {"type": "boolean"}},
    },
    "Token": {
        "type": "object",
        "required": ["id", "name", "scope", "owner", "version", "created_at", "updated_at"],
        "properties": {
            "id": {"type": "string", "pattern": ID_PATTERN},
            "name": {"type": "string"},
            "scope": {"type": "string", "enum": list(SCOPES)},
            "owner": {"type": "string"},
            "version": {"type": "integer"},
            "created_at": {"type": "number", "description": "Unix time, seconds."},
            "updated_at": {"type": "number", "description": "Unix time, seconds."},
        },
    },
    "TokenCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": NAME_RE.pattern, "minLength": 1,
                     "maxLength": 63},
            "scope": {"type": "string", "enum": list(SCOPES), "default": "user",
                      "description": "Only an admin token may create admin tokens."},
            "owner": {"type": "string", "pattern": NAME_RE.pattern, "minLength": 1,
                      "maxLength": 63,
                      "description": "Default: the caller's owner. Only an admin token may "
                                     "name another owner."},
        },
    },
    "TokenCreated": {
        "type": "object",
        "required": ["token", "secret"],
        "properties": {
            "token": _ref("Token"),
            "secret": {"type": "string", "pattern": "^brt_",
                       "description": "Shown only in this response; only its hash is stored."},
        },
    },
    "TokenList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref("Token")}},
    },
    "Event": {
        "type": "object",
        "required": ["id", "type", "source", "subject", "trace_id", "ts_ms", "data", "stream"],
        "properties": {
            "id": {"type": "string", "pattern": STREAM_ID_PATTERN,
                   "description": "The stream entry id."},
            "type": {"type": "string"},
            "source": {"type": "string"},
            "subject": {"type": "string"},
            "trace_id": {"type": "string"},
            "ts_ms": {"type": "integer"},
            "data": {"type": "object"},
            "stream": {"type": "string", "enum": list(ev.DOMAINS)},
            "dead": {
                "type": "object",
                "description": "Only on the dead stream: where the entry came from and why.",
                "properties": {"stream": {"type": "string"}, "group": {"type": "string"},
                               "id": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
    "EventPage": {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": _ref("Event")},
            "next": {"type": ["string", "null"],
                     "description": "Pass as `before` for older events; null at the end."},
        },
    },
    "Component": {
        "type": "object",
        "required": ["component", "instance", "last_seen_ms", "age_s", "alive"],
        "properties": {
            "component": {"type": "string", "examples": ["web", "worker"]},
            "instance": {"type": "string", "description": "<hostname>:<pid>"},
            "last_seen_ms": {"type": "integer"},
            "age_s": {"type": "number"},
            "alive": {"type": "boolean",
                      "description": "The last heartbeat is younger than "
                                     "BERTH_HEARTBEAT_STALE_S."},
        },
    },
    "ConsumerGroup": {
        "type": "object",
        "required": ["stream", "group", "consumers", "pending", "lag", "lag_seconds"],
        "properties": {
            "stream": {"type": "string"},
            "group": {"type": "string"},
            "consumers": {"type": "integer"},
            "pending": {"type": "integer", "description": "Delivered, not yet acknowledged."},
            "lag": {"type": ["integer", "null"], "description": "Entries not yet delivered."},
            "lag_seconds": {"type": "number",
                            "description": "Age of the oldest entry not yet delivered."},
        },
    },
    "Status": {
        "type": "object",
        "required": ["redis", "components", "streams", "consumer_groups", "queues",
                     "queue_details"],
        "properties": {
            "redis": {"type": "object", "required": ["ok", "latency_ms"],
                      "properties": {"ok": {"type": "boolean"},
                                     "latency_ms": {"type": ["number", "null"]}}},
            "components": {"type": "array", "items": _ref("Component")},
            "streams": {"type": "object", "additionalProperties": {"type": "integer"},
                        "description": "Length of each event stream, by key."},
            "consumer_groups": {"type": "array", "items": _ref("ConsumerGroup")},
            "queues": {"type": "object", "additionalProperties": {"type": "integer"},
                       "description": "Per Dramatiq queue `Q`, and its delay queue `Q.DQ`: "
                                      "messages enqueued and not yet acknowledged."},
            "queue_details": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "ready": {"type": "integer", "description": "Waiting for a worker."},
                        "in_progress": {"type": "integer",
                                        "description": "Fetched by a worker, not acked."},
                        "delayed": {"type": "integer",
                                    "description": "Retries and delayed messages."},
                        "dead": {"type": "integer", "description": "Dead-lettered."},
                    },
                },
            },
        },
    },
    "JobAccepted": {
        "type": "object",
        "required": ["job", "trace_id", "message_id"],
        "properties": {"job": {"type": "string"}, "trace_id": {"type": "string"},
                       "message_id": {"type": "string"}},
    },
    "NoFields": {
        "type": "object",
        "additionalProperties": False,
        "properties": {},
    },
}


def _paths() -> dict:
    return {
        "/healthz": {"get": {
            "operationId": "health",
            "summary": "Liveness and Redis reachability",
            "security": [],
            "responses": {
                "200": {"description": "Up, Redis reachable", "content": _json(_ref("Health"))},
                "503": {"description": "Redis unreachable", "content": _json(_ref("Health"))},
                **_errors("400", "405", "500"),
            },
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1 document",
                                  "content": _json({"type": "object"})},
                          **_errors("400", "405", "500")},
        }},
        "/api/v1/tokens": {
            "get": {
                "operationId": "listTokens",
                "summary": "List tokens (a user token sees those of its owner)",
                "responses": {"200": {"description": "Tokens",
                                      "content": _json(_ref("TokenList"))},
                              **_errors(*_AUTHED)},
            },
            "post": {
                "operationId": "createToken",
                "summary": "Create a token; the secret is in this response only",
                "requestBody": {"required": True, "content": _json(_ref("TokenCreate"))},
                "responses": {"201": {"description": "Created",
                                      "content": _json(_ref("TokenCreated"))},
                              **_errors(*_AUTHED, "403", "409", "413", "415")},
            },
        },
        "/api/v1/tokens/{token_id}": {
            "parameters": [{"name": "token_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": ID_PATTERN}}],
            "delete": {
                "operationId": "revokeToken",
                "summary": "Revoke a token; it stops working at once",
                "responses": {"204": {"description": "Revoked"},
                              **_errors(*_AUTHED, "404", "409")},
            },
        },
        "/api/v1/routes": {
            "get": {
                "operationId": "listRoutes",
                "summary": "List routes (a user token sees those of its owner)",
                "responses": {"200": {"description": "Routes",
                                      "content": _json(_ref("RouteList"))},
                              **_errors(*_AUTHED)},
            },
            "post": {
                "operationId": "createRoute",
                "summary": "Create a route; proxies pick it up within moments",
                "requestBody": {"required": True, "content": _json(_ref("RouteCreate"))},
                "responses": {"201": {"description": "Created", "content": _json(_ref("Route"))},
                              **_errors(*_AUTHED, "409", "413", "415")},
            },
        },
        "/api/v1/routes/{route_id}": {
            "parameters": [{"name": "route_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": ID_PATTERN}}],
            "get": {
                "operationId": "showRoute",
                "summary": "One route",
                "responses": {"200": {"description": "The route",
                                      "content": _json(_ref("Route"))},
                              **_errors(*_AUTHED, "404")},
            },
            "patch": {
                "operationId": "updateRoute",
                "summary": "Change fields of a route; `version` must be the current one",
                "requestBody": {"required": True, "content": _json(_ref("RoutePatch"))},
                "responses": {"200": {"description": "The route",
                                      "content": _json(_ref("Route"))},
                              **_errors(*_AUTHED, "404", "409", "413", "415")},
            },
            "delete": {
                "operationId": "deleteRoute",
                "summary": "Delete a route",
                "parameters": [_query("version", {"type": "integer", "minimum": 1},
                                      "Refuse (409) unless this is the current version.")],
                "responses": {"204": {"description": "Deleted"},
                              **_errors(*_AUTHED, "404", "409")},
            },
        },
        "/api/v1/orchestrator/status": {"get": {
            "operationId": "status",
            "summary": "Redis, component heartbeats, streams, consumer lag, queue depths",
            "description": "Always 200 with `redis.ok` false (and empty sections) when Redis "
                           "is unreachable.",
            "responses": {"200": {"description": "Status", "content": _json(_ref("Status"))},
                          **_errors(*_AUTHED)},
        }},
        "/api/v1/orchestrator/jobs/trim-streams": {"post": {
            "operationId": "trimStreams",
            "summary": "Enqueue the stream retention job now (admin)",
            "description": "The worker publishes `streams_trimmed` on the system stream under "
                           "the returned trace id. The body, if any, must be `{}`.",
            "requestBody": {"required": False, "content": _json(_ref("NoFields"))},
            "responses": {"202": {"description": "Enqueued",
                                  "content": _json(_ref("JobAccepted"))},
                          **_errors(*_AUTHED, "403", "413", "415")},
        }},
        "/api/v1/events": {"get": {
            "operationId": "searchEvents",
            "summary": "Search events, newest first",
            "description": (ev.__doc__ or "").split("\n\n", 1)[1].strip(),
            "parameters": [
                *_FILTER_PARAMS,
                _query("limit", {"type": "integer", "minimum": 1, "maximum": ev.MAX_LIMIT,
                                 "default": ev.DEFAULT_LIMIT}, "Page size."),
                _query("before", {"type": "string", "pattern": STREAM_ID_PATTERN},
                       "Only events older than this id (the previous page's `next`)."),
            ],
            "responses": {"200": {"description": "A page of events",
                                  "content": _json(_ref("EventPage"))},
                          **_errors(*_AUTHED)},
        }},
        "/api/v1/events/stream": {"get": {
            "operationId": "tailEvents",
            "summary": "Follow events live (Server-Sent Events)",
            "description": "Each event is sent as `id: <stream id>`, `event: <type>`, "
                           "`data: <Event JSON>`; `: ping` comments keep an idle connection "
                           "open (every 15 s). A `Last-Event-ID` header resumes after that id "
                           "and wins over `since`. Visibility rules as for /api/v1/events.",
            "parameters": [
                *_FILTER_PARAMS,
                _query("since", {"type": "string",
                                 "pattern": f"^\\$$|{STREAM_ID_PATTERN}", "default": "$"},
                       "Start after this stream id; `$` (default): only new events."),
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "string", "pattern": STREAM_ID_PATTERN}},
            ],
            "responses": {"200": {"description": "An endless text/event-stream",
                                  "content": {"text/event-stream": {
                                      "schema": {"type": "string"}}}},
                          **_errors(*_AUTHED)},
        }},
    }


def build_document() -> dict:
    paths = _paths()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "berth management API",
            "version": VERSION,
            "description": (
                "Every request may carry `traceparent` or `X-Trace-Id`; every response carries "
                "`X-Trace-Id`. Every error body is JSON `{title, description}` (plus `field`). "
                "Input errors are 400 (never 422). Unknown or repeated query parameters are "
                "refused with 400 on every route. Authenticate with `Authorization: Bearer "
                "<token>`; an admin token sees everything, a user token only what its owner "
                "owns (others' records are 404)."),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "A berth API token (brt_...)."}},
            "schemas": _SCHEMAS,
            "responses": {name: {"description": text, "content": _json(_ref("Error"))}
                          for name, text in _ERROR_RESPONSES.values()},
        },
    }


class OpenApiResource:
    auth_required = False

    def __init__(self):
        self.document = build_document()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query(req)
        resp.media = self.document
