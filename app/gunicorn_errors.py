"""Answers to request heads gunicorn cannot parse, for every berth process gunicorn serves.

gunicorn 27's `Worker.handle_error` answers a parse error with `util.write_error`: an HTML page
whose reason phrase is "Bad Request" for its 501 (unknown transfer coding) and 500
(configuration problem) too. `ParseErrorAnswers` overrides that worker hook for parse errors
only: the status's own reason phrase and berth's JSON error body (`title`, `description`),
then the connection closes. Everything else (a failing app) stays gunicorn's logged 500.
tests/e2e/test_proxy_limits.py and tests/security/test_api_server_errors.py hold it to that.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from gunicorn import util
from gunicorn.http import errors

# The status for each of gunicorn's parse errors that carries none (`code`) or not the one
# the client should hear; any other parse error is 400.
_STATUS = {
    errors.LimitRequestLine: 414,
    errors.LimitRequestHeaders: 431,
    errors.ExpectationFailed: 417,
    errors.UnsupportedTransferCoding: 501,
    errors.ForbiddenProxyRequest: 403,
    errors.ConfigurationProblem: 500,  # a path outside SCRIPT_NAME
}
# A response header the app produced is the app's fault: gunicorn's own 500.
_APP_FAULTS = (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName)


def closing_answer(status: int, description: str) -> bytes:
    """A whole response that ends its connection, in berth's JSON error shape."""
    phrase = HTTPStatus(status).phrase
    body = json.dumps({"title": phrase, "description": description}).encode()
    return (f"HTTP/1.1 {status} {phrase}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nCache-Control: no-store\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


def _describe(exc: Exception) -> str:
    """One line about the refused head, at most 200 characters of what the client sent."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


class ParseErrorAnswers:
    """Mixed in before a gunicorn worker class."""

    def handle_error(self, req, client, addr, exc):
        if not isinstance(exc, errors.ParseException) or isinstance(exc, _APP_FAULTS):
            return super().handle_error(req, client, addr, exc)
        status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 400)
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        try:
            util.write_nonblock(client, closing_answer(status, _describe(exc)))
        except OSError:
            self.log.debug("Failed to send error message.")
        return None
