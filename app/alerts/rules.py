"""Alert rules: the defaults, their overrides, and validation.

The effective configuration is three layers, each overriding the one before, field by field:
the defaults below, then BERTH_ALERT_RULES / BERTH_ALERT_WEBHOOKS (settings), then the document
stored in Redis through the API (PUT /api/v1/orchestrator/alert-rules). Both override layers
have one shape:

    {"rules": {"error_rate": {"threshold": 0.1, "cooldown_s": 60}, ...},
     "webhooks": ["https://hooks.example.com/berth"]}

`webhooks`, when present in a layer, replaces the list of the layer below.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app import redis as keys
from app.errors import ValidationError
from app.models import check_bool, check_choice, check_int, check_url

if TYPE_CHECKING:  # not at run time: app.settings imports this module (see app/redis.py)
    import redis

SEVERITIES = ("info", "warning", "critical")
WINDOW_CHOICES = ("1m", "5m", "1h")
MAX_WEBHOOKS = 10


# Each field check carries the JSON Schema of what it accepts (`json_schema`), from which the
# API's OpenAPI document describes the rules (field_schemas).
def _described(check: Callable[[Any, str], Any], schema: dict) -> Callable[[Any, str], Any]:
    check.json_schema = schema  # type: ignore[attr-defined]
    return check


def _number(low: float, high: float) -> Callable[[Any, str], float]:
    def check(value: Any, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                low <= value <= high):
            raise ValidationError(f"{name} must be a number from {low} to {high}", field=name)
        return value
    return _described(check, {"type": "number", "minimum": low, "maximum": high})


def _integer(low: int, high: int) -> Callable[[Any, str], int]:
    return _described(lambda value, name: check_int(value, name, low, high),
                      {"type": "integer", "minimum": low, "maximum": high})


def _choice(allowed: tuple[str, ...]) -> Callable[[Any, str], str]:
    return _described(lambda value, name: check_choice(value, name, allowed),
                      {"type": "string", "enum": list(allowed)})


_COMMON: dict[str, Callable[[Any, str], Any]] = {
    "enabled": _described(lambda value, name: check_bool(value, name), {"type": "boolean"}),
    "severity": _choice(SEVERITIES),
    "cooldown_s": _integer(0, 30 * 86400),
}
_WINDOW = {"window": _choice(WINDOW_CHOICES)}

# rule id -> (defaults, rule-specific fields and their checks)
RULES: dict[str, tuple[dict, dict]] = {
    # 5xx answers and failed exchanges over all requests of a host, over a window.
    "error_rate": (
        {"enabled": True, "severity": "critical", "cooldown_s": 600, "window": "5m",
         "threshold": 0.05, "min_requests": 20},
        {**_WINDOW, "threshold": _number(0.0, 1.0), "min_requests": _integer(1, 10**9)}),
    # p99 request duration of a host over a window.
    "latency_p99": (
        {"enabled": True, "severity": "warning", "cooldown_s": 600, "window": "5m",
         "threshold_ms": 1000, "min_requests": 20},
        {**_WINDOW, "threshold_ms": _number(0.001, 3_600_000), "min_requests": _integer(1, 10**9)}),
    # expiring_soon events (one alert per threshold crossed); critical at or below critical_days.
    "certificate_expiring": (
        {"enabled": True, "severity": "warning", "cooldown_s": 3600, "critical_days": 3},
        {"critical_days": _integer(0, 365)}),
    # renewal_failed, generation_failed or rate_limited, until the certificate is issued,
    # revoked or deleted.
    "certificate_renewal_failed": (
        {"enabled": True, "severity": "critical", "cooldown_s": 3600}, {}),
    # service_failed or service_unhealthy, until it starts again, is stopped or deleted.
    "service_failed": (
        {"enabled": True, "severity": "critical", "cooldown_s": 300}, {}),
    # A consumer group whose oldest undelivered entry is older than threshold_s.
    "consumer_lag": (
        {"enabled": True, "severity": "warning", "cooldown_s": 300, "threshold_s": 30},
        {"threshold_s": _number(0.001, 86_400)}),
    # Publishers dropped events (buffer full while Redis was unreachable); resolves after a
    # window without new drops.
    "events_dropped": (
        {"enabled": True, "severity": "warning", "cooldown_s": 600, "window": "5m"},
        dict(_WINDOW)),
}


@dataclass(frozen=True)
class Rule:
    id: str
    enabled: bool
    severity: str
    cooldown_s: int
    params: dict

    def __getitem__(self, name: str):
        return self.params[name]

    def public(self) -> dict:
        return {"enabled": self.enabled, "severity": self.severity,
                "cooldown_s": self.cooldown_s, **self.params}


@dataclass(frozen=True)
class RuleSet:
    rules: dict[str, Rule]
    webhooks: tuple[str, ...]

    def enabled(self, rule_id: str) -> Rule | None:
        rule = self.rules[rule_id]
        return rule if rule.enabled else None

    def public(self) -> dict:
        return {"rules": {k: r.public() for k, r in self.rules.items()},
                "webhooks": list(self.webhooks)}


def clean_overrides(payload: Any, where: str = "alert rules") -> dict:
    """A validated override document (see the module docstring); raises ValidationError."""
    if not isinstance(payload, dict):
        raise ValidationError(f"{where} must be a JSON object")
    unknown = sorted(set(payload) - {"rules", "webhooks"})
    if unknown:
        raise ValidationError(f"{where}: unknown field(s): {', '.join(unknown)}",
                              field=unknown[0])
    out: dict = {}
    rules = payload.get("rules", {})
    if not isinstance(rules, dict):
        raise ValidationError("rules must be an object of rule id -> settings", field="rules")
    out_rules = {}
    for rule_id, fields in rules.items():
        if rule_id not in RULES:
            raise ValidationError(f"unknown rule {rule_id!r}; rules: {', '.join(RULES)}",
                                  field=f"rules.{rule_id}")
        if not isinstance(fields, dict):
            raise ValidationError(f"rules.{rule_id} must be an object", field=f"rules.{rule_id}")
        checks = {**_COMMON, **RULES[rule_id][1]}
        clean = {}
        for name, value in fields.items():
            if name not in checks:
                raise ValidationError(
                    f"rules.{rule_id}: unknown field {name!r}; fields: {', '.join(checks)}",
                    field=f"rules.{rule_id}.{name}")
            clean[name] = checks[name](value, f"rules.{rule_id}.{name}")
        out_rules[rule_id] = clean
    if out_rules:
        out["rules"] = out_rules
    if "webhooks" in payload:
        out["webhooks"] = clean_webhooks(payload["webhooks"])
    return out


def field_schemas(rule_id: str) -> dict[str, dict]:
    """The JSON Schema of each field an override of the rule may set."""
    return {name: check.json_schema for name, check in {**_COMMON, **RULES[rule_id][1]}.items()}


def clean_webhooks(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_WEBHOOKS:
        raise ValidationError(f"webhooks must be a list of at most {MAX_WEBHOOKS} URLs",
                              field="webhooks")
    return [check_url(url, "webhooks") for url in value]


def parse_rules_setting(raw: str) -> str:
    """For Settings: BERTH_ALERT_RULES must be an override document (JSON); kept as text."""
    if not raw.strip():
        return ""
    try:
        clean_overrides(json.loads(raw), "BERTH_ALERT_RULES")
    except json.JSONDecodeError as ex:
        raise ValueError(f"expected a JSON object: {ex}") from None
    except ValidationError as ex:
        raise ValueError(ex.description) from None
    return raw.strip()


def parse_webhooks_setting(raw: str) -> tuple[str, ...]:
    """For Settings: BERTH_ALERT_WEBHOOKS, comma-separated http(s) URLs."""
    urls = [part.strip() for part in raw.split(",") if part.strip()]
    try:
        return tuple(clean_webhooks(urls))
    except ValidationError as ex:
        raise ValueError(ex.description) from None


def merge(*layers: dict) -> RuleSet:
    """Defaults overridden by each (already validated) layer in turn."""
    values = {rule_id: dict(defaults) for rule_id, (defaults, _checks) in RULES.items()}
    webhooks: list[str] = []
    for layer in layers:
        for rule_id, fields in layer.get("rules", {}).items():
            values[rule_id].update(fields)
        if "webhooks" in layer:
            webhooks = list(layer["webhooks"])
    rules = {}
    for rule_id, fields in values.items():
        fields = dict(fields)
        rules[rule_id] = Rule(id=rule_id, enabled=fields.pop("enabled"),
                              severity=fields.pop("severity"),
                              cooldown_s=fields.pop("cooldown_s"), params=fields)
    return RuleSet(rules=rules, webhooks=tuple(webhooks))


def settings_layer(settings) -> dict:
    layer = json.loads(settings.alert_rules) if settings.alert_rules else {}
    if settings.alert_webhooks:
        layer["webhooks"] = list(settings.alert_webhooks)
    return layer


class RuleStore:
    """The API's override layer in Redis, and the effective rules of all three layers."""

    def __init__(self, client: redis.Redis, settings):
        self.client = client
        self.base = settings_layer(settings)

    def stored(self) -> dict:
        raw = self.client.get(keys.ALERT_RULES)
        if not raw:
            return {}
        try:
            return clean_overrides(json.loads(raw))
        except (ValueError, ValidationError):
            return {}  # written by another version: fall back to the settings

    def save(self, payload: Any) -> dict:
        """Validate and store `payload` as the whole API layer; returns it cleaned."""
        clean = clean_overrides(payload)
        self.client.set(keys.ALERT_RULES, json.dumps(clean, separators=(",", ":")))
        return clean

    def effective(self) -> RuleSet:
        return merge(self.base, self.stored())
