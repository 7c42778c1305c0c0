"""Reading untrusted request input: JSON bodies, query parameters, path ids.

Every failure raises ValidationError (400) naming the field, or a falcon 413/415, so the
handlers in app.api.errors render it as JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

import falcon

from app.errors import ValidationError
from app.models import check_hostname, check_int, check_text

MAX_BODY_BYTES = 64 * 1024
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
# Each part of a Redis stream id is below 2**64; 19 digits always are (and real ids have 13
# and a few), so the pattern alone says what the API takes.
STREAM_ID_PATTERN = r"^[0-9]{1,19}(-[0-9]{1,19})?$"
_ID_RE = re.compile(ID_PATTERN)
_STREAM_ID_RE = re.compile(STREAM_ID_PATTERN)


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def json_body(req: falcon.Request, *, required: bool = True) -> Any:
    """The decoded JSON body; None when absent and not `required`."""
    length = req.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise falcon.HTTPContentTooLarge(
            description=f"the body must be at most {MAX_BODY_BYTES} bytes")
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise falcon.HTTPContentTooLarge(
            description=f"the body must be at most {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        if required:
            raise ValidationError("a JSON object body is required")
        return None
    media_type = (req.content_type or "").split(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise falcon.HTTPUnsupportedMediaType(
            description="send the body as JSON with Content-Type: application/json")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise ValidationError("the body is not UTF-8 encoded JSON") from None
    except ValueError as ex:
        raise ValidationError(f"the body is not valid JSON: {ex}") from None
    except RecursionError:
        raise ValidationError("the body is not valid JSON: nested too deeply") from None
    if value is None:  # not the same as no body: every body the API takes is an object
        raise ValidationError("the body must be a JSON object, not null")
    return value


def no_fields(payload: Any) -> None:
    """For actions without parameters: the body may be absent or `{}`, nothing else."""
    if payload is None:
        return
    if not isinstance(payload, dict):
        raise ValidationError("the body must be a JSON object")
    if payload:
        unknown = sorted(payload)
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])


def query(req: falcon.Request, allowed: tuple[str, ...] = ()) -> dict[str, str]:
    """The query parameters, refusing unknown or repeated ones; empty values count as absent."""
    params = req.params
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValidationError(f"unknown query parameter(s): {', '.join(unknown)}",
                              field=unknown[0])
    values = {}
    for name, value in params.items():
        if isinstance(value, list):
            raise ValidationError(f"{name} must be given at most once", field=name)
        if value != "":
            values[name] = value
    return values


def int_param(params: dict[str, str], name: str, low: int, high: int, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    # Up to 20 digits, so a value past the bound (2**53 has 16) gets the range in the message;
    # a zero fraction ("2.0") is still that integer, as JSON Schema's "integer" has it.
    digits = re.fullmatch(r"([0-9]{1,20})(?:\.0*)?", raw)
    if digits is None:
        raise ValidationError(f"{name} must be an integer from {low} to {high}", field=name)
    return check_int(int(digits.group(1)), name, low, high)


def text_param(params: dict[str, str], name: str, max_len: int = 200) -> str | None:
    raw = params.get(name)
    return None if raw is None else check_text(raw, name, max_len)


def host_param(params: dict[str, str], name: str = "host",
               also: tuple[str, ...] = ()) -> str | None:
    """A hostname (or `*.domain`) filter, normalised as routes store it; `also`: other
    accepted values, taken as they are."""
    raw = params.get(name)
    if raw is None or raw in also:
        return raw
    return check_hostname(raw, name, wildcard=True)


def choice_param(params: dict[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw not in allowed:
        raise ValidationError(f"{name} must be one of {', '.join(allowed)}", field=name)
    return raw


def stream_id(raw: str, name: str) -> str:
    """A complete Redis stream id "<ms>-<seq>" ("<ms>" alone means "<ms>-0")."""
    if not _STREAM_ID_RE.fullmatch(raw):
        raise ValidationError(f"{name} must be a stream id such as 1700000000000-0", field=name)
    ms, _, seq = raw.partition("-")
    return f"{int(ms)}-{int(seq or 0)}"


def record_id(raw: str, name: str) -> str:
    """A path id: letters, digits, '_', '.', '-'; anything else is a 400, not a lookup."""
    if not _ID_RE.fullmatch(raw):
        raise ValidationError(f"{name} is not a valid id", field=name)
    return raw
