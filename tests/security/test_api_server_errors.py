"""What the real web process answers before the app sees a request (gunicorn's own refusals:
request line too long, headers too large) is the API's JSON error, as documented."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from app.api.openapi import build_document
from tests.support import schema

pytestmark = pytest.mark.e2e
DOC = build_document()


def exchange(url: str, path: str, headers: dict | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("status, path, headers", [
    (414, "/api/v1/events?subject=" + "a" * 5000, None),
    (431, "/healthz", {f"X-H{i}": "v" for i in range(120)}),
])
def test_the_servers_refusals_are_json_errors(web, status, path, headers):
    _proc, url = web
    got, content_type, body = exchange(url, path, headers)
    assert got == status, body[:200]
    assert content_type == "application/json"
    answer = json.loads(body)
    assert not schema.errors(DOC, {"$ref": "#/components/schemas/Error"}, answer)
    assert answer["description"] and "<" not in body.decode()
    documented = DOC["paths"][urlsplit(path).path]["get"]["responses"]
    assert str(status) in documented
