"""The OpenAPI 3.1 document of the management API, served at /openapi.json.

Built from the same constants the code validates with (name pattern, scopes, stream domains,
limits), so the document and the code cannot drift apart silently; tests/test_openapi.py
checks that every route is documented and every documented route exists.
"""

from __future__ import annotations

import falcon

from app.alerts.rules import MAX_WEBHOOKS, RULES, SEVERITIES, field_schemas
from app.api import events as ev
from app.api import services as svc_api
from app.api.dashboard import FILES, OVERVIEW_WINDOWS
from app.api.metrics import ALERT_STATES
from app.api.params import ID_PATTERN, STREAM_ID_PATTERN, query
from app.api.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from app.api.routes import MAX_VERSION
from app.certificates import REVOCATION_REASONS
from app.choices import KEY_TYPES, RESTART_POLICIES, SCOPES
from app.metrics.aggregate import UNMATCHED
from app.metrics.query import QUANTILES, WINDOW_CHOICES
from app.models import (
    BASIC_USER_PATTERN,
    ENV_NAME_RE,
    HEADER_NAME_RE,
    HEADER_VALUE_RE,
    HOST_MAX_LENGTH,
    HOST_PATTERN,
    IMAGE_RE,
    LABEL_KEY_RE,
    NAME_RE,
    ROUTE_MAX_BODY_BYTES,
    TEXT_PATTERN,
    WILDCARD_HOST_PATTERN,
    Certificate,
    Service,
)

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
    "414": ("UriTooLong", "The request line (method, path and query) is longer than the "
                          "server reads (4 KiB)."),
    "415": ("UnsupportedMediaType", "The body is not sent as application/json."),
    "431": ("HeadersTooLarge", "The request's headers are too many or too large."),
    "500": ("InternalError", "An unexpected error; details are in the server log under the "
                             "response's X-Trace-Id."),
    "503": ("Unavailable", "Redis (or another backing service, such as the container engine "
                           "for service commands) is unreachable."),
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _errors(*codes: str) -> dict:
    return {code: {"$ref": f"#/components/responses/{_ERROR_RESPONSES[code][0]}"}
            for code in codes}


# 414 and 431 come from the HTTP server before any route is chosen, so every operation has them.
_COMMON = ("400", "405", "414", "431", "500", "503")
_PUBLIC = ("400", "405", "414", "431", "500")
_AUTHED = ("401", *_COMMON)


def _query(name: str, schema: dict, description: str) -> dict:
    # allowEmptyValue: the API reads `?name=` as if the parameter were absent (params.query).
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "allowEmptyValue": True, "description": description}


# Integers in requests stay within 2**53, the range a JSON number holds exactly.
assert MAX_VERSION <= 2**53 and ROUTE_MAX_BODY_BYTES <= 2**53

_TEXT = {"type": "string", "pattern": TEXT_PATTERN}  # app.models.check_text
_HOST = {"type": "string", "minLength": 1, "maxLength": HOST_MAX_LENGTH, "pattern": HOST_PATTERN,
         "description": "A DNS name (a Unicode name is taken too, and stored IDNA-encoded)."}
_VERSION = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}

_FILTER_PARAMS = [
    _query("stream", {"type": "string", "enum": list(ev.DOMAINS)},
           "Only this domain's stream. Default: every domain except `dead`."),
    _query("type", {**_TEXT, "maxLength": 100}, "Only events of this type."),
    _query("subject", {**_TEXT, "maxLength": 200}, "Only events about this subject."),
    # W3C Trace Context: 32 hex digits, not all zero.
    _query("trace_id", {"type": "string", "pattern": "^(?!0{32}$)[0-9a-fA-F]{32}$"},
           "Only events of this trace."),
]

# A URL's host part as app.models.check_url wants it: present, without credentials.
_AUTHORITY = "[^/?#@:][^/?#@]*([/?#]|$)"

# A path as app.models.check_path_prefix takes it: printable ASCII but for ? # and \, and
# no dot segments.
_PLAIN_PATH = {"type": "string", "maxLength": 1024,
               "pattern": r"^(?!.*/\.\.?(/|$))/[\x21\x22\x24-\x3e\x40-\x5b\x5d-\x7e]*$"}
# Header rules: name -> value to set, or null to remove (app.models.check_headers).
_HEADER_RULES = {"type": "object", "maxProperties": 50,
                 "propertyNames": {"pattern": HEADER_NAME_RE.pattern},
                 "additionalProperties": {"anyOf": [
                     {"type": "string", "pattern": HEADER_VALUE_RE.pattern}, {"type": "null"}]}}

_ROUTE_FIELDS = {
    "host": {**_HOST, "pattern": WILDCARD_HOST_PATTERN,
             "description": "Exact hostname or `*.domain` (IDNA-normalised)."},
    "targets": {"type": "array", "minItems": 1, "maxItems": 32,
                "items": {"type": "string", "format": "uri",
                          "pattern": "^https?://" + _AUTHORITY}},
    "path_prefix": {**_PLAIN_PATH, "default": "/"},
    "strip_prefix": {"type": "boolean"},
    "preserve_host": {"type": "boolean"},
    "request_headers": _HEADER_RULES,
    "response_headers": _HEADER_RULES,
    "https_redirect": {"type": "string", "enum": ["auto", "always", "never"]},
    "hsts": {"type": "boolean"},
    "auth": {"type": "object", "required": ["type"],
             "properties": {"type": {"type": "string", "enum": ["none", "token", "basic"]},
                            "scope": {"type": "string", "enum": list(SCOPES)},
                            "users": {"type": "array", "items": {"type": "string"},
                                      "description": "The user names; hashes are not shown."}}},
    "max_body_bytes": {"type": "integer", "minimum": 0, "maximum": ROUTE_MAX_BODY_BYTES,
                       "description": "0: no limit."},
    "auto_certificate": {"type": "boolean",
                         "description": "Get the host a certificate: one of the owner's that "
                                        "covers it, else a new one (`auto-<host>`) whose "
                                        "issuance is enqueued. Not for wildcard hosts (400)."},
}
_AUTH_INPUT = {"oneOf": [
    {"type": "object", "required": ["type"],
     "properties": {"type": {"const": "none"}}},
    {"type": "object", "required": ["type"],
     "properties": {"type": {"const": "token"},
                    "scope": {"type": "string", "enum": list(SCOPES), "default": "user"}}},
    {"type": "object", "required": ["type", "users"],
     "properties": {"type": {"const": "basic"},
                    "users": {"type": "object", "minProperties": 1, "maxProperties": 100,
                              "propertyNames": {"pattern": BASIC_USER_PATTERN},
                              "additionalProperties": {
                                  "type": "string",
                                  "pattern": r"^\$(2[aby]|argon2(id|i|d))\$"}}}}],
    "description": "Who may pass: anyone (`none`), a berth token of at least `scope` (`token`), "
                   "or `basic` users with bcrypt or argon2 hashes."}
# What a route create or update may say; the same rules as app.models.check_route_auth.
_ROUTE_INPUT = {**_ROUTE_FIELDS, "auth": _AUTH_INPUT}
# auto_certificate true asks for an HTTP-01 certificate, which a wildcard host cannot have.
_NO_WILDCARD_CERTIFICATE = {"not": {"required": ["host", "auto_certificate"],
                                    "properties": {"host": {"pattern": r"^\*\."},
                                                   "auto_certificate": {"const": True}}}}

_TENANCY = ("A hostname belongs to the first owner to route it until its last route goes: "
            "another owner's host, a path under it or a wildcard covering it (or a wildcard "
            "over its hosts) is 409. Names under BASE_DOMAIN are reserved for services: "
            "only the owner of service `x` may route `x.<BASE_DOMAIN>` (403). A user token's "
            "targets must resolve to addresses BERTH_USER_TARGET_NETWORKS allows (403).")
_OVERRIDE = _query("override", {"type": "string", "enum": ["true", "false"]},
                   "Admin tokens only (403 otherwise): route the host whoever holds it and "
                   "whether or not it is reserved under BASE_DOMAIN.")

_SCHEMAS = {
    "Route": {
        "type": "object",
        "required": ["id", "host", "targets", "owner", "version"],
        "properties": {"id": {"type": "string"}, "owner": {"type": "string"},
                       "version": {"type": "integer"}, "service": {"type": "string"},
                       "restricted": {"type": "boolean", "readOnly": True,
                                      "description": "True when a user token wrote the "
                                                     "route last: the proxy checks every "
                                                     "address it connects to against "
                                                     "BERTH_USER_TARGET_NETWORKS."},
                       "created_at": {"type": "number"}, "updated_at": {"type": "number"},
                       **_ROUTE_FIELDS},
    },
    "RouteList": {"type": "object", "required": ["items"],
                  "properties": {"items": {"type": "array", "items": _ref("Route")}}},
    "RouteCreate": {"type": "object", "additionalProperties": False,
                    "required": ["host", "targets"], "properties": _ROUTE_INPUT,
                    **_NO_WILDCARD_CERTIFICATE},
    "RoutePatch": {"type": "object", "additionalProperties": False, "required": ["version"],
                   "minProperties": 2,  # the version and at least one change
                   "properties": {"version": _VERSION, **_ROUTE_INPUT},
                   **_NO_WILDCARD_CERTIFICATE},
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
                      "description": "Default: the caller's owner; for a user token an "
                                     "admin creates, a new owner (`<name>-<hex>`, in the "
                                     "response). Only an admin token may name another "
                                     "owner."},
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
        "required": ["component", "instance", "last_seen_ms", "age_s", "alive", "state",
                     "reason"],
        "description": "One process's heartbeat; removed 10 minutes after its last beat.",
        "properties": {
            "component": {"type": "string", "examples": ["web", "worker"]},
            "instance": {"type": "string", "description": "<hostname>:<pid>"},
            "last_seen_ms": {"type": "integer"},
            "age_s": {"type": "number"},
            "alive": {"type": "boolean",
                      "description": "The last heartbeat is younger than "
                                     "BERTH_HEARTBEAT_STALE_S."},
            "state": {"enum": ["alive", "degraded", "stale"],
                      "description": "degraded: beating, with a loop of the process failing "
                                     "(see reason); stale: not alive."},
            "reason": {"type": "string",
                       "description": "The failing loops and why; empty unless degraded."},
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
            "lag": {"type": ["integer", "null"],
                    "description": "Entries after the group's last-delivered id, counted "
                                   "(not XINFO's entries-read), at most 10000."},
            "lag_capped": {"type": "boolean",
                           "description": "More entries than `lag` are waiting."},
            "lag_seconds": {"type": "number",
                            "description": "Age of the oldest entry not yet delivered."},
        },
    },
    "Status": {
        "type": "object",
        "required": ["redis", "components", "streams", "consumer_groups", "queues",
                     "queue_details"],
        "properties": {
            "redis": {"type": "object", "required": ["ok", "reachable", "latency_ms", "error"],
                      "properties": {
                          "ok": {"type": "boolean",
                                 "description": "Answers and accepts writes."},
                          "reachable": {"type": "boolean",
                                        "description": "Answers, maybe refusing writes "
                                                       "(MISCONF, OOM, READONLY...)."},
                          "latency_ms": {"type": ["number", "null"]},
                          "error": {"type": ["string", "null"]}}},
            "scheduler_leader": {
                "type": ["object", "null"],
                "description": "The scheduler replica holding the leader lease; null when "
                               "none does.",
                "properties": {"instance": {"type": "string"},
                               "term": {"type": ["integer", "null"],
                                        "description": "The lease's fencing token."},
                               "expires_in_ms": {"type": "integer"}}},
            "engine": {"type": "object", "required": ["reachable", "url", "error"],
                       "description": "The container engine, as the web process sees it.",
                       "properties": {"reachable": {"type": "boolean"},
                                      "url": {"type": "string"},
                                      "error": {"type": ["string", "null"]}}},
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
    "Proxies": {
        "type": "object",
        "required": ["tables", "proxies"],
        "properties": {
            "tables": {"type": "object", "required": ["route", "certificate"],
                       "properties": {"route": {"type": "integer"},
                                      "certificate": {"type": "integer"}},
                       "description": "The stored version of each table the proxies hold."},
            "proxies": {"type": "array", "items": {
                "type": "object",
                "required": ["component", "instance", "age_s", "route", "certificate"],
                "properties": {
                    "component": {"type": "string", "enum": ["proxy", "proxy-tls"]},
                    "instance": {"type": "string"},
                    "age_s": {"type": "number", "description": "Since its last heartbeat."},
                    "route": {"type": ["integer", "null"],
                              "description": "Route table version in its memory (null: "
                                             "not reported yet)."},
                    "certificate": {"type": ["integer", "null"],
                                    "description": "Certificate index version in its "
                                                   "memory (null: not reported yet)."},
                }}, "description": "Every live proxy worker (heartbeat not stale)."},
        },
    },
    "Job": {
        "type": "object",
        "required": ["trace_id", "running"],
        "properties": {"trace_id": {"type": "string"},
                       "running": {"type": "boolean",
                                   "description": "A worker runs a message of this trace "
                                                  "now."}},
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
                **_errors(*_PUBLIC),
            },
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1 document",
                                  "content": _json({"type": "object"})},
                          **_errors(*_PUBLIC)},
        }},
        "/api/v1/tokens": {
            "get": {
                "operationId": "listTokens",
                "summary": "List tokens (a user token sees its owner's user tokens)",
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
                "description": "403 for a user token revoking an admin token; 409 for the "
                               "last admin token, which nobody can revoke.",
                "responses": {"204": {"description": "Revoked"},
                              **_errors(*_AUTHED, "403", "404", "409")},
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
                "description": _TENANCY,
                "parameters": [_OVERRIDE],
                "requestBody": {"required": True, "content": _json(_ref("RouteCreate"))},
                "responses": {"201": {"description": "Created", "content": _json(_ref("Route"))},
                              **_errors(*_AUTHED, "403", "409", "413", "415")},
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
                "description": _TENANCY,
                "parameters": [_OVERRIDE],
                "requestBody": {"required": True, "content": _json(_ref("RoutePatch"))},
                "responses": {"200": {"description": "The route",
                                      "content": _json(_ref("Route"))},
                              **_errors(*_AUTHED, "403", "404", "409", "413", "415")},
            },
            "delete": {
                "operationId": "deleteRoute",
                "summary": "Delete a route",
                "parameters": [_query("version", _VERSION,
                                      "Refuse (409) unless this is the current version.")],
                "responses": {"204": {"description": "Deleted"},
                              **_errors(*_AUTHED, "404", "409")},
            },
        },
        "/api/v1/orchestrator/status": {"get": {
            "operationId": "status",
            "summary": "Redis, component heartbeats, streams, consumer lag, queue depths",
            "description": "Always 200: with `redis.ok` false while Redis refuses writes, "
                           "and with empty sections too while it is unreachable.",
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
        "/api/v1/proxies": {"get": {
            "operationId": "proxies",
            "summary": "The table versions each live proxy worker serves",
            "description": "A change is served by every proxy once each listed worker reports "
                           "at least the table version read after the change.",
            "responses": {"200": {"description": "Proxies", "content": _json(_ref("Proxies"))},
                          **_errors(*_AUTHED)},
        }},
        "/api/v1/jobs/{trace_id}": {
            "parameters": [{"name": "trace_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}],
            "get": {
                "operationId": "job",
                "summary": "Whether a worker runs a job of this trace now",
                "description": "`running` false: the job waits in its queue, for a retry, or "
                               "for a stopped worker's messages to be redelivered, or it is "
                               "done.",
                "responses": {"200": {"description": "Job", "content": _json(_ref("Job"))},
                              **_errors(*_AUTHED)},
            },
        },
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


# -- certificates, services and observability --------------------------------------------

def _path_name(what: str) -> list[dict]:
    return [{"name": "name", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": ID_PATTERN},
             "description": f"The {what}'s name."}]


def _accepted(schema: str, what: str) -> dict:
    return {"type": "object", "required": [what, "trace_id"],
            "properties": {what: _ref(schema),
                           "trace_id": {"type": "string",
                                        "description": "Follow the work with "
                                                       "`berth events tail --trace ID`."}}}


_NAME = {"type": "string", "pattern": NAME_RE.pattern, "minLength": 1, "maxLength": 63}
_EPOCH = {"type": "number", "description": "Unix time, seconds."}
_EPOCH_OR_NULL = {"type": ["number", "null"], "description": "Unix time, seconds."}

_CERTIFICATE_FIELDS = {
    "domains": {"type": "array", "minItems": 1, "maxItems": Certificate.MAX_DOMAINS,
                "items": _HOST,
                "description": "Exact hostnames (IDNA-normalised); no wildcards, which "
                               "HTTP-01 cannot validate."},
    "directory": {"anyOf": [{"type": "string", "enum": list(Certificate.DIRECTORIES)},
                            {"type": "string", "format": "uri",
                             "pattern": "^https://" + _AUTHORITY}],
                  "description": "Let's Encrypt's `production` or `staging`, or the https "
                                 "URL of an ACME directory. Default: BERTH_ACME_DIRECTORY."},
    "key_type": {"type": "string", "enum": list(KEY_TYPES),
                 "description": "Default: BERTH_ACME_KEY_TYPE."},
}

_SERVICE_FIELDS = {
    "image": {"type": "string", "maxLength": 255, "pattern": IMAGE_RE.pattern},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535,
             "description": "The port the container listens on."},
    "hostname": {**_HOST, "description": "Default: `<name>.` + BASE_DOMAIN."},
    "command": {"type": "array", "maxItems": 100,
                "items": {"type": "string", "maxLength": 4096, "pattern": "^[^\\x00]*$"}},
    "env": {"type": "object", "maxProperties": 200,
            "propertyNames": {"pattern": ENV_NAME_RE.pattern},
            "additionalProperties": {"type": "string", "maxLength": 32768,
                                     "pattern": "^[^\\x00]*$"}},
    "replicas": {"type": "integer", "minimum": 1, "maximum": Service.MAX_REPLICAS},
    "memory_mb": {"type": "integer", "minimum": 0, "maximum": 1 << 20,
                  "not": {"minimum": 1, "maximum": 5},
                  "description": "0: no limit; else at least 6."},
    "cpus": {"type": "number", "minimum": 0, "maximum": 1024, "description": "0: no limit."},
    "restart": {"type": "string", "enum": list(RESTART_POLICIES)},
    "labels": {"type": "object", "maxProperties": 50,
               "propertyNames": {"pattern": LABEL_KEY_RE.pattern},
               "additionalProperties": {**_TEXT, "maxLength": 1024},
               "description": "The `berth.` prefix is berth's own."},
    "health": {"type": "object", "additionalProperties": False,
               "properties": {"path": {"type": "string", "pattern": "^/", "maxLength": 1024,
                                       "default": "/"},
                              "interval_s": {"type": "integer", "minimum": 1, "maximum": 3600,
                                             "default": 2},
                              "timeout_s": {"type": "integer", "minimum": 1, "maximum": 60,
                                            "default": 2}}},
    "bind": {"anyOf": [{"type": "string", "format": "ipv4"},
                       {"type": "string", "format": "ipv6"}],
             "description": "The host address container ports are published on (an IP "
                            "address).", "default": "127.0.0.1"},
}

_METRIC_SUMMARY = {
    "type": "object",
    "required": ["name", "window", "requests", "errors", "error_rate", "latency_ms"],
    "properties": {
        "name": {"type": "string", "description": "The router (host) or service (upstream)."},
        "window": {"type": "string", "enum": list(WINDOW_CHOICES)},
        "seconds": {"type": ["number", "null"],
                    "description": "How long the window is: its whole minutes and the current "
                                   "minute so far. Null for `total`."},
        "requests": {"type": "integer"},
        "rate": {"type": ["number", "null"], "description": "Requests per second."},
        "errors": {"type": "integer", "description": "5xx answers and failed exchanges."},
        "error_rate": {"type": "number"},
        "status": {"type": "object", "additionalProperties": {"type": "integer"},
                   "description": "Per status class (`2xx`...)."},
        "codes": {"type": "object", "additionalProperties": {"type": "integer"}},
        "methods": {"type": "object", "additionalProperties": {"type": "integer"}},
        "bytes_in": {"type": "integer"},
        "bytes_out": {"type": "integer"},
        "latency_ms": {"type": "object", "properties": {
            "mean": {"type": ["number", "null"]},
            **{f"p{round(q * 100)}": {"type": ["number", "null"]} for q in QUANTILES}}},
    },
}


def _rule_schema(rule_id: str, *, complete: bool) -> dict:
    fields = field_schemas(rule_id)
    return {"type": "object", "additionalProperties": False, "properties": fields,
            **({"required": list(fields)} if complete else {})}


def _rules_layer(*, complete: bool) -> dict:
    """An override layer (any subset), or with `complete` the effective rules (every field)."""
    return {"type": "object", "additionalProperties": False,
            "properties": {
                "rules": {"type": "object", "additionalProperties": False,
                          "properties": {rule_id: _rule_schema(rule_id, complete=complete)
                                         for rule_id in RULES},
                          **({"required": list(RULES)} if complete else {})},
                "webhooks": {"type": "array", "maxItems": MAX_WEBHOOKS,
                             "items": {"type": "string", "format": "uri"}}},
            **({"required": ["rules", "webhooks"]} if complete else {})}


_MORE_SCHEMAS = {
    "Certificate": {
        "type": "object",
        "required": ["id", "domains", "owner", "directory", "key_type", "status",
                     "expires_in_s", "renewal", "backoff"],
        "properties": {
            "id": {"type": "string", "description": "The certificate's name."},
            "owner": {"type": "string"},
            **_CERTIFICATE_FIELDS,
            "status": {"type": "string",
                       "description": "pending, issuing, active, failed or revoked."},
            "not_before": _EPOCH, "not_after": _EPOCH, "renew_after": _EPOCH,
            "issued_at": _EPOCH, "revoked_at": _EPOCH, "backoff_until": _EPOCH,
            "last_error_at": _EPOCH,
            "last_error": {"type": "string"},
            "backoff_reason": {"type": "string",
                               "description": "rate_limited, validation, unavailable or "
                                              "error."},
            "failures": {"type": "integer", "description": "Failed attempts in a row."},
            "order_url": {"type": "string", "description": "The ACME order in progress."},
            "issuer_directory": {"type": "string"},
            "serial": {"type": "string"},
            "renewal_source": {"type": "string", "description": "ari or lifetime."},
            "version": {"type": "integer"},
            "created_at": _EPOCH, "updated_at": _EPOCH,
            "expires_in_s": {"type": ["integer", "null"],
                             "description": "Null until issued."},
            "renewal": {"type": "object",
                        "required": ["renew_after", "source", "in_progress"],
                        "properties": {"renew_after": _EPOCH_OR_NULL,
                                       "source": {"type": ["string", "null"]},
                                       "in_progress": {"type": "boolean"}}},
            "backoff": {"type": ["object", "null"],
                        "description": "While attempts are held back: until when, and why.",
                        "properties": {"until": _EPOCH, "reason": {"type": "string"}}},
        },
    },
    "CertificateList": {"type": "object", "required": ["items"],
                        "properties": {"items": {"type": "array",
                                                 "items": _ref("Certificate")}}},
    "CertificateCreate": {"type": "object", "additionalProperties": False,
                          "required": ["name", "domains"],
                          "properties": {"name": _NAME, **_CERTIFICATE_FIELDS}},
    "CertificateRevoke": {"type": "object", "additionalProperties": False,
                          "properties": {"reason": {"type": "string",
                                                    "enum": list(REVOCATION_REASONS),
                                                    "default": "unspecified"}}},
    "CertificateAccepted": _accepted("Certificate", "certificate"),
    "Service": {
        "type": "object",
        "required": ["id", "image", "port", "owner", "hostname", "replicas", "status",
                     "revision", "version"],
        "properties": {
            "id": {"type": "string", "description": "The service's name."},
            "owner": {"type": "string"},
            **_SERVICE_FIELDS,
            "status": {"type": "string", "description": "pending, deploying, running, "
                                                        "stopped, failed or deleting."},
            "error": {"type": "string", "description": "Why the last command failed."},
            "revision": {"type": "integer", "description": "Bumped by each redeploy."},
            "version": {"type": "integer"},
            "created_at": _EPOCH, "updated_at": _EPOCH,
        },
    },
    "ServiceList": {"type": "object", "required": ["items"],
                    "properties": {"items": {"type": "array", "items": _ref("Service")}}},
    "ServiceCreate": {
        "type": "object", "additionalProperties": False,
        "required": ["name", "image", "port"],
        "properties": {
            "name": {**_NAME, "not": {"enum": sorted(Service.RESERVED_NAMES)},
                     "description": "Not one of the names berth's keys use."},
            **_SERVICE_FIELDS,
            "owner": {**_NAME, "description": "Default: the caller's owner. Only an admin "
                                              "token may name another owner."}},
    },
    "ServiceRedeploy": {
        "type": "object", "additionalProperties": False,
        "description": "The fields to change; a new revision replaces the containers one "
                       "by one.",
        "properties": {name: _SERVICE_FIELDS[name]
                       for name in sorted(Service.REDEPLOY_FIELDS)},
    },
    "ServiceScale": {"type": "object", "additionalProperties": False,
                     "required": ["replicas"],
                     "properties": {"replicas": _SERVICE_FIELDS["replicas"]}},
    "ServiceAccepted": _accepted("Service", "service"),
    "MetricSummary": _METRIC_SUMMARY,
    "Metrics": {
        "type": "object",
        "required": ["window", "seconds", "requests", "errors", "routers", "services"],
        "properties": {
            "window": {"type": "string", "enum": list(WINDOW_CHOICES)},
            "seconds": {"type": ["number", "null"]},
            "requests": {"type": "integer"}, "errors": {"type": "integer"},
            "routers": {"type": "array", "items": _ref("MetricSummary")},
            "services": {"type": "array", "items": _ref("MetricSummary")},
        },
    },
    "MetricsSeries": {
        "type": "object", "required": ["host", "minutes", "points"],
        "properties": {
            "host": {"type": ["string", "null"]},
            "minutes": {"type": "integer"},
            "points": {"type": "array", "items": {
                "type": "object", "required": ["ts", "requests", "errors", "rate"],
                "properties": {
                    "ts": {"type": "integer", "description": "Start of the minute, unix s."},
                    "requests": {"type": "integer"}, "errors": {"type": "integer"},
                    "rate": {"type": "number"},
                    **{f"p{round(q * 100)}_ms": {"type": ["number", "null"]}
                       for q in QUANTILES}}}},
        },
    },
    "Alert": {
        "type": "object",
        "required": ["id", "rule", "subject", "severity", "state"],
        "properties": {
            "id": {"type": "string", "pattern": ID_PATTERN},
            "rule": {"type": "string", "enum": list(RULES)},
            "subject": {"type": "string"},
            "severity": {"type": "string", "enum": list(SEVERITIES)},
            "state": {"type": "string", "description": "firing or resolved."},
            "message": {"type": "string"},
            "trace_id": {"type": "string"},
            "details": {"type": "object"},
            "fired_at": {"type": ["integer", "null"], "description": "Unix time, ms."},
            "resolved_at": {"type": ["integer", "null"], "description": "Unix time, ms."},
            "acknowledged_at": {"type": ["integer", "null"], "description": "Unix time, ms."},
            "acknowledged_by": {"type": ["string", "null"],
                                "description": "The id of the token that acknowledged it."},
        },
    },
    "AlertList": {"type": "object", "required": ["state", "items"],
                  "properties": {"state": {"type": "string", "enum": list(ALERT_STATES)},
                                 "items": {"type": "array", "items": _ref("Alert")}}},
    "AlertRulesLayer": _rules_layer(complete=False),
    "AlertRules": {
        "type": "object", "required": ["effective", "settings", "overrides"],
        "properties": {
            "effective": {**_rules_layer(complete=True),
                          "description": "Defaults, then the settings, then the overrides."},
            "settings": {**_ref("AlertRulesLayer"),
                         "description": "BERTH_ALERT_RULES and BERTH_ALERT_WEBHOOKS."},
            "overrides": {**_ref("AlertRulesLayer"),
                          "description": "What PUT stored."},
        },
    },
    "Overview": {
        "type": "object",
        "required": ["now", "window", "seconds", "totals", "routers", "certificates",
                     "services", "alerts"],
        "properties": {
            "now": _EPOCH,
            "window": {"type": "string", "enum": list(OVERVIEW_WINDOWS)},
            "seconds": {"type": "number"},
            "totals": {"type": "object", "required": ["requests", "errors", "rate"],
                       "properties": {"requests": {"type": "integer"},
                                      "errors": {"type": "integer"},
                                      "rate": {"type": ["number", "null"]}}},
            "routers": {"type": "array", "items": _ref("MetricSummary")},
            "certificates": {"type": "array", "items": {
                "type": "object", "required": ["name", "domains", "status"],
                "properties": {"name": {"type": "string"},
                               "domains": {"type": "array", "items": {"type": "string"}},
                               "status": {"type": "string"},
                               "not_after": _EPOCH_OR_NULL,
                               "days_left": {"type": ["number", "null"]},
                               "renew_after": _EPOCH_OR_NULL,
                               "last_error": {"type": "string"}}}},
            "services": {"type": "array", "items": {
                "type": "object", "required": ["name", "status", "replicas", "healthy"],
                "properties": {"name": {"type": "string"}, "status": {"type": "string"},
                               "hostname": {"type": "string"},
                               "replicas": {"type": "integer"},
                               "healthy": {"type": "integer",
                                           "description": "Containers whose last check "
                                                          "passed."},
                               "containers": {"type": "array", "items": {"type": "object"}}}}},
            "alerts": {"type": ["array", "null"], "items": _ref("Alert"),
                       "description": "Active alerts; null for user tokens."},
        },
    },
}


def _action(operation_id: str, summary: str, accepted: str, body: str | None = None, *,
            required: bool = False, description: str = "") -> dict:
    """A POST command on one named record answering 202 with the record and the trace id."""
    op = {"operationId": operation_id, "summary": summary,
          "requestBody": {"required": required, "content": _json(_ref(body or "NoFields"))},
          "responses": {"202": {"description": "Accepted", "content": _json(_ref(accepted))},
                        **_errors(*_AUTHED, "404", "409", "413", "415")}}
    if description:
        op["description"] = description
    return op


def _certificate_paths() -> dict:
    base = "/api/v1/certificates"
    return {
        base: {
            "get": {"operationId": "listCertificates",
                    "summary": "List certificates (a user token sees its owner's)",
                    "responses": {"200": {"description": "Certificates, without their PEM",
                                          "content": _json(_ref("CertificateList"))},
                                  **_errors(*_AUTHED)}},
            "post": {"operationId": "createCertificate",
                     "summary": "Request a certificate; its issuance is enqueued",
                     "description": "Answers at once; the worker publishes "
                                    "`generation_started`, then `ready` or "
                                    "`generation_failed` under the returned trace id.",
                     "requestBody": {"required": True,
                                     "content": _json(_ref("CertificateCreate"))},
                     "responses": {"202": {"description": "Recorded and enqueued",
                                           "content": _json(_ref("CertificateAccepted"))},
                                   **_errors(*_AUTHED, "403", "409", "413", "415")}},
        },
        f"{base}/{{name}}": {
            "parameters": _path_name("certificate"),
            "get": {"operationId": "showCertificate",
                    "summary": "One certificate with expiry, renewal, last error and chain",
                    "responses": {"200": {"description": "The certificate",
                                          "content": _json(_ref("CertificateDetail"))},
                                  **_errors(*_AUTHED, "404")}},
            "delete": {"operationId": "deleteCertificate",
                       "summary": "Delete a certificate (the worker removes it, then "
                                  "publishes `deleted`)",
                       "responses": {"202": {"description": "Enqueued",
                                             "content": _json(_ref("CertificateAccepted"))},
                                     **_errors(*_AUTHED, "404")}},
        },
        f"{base}/{{name}}/renew": {
            "parameters": _path_name("certificate"),
            "post": _action("renewCertificate", "Renew now (or issue, if never issued)",
                            "CertificateAccepted",
                            description="409 while revoked, or rate-limited by the CA."),
        },
        f"{base}/{{name}}/revoke": {
            "parameters": _path_name("certificate"),
            "post": _action("revokeCertificate", "Revoke the issued certificate at the CA",
                            "CertificateAccepted", "CertificateRevoke",
                            description="409 when nothing has been issued yet."),
        },
        f"{base}/{{name}}/convert-to-production": {
            "parameters": _path_name("certificate"),
            "post": _action("convertCertificateToProduction",
                            "Issue it again from the production directory",
                            "CertificateAccepted"),
        },
    }


def _service_paths() -> dict:
    base = "/api/v1/services"
    paths = {
        base: {
            "get": {"operationId": "listServices",
                    "summary": "List services (a user token sees its owner's)",
                    "parameters": [
                        _query("offset", {"type": "integer", "minimum": 0,
                                          "maximum": 1_000_000, "default": 0}, "Skip this many."),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                         "default": 100}, "Page size.")],
                    "responses": {"200": {"description": "Services",
                                          "content": _json(_ref("ServiceList"))},
                                  **_errors(*_AUTHED)}},
            "post": {"operationId": "createService",
                     "summary": "Create a service; its deployment is enqueued",
                     "description": "Answers at once; `service_created`, then "
                                    "`service_started` or `service_failed` follow under the "
                                    "returned trace id. 503 while the container engine is "
                                    "unreachable (nothing is stored then).",
                     "requestBody": {"required": True,
                                     "content": _json(_ref("ServiceCreate"))},
                     "responses": {"202": {"description": "Recorded and enqueued",
                                           "content": _json(_ref("ServiceAccepted"))},
                                   **_errors(*_AUTHED, "403", "409", "413", "415")}},
        },
        f"{base}/{{name}}": {
            "parameters": _path_name("service"),
            "get": {"operationId": "showService",
                    "summary": "One service with its containers and their health",
                    "responses": {"200": {"description": "The service",
                                          "content": _json(_ref("ServiceDetail"))},
                                  **_errors(*_AUTHED, "404")}},
            "delete": {"operationId": "deleteService",
                       "summary": "Delete a service: its containers, routes and record",
                       "responses": {"202": {"description": "Enqueued",
                                             "content": _json(_ref("ServiceAccepted"))},
                                     **_errors(*_AUTHED, "404")}},
        },
        f"{base}/{{name}}/logs": {
            "parameters": _path_name("service"),
            "get": {"operationId": "serviceLogs",
                    "summary": "Log lines of the current revision's containers",
                    "description": "Plain text, each line prefixed with `<container> | ` "
                                   "when there are several. With `follow`, streamed until "
                                   "the containers stop or the client goes away.",
                    "parameters": [
                        _query("tail", {"anyOf": [
                            {"type": "integer", "minimum": 0, "maximum": svc_api.MAX_TAIL},
                            {"type": "string", "enum": ["all"]}],
                            "default": svc_api.DEFAULT_TAIL}, "Lines from the end, or `all`."),
                        _query("follow", {"type": "string",
                                          "enum": list(svc_api.FOLLOW_CHOICES)},
                               "Keep streaming new lines."),
                        _query("container", {"type": "string", "pattern": ID_PATTERN},
                               "Only this container (a name from the service's detail).")],
                    "responses": {"200": {"description": "Log lines",
                                          "content": {"text/plain": {
                                              "schema": {"type": "string"}}}},
                                  **_errors(*_AUTHED, "404")}},
        },
    }
    for action, summary in (("start", "Start a stopped service"),
                            ("stop", "Stop a service's containers (kept for a start)"),
                            ("restart", "Restart the containers one by one")):
        paths[f"{base}/{{name}}/{action}"] = {
            "parameters": _path_name("service"),
            "post": _action(f"{action}Service", summary, "ServiceAccepted")}
    paths[f"{base}/{{name}}/redeploy"] = {
        "parameters": _path_name("service"),
        "post": _action("redeployService", "Roll out a new revision, optionally changed",
                        "ServiceAccepted", "ServiceRedeploy")}
    paths[f"{base}/{{name}}/scale"] = {
        "parameters": _path_name("service"),
        "post": _action("scaleService", "Change the number of replicas", "ServiceAccepted",
                        "ServiceScale", required=True)}
    return paths


def _get(operation_id: str, summary: str, schema: str, *, admin: bool = False,
         parameters: list | None = None) -> dict:
    op = {"operationId": operation_id, "summary": summary + (" (admin)" if admin else ""),
          "responses": {"200": {"description": summary, "content": _json(_ref(schema))},
                        **_errors(*_AUTHED, *(("403",) if admin else ()))}}
    if parameters:
        op["parameters"] = parameters
    return op


def _observability_paths() -> dict:
    window = _query("window", {"type": "string", "enum": list(WINDOW_CHOICES),
                               "default": "5m"},
                    "Rolling window (its whole minutes before the current one, and the "
                    "current one so far), or `total` since the start.")
    host = _query("host", {"anyOf": [{**_HOST, "pattern": WILDCARD_HOST_PATTERN},
                                     {"type": "string", "enum": [UNMATCHED]}]},
                  f"Only this router: a route's host (or `*.domain`), or `{UNMATCHED}` for "
                  "requests no route matched.")
    base = "/api/v1/orchestrator"
    return {
        f"{base}/metrics": {"get": _get(
            "metrics", "Request metrics per router (host) and per service (upstream)",
            "Metrics", parameters=[window, host])},
        f"{base}/metrics/series": {"get": _get(
            "metricsSeries", "Per-minute requests, errors and latency, for charts",
            "MetricsSeries", parameters=[
                host, _query("minutes", {"type": "integer", "minimum": 1, "maximum": 60,
                                         "default": 30}, "How many minutes, up to now.")])},
        f"{base}/alerts": {"get": _get(
            "listAlerts", "Active alerts, or the history", "AlertList", admin=True,
            parameters=[
                _query("state", {"type": "string", "enum": list(ALERT_STATES),
                                 "default": "active"}, "`all`: the history, newest first."),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                 "default": 100}, "History size.")])},
        f"{base}/alerts/{{alert_id}}/ack": {
            "parameters": [{"name": "alert_id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": ID_PATTERN}}],
            "post": {"operationId": "acknowledgeAlert",
                     "summary": "Acknowledge an alert (admin); it fires until it clears",
                     "requestBody": {"required": False, "content": _json(_ref("NoFields"))},
                     "responses": {"200": {"description": "The alert",
                                           "content": _json(_ref("Alert"))},
                                   **_errors(*_AUTHED, "403", "404", "413", "415")}},
        },
        f"{base}/alert-rules": {
            "get": _get("alertRules", "Effective alert rules and each layer", "AlertRules",
                        admin=True),
            "put": {"operationId": "setAlertRules",
                    "summary": "Replace the API's override layer of the alert rules (admin)",
                    "requestBody": {"required": True,
                                    "content": _json(_ref("AlertRulesLayer"))},
                    "responses": {"200": {"description": "The rules now",
                                          "content": _json(_ref("AlertRules"))},
                                  **_errors(*_AUTHED, "403", "413", "415")}},
        },
        f"{base}/overview": {"get": _get(
            "overview", "Everything the dashboard shows, in one request", "Overview",
            parameters=[_query("window", {"type": "string", "enum": list(OVERVIEW_WINDOWS),
                                          "default": "1m"},
                                  "Rolling window (its whole minutes before the current one, "
                                  "and the current one so far).")])},
        "/metrics": {"get": {
            "operationId": "prometheus",
            "summary": "Prometheus text exposition (format 0.0.4), cluster-wide",
            "description": "Needs an admin token unless BERTH_METRICS_PUBLIC=true, which lets "
                           "a scraper on a trusted network read it without one.",
            "responses": {"200": {"description": "Metric families",
                                  "content": {PROMETHEUS_CONTENT_TYPE: {
                                      "schema": {"type": "string"}}}},
                          **_errors(*_AUTHED, "403")}}},
        "/dashboard": {"get": {
            "operationId": "dashboard",
            "summary": "The web dashboard (asks for a token in the page)",
            "security": [],
            "responses": {"200": {"description": "The page",
                                  "content": {FILES["index.html"]: {
                                      "schema": {"type": "string"}}}},
                          **_errors(*_PUBLIC)}}},
        "/dashboard/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": list(FILES)}}],
            "get": {"operationId": "dashboardFile",
                    "summary": "The dashboard's static files",
                    "security": [],
                    "responses": {"200": {"description": "The file",
                                          "content": {media: {"schema": {"type": "string"}}
                                                      for media in dict.fromkeys(
                                                          FILES.values())}},
                                  **_errors(*_PUBLIC, "404")}}},
    }


def _extended(base: str, required: list[str], properties: dict) -> dict:
    """`base`'s schema with more properties (the detail view of a listed record)."""
    schema = _MORE_SCHEMAS[base]
    return {**schema, "required": [*schema["required"], *required],
            "properties": {**schema["properties"], **properties}}


_MORE_SCHEMAS["CertificateDetail"] = _extended("Certificate", ["cert_pem"], {
    "cert_pem": {"type": "string", "description": "The chain, leaf first (empty until "
                                                  "issued). Never the private key."}})
_MORE_SCHEMAS["ServiceDetail"] = _extended("Service", ["containers", "url"], {
    "url": {"type": "string"},
    "containers": {
        "type": ["array", "null"],
        "description": "Null while the container engine is unreachable.",
        "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "image": {"type": "string"}, "state": {"type": "string"},
            "exit_code": {"type": "integer"}, "oom_killed": {"type": "boolean"},
            "started_at": {"type": "string"}, "finished_at": {"type": "string"},
            "revision": {"type": "integer"}, "replica": {"type": "integer"},
            "port": {"type": "integer", "description": "The host port."},
            "current": {"type": "boolean", "description": "Of the service's current revision."},
            "health": {"type": ["object", "null"]}}}},
    "engine_error": {"type": "string", "description": "Only while the engine is unreachable."},
})


def build_document() -> dict:
    paths = {**_paths(), **_certificate_paths(), **_service_paths(),
             **_observability_paths()}
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
            "schemas": {**_SCHEMAS, **_MORE_SCHEMAS},
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
