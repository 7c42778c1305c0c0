"""Schemathesis over the management API's own /openapi.json: the app from `create_api` (as
the web process builds it, over the test Redis) answers every generated request, valid or
not, with no 5xx, and every response matches the document (status, content type, headers,
body schema). Requests carry an admin token, so the handlers behind authentication are
reached; a fresh Redis per operation keeps the runs independent, and a real Docker engine
answers the service commands (none of their jobs runs: no worker consumes them).

Left out: /api/v1/events/stream, a Server-Sent Events stream that ends only when the client
goes away, which an in-process WSGI call never does (tests/test_api_events.py covers it).
Not checked: that every request valid by the document is accepted. The document gives types
and shapes but cannot state every rule the API enforces (host names, URLs, hashes), so such a
request may get a 400, which the document lists; every other schemathesis check runs.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from app.api.openapi import build_document
from tests.docker.conftest import docker_daemon  # noqa: F401 - a fixture
from tests.support.api import Api
from workers.containers import Engine

STREAMING = "/api/v1/events/stream"
# Bounded so the whole run stays near a minute on two cores.
EXAMPLES = 25
# The suite replays one fixed sequence of examples, so a run fails for a change, not for a
# draw; BERTH_FUZZ_FRESH=1 draws new ones (how new disagreements are found: fresh draws on a
# clean clone found an IDN query host the document's ASCII pattern calls invalid, still open).
FRESH = os.environ.get("BERTH_FUZZ_FRESH") == "1"


class _CurrentApp:
    """The WSGI app schemathesis calls: the schema is loaded once, at import, while each test
    builds its own app (and admin token) over a freshly emptied Redis and puts them here."""

    app = None
    admin = ""

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


current = _CurrentApp()
# The document the app serves at /openapi.json (tests/test_openapi.py checks they are equal).
schema = schemathesis.openapi.from_dict(build_document(), config=schemathesis.Config.from_dict({
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ["2XX", 401, 403, 404, 409]},
        # A refused request may also be too large (413), besides the usual statuses.
        "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 409, 413,
                                                          415, 422]},
    }}))
schema.app = current


@schema.auth(refresh_interval=None)
class _AdminToken:
    """Authenticates the requests schemathesis means to authenticate (its negative cases may
    leave the token out on purpose)."""

    def get(self, case, context):
        return current.admin

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def engine(docker_daemon):  # noqa: F811 - the fixture imported above
    """A real container engine, so service commands are answered rather than refused (503)."""
    engine = Engine(docker_daemon.url, pull="never")
    yield engine
    engine.close()


@pytest.fixture
def api_harness(settings, redis_client, engine):
    harness = Api(settings, redis_client, engine=engine)
    current.app, current.admin = harness.app, harness.admin
    yield harness
    current.app, current.admin = None, ""
    harness.close()


@schema.exclude(path=STREAMING).parametrize()
@hypothesis_settings(max_examples=EXAMPLES, deadline=None, derandomize=not FRESH,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                            HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_document(case, api_harness):
    case.call_and_validate()
