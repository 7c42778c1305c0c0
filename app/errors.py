"""One exception root for berth; domain errors, never driver errors, cross module boundaries.

    BerthError
    ├── SettingsError        invalid configuration (start-up)
    ├── ValidationError      bad input: a field is missing, malformed or out of range (400/422)
    ├── NotFound             no such resource, or not visible to the caller (404)
    ├── Conflict             already exists, or a stale `version` on update (409)
    ├── Unauthorized         no or unknown credentials (401)
    ├── Forbidden            known caller, not allowed (403)
    └── Unavailable          a backing service (Redis, Docker, ACME) is unreachable (503)
"""

from __future__ import annotations


class BerthError(Exception):
    """Root of every error berth raises on purpose."""

    title = "Error"

    def __init__(self, description: str, *, field: str | None = None):
        super().__init__(description)
        self.description = description
        self.field = field


class SettingsError(BerthError):
    title = "Invalid setting"


class ValidationError(BerthError):
    title = "Invalid input"


class NotFound(BerthError):
    title = "Not found"


class Conflict(BerthError):
    title = "Conflict"


class Unauthorized(BerthError):
    title = "Unauthorized"


class Forbidden(BerthError):
    title = "Forbidden"


class Unavailable(BerthError):
    title = "Service unavailable"
