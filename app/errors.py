"""One exception root for berth; domain errors, never driver errors, cross module boundaries.

    BerthError
    ├── SettingsError        invalid configuration (start-up)
    ├── ValidationError      bad input: a field is missing, malformed or out of range (400/422)
    ├── NotFound             no such resource, or not visible to the caller (404)
    ├── Conflict             already exists, or a stale `version` on update (409)
    ├── Unauthorized         no or unknown credentials (401)
    ├── Forbidden            known caller, not allowed (403)
    ├── Unavailable          a backing service (Redis, Docker, ACME) is unreachable (503)
    └── AcmeError            the ACME CA refused or failed an operation (502)
        ├── RateLimited      the CA's rate limit, or berth's own weekly cap, was hit (429)
        └── ChallengeFailed  the CA could not validate control of a name (HTTP-01) (502)
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


class AcmeError(BerthError):
    """The ACME CA answered, but refused or failed the operation; `code` is the ACME problem
    type without its URN prefix (e.g. "malformed", "unauthorized") when the CA gave one."""

    title = "ACME error"

    def __init__(self, description: str, *, code: str = "", field: str | None = None):
        super().__init__(description, field=field)
        self.code = code


class RateLimited(AcmeError):
    """Too many orders: the CA said rateLimited, or berth's weekly cap per registered domain
    was reached. `retry_after` is when a new attempt may succeed (epoch seconds), if known."""

    title = "Rate limited"

    def __init__(self, description: str, *, retry_after: float | None = None,
                 code: str = "rateLimited", field: str | None = None):
        super().__init__(description, code=code, field=field)
        self.retry_after = retry_after


class ChallengeFailed(AcmeError):
    """The CA could not validate a name: its HTTP-01 request did not get the expected answer."""

    title = "Validation failed"
