"""What the command line reports as one line, `berth: <title>: <description>`, and exit 1.

    CliError              (a BerthError) a failure the user should read; never a traceback
    ├── UsageError        flags that parse but make no sense together, an unreadable token file
    ├── ApiError          the API answered with an error status; title and description come
    │                     from its JSON error body, `status` and `trace_id` from the response
    ├── ConnectionFailed  no answer: refused, name lookup, TLS, timeout, a stream cut off
    ├── BadResponse       an answer outside the contract: not JSON, a redirect, not SSE
    └── FollowTimeout     follow_events saw no terminal event before its deadline
"""

from __future__ import annotations

from app.cli.output import clean
from app.errors import BerthError


class CliError(BerthError):
    title = "Error"

    def __init__(self, title: str, description: str):
        super().__init__(description)
        self.title = title

    def line(self) -> str:
        """The one line printed on stderr (control characters and newlines flattened)."""
        return clean(f"berth: {self.title}: {self.description}")


class UsageError(CliError):
    pass


class ApiError(CliError):
    def __init__(self, title: str, description: str, *, status: int,
                 field: str | None = None, trace_id: str | None = None):
        super().__init__(title, description)
        self.status = status
        self.field = field
        self.trace_id = trace_id

    def line(self) -> str:
        """Names the field at fault when the API's description does not already."""
        if self.field and self.field not in self.description:
            return clean(f"berth: {self.title}: {self.description} (field {self.field})")
        return super().line()


class ConnectionFailed(CliError):
    pass


class BadResponse(CliError):
    pass


class FollowTimeout(CliError):
    pass
