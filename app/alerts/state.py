"""Alert state in Redis: a per (rule, subject) state machine, incidents, history, acknowledgement.

Evaluators send signals: "on" (the condition holds) or "off" (it does not). A Lua script
applies a signal atomically, so any number of consumers may send the same signal and the
alert still fires once:

    ok      --on-->  firing    alert_fired (a new incident)   when the cooldown since the last
                                                              firing has passed
    ok      --on-->  pending   nothing (quiet)                within the cooldown
    pending --on-->  firing    alert_fired                    once the cooldown has passed
    pending --off->  ok        nothing
    firing  --on-->  firing    nothing (fires once)
    firing  --off->  ok        alert_resolved

The state hash outlives a resolution by the cooldown (then expires), so a restarted consumer
neither re-fires an active alert nor forgets a cooldown. alert_fired / alert_resolved go to
`events:alert:stream` inside the script, in the same transaction as the state change.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

import redis

from app import redis as keys
from app.alerts.rules import Rule
from app.errors import NotFound
from app.events import Event, now_ms

SOURCE = "consumer"
HISTORY_CAP = 1000  # incidents kept in the history index
INCIDENT_TTL_S = 30 * 86400  # a resolved incident's record lives this long
STREAM_MAXLEN = 100_000


@dataclass(frozen=True)
class Signal:
    rule: Rule
    subject: str
    on: bool
    message: str = ""
    details: dict = field(default_factory=dict)  # value, threshold, window...
    trace_id: str = ""
    severity: str = ""  # overrides the rule's


# KEYS: state, open, active, history, stream
# ARGV: op, now_ms, cooldown_ms, new incident id, rule, subject, severity, message,
#       details JSON, trace id, incident key prefix, history cap, incident ttl s, stream maxlen
_SIGNAL = """
local state_key, open_key, active_key, history_key, stream_key = KEYS[1], KEYS[2], KEYS[3],
  KEYS[4], KEYS[5]
local op, now, cooldown = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local prefix, cap, ttl, maxlen = ARGV[11], tonumber(ARGV[12]), tonumber(ARGV[13]), ARGV[14]
local state = redis.call('HGET', state_key, 'state') or 'ok'

local function publish(kind, incident_key)
  local h = redis.call('HGETALL', incident_key)
  local data = {}
  for i = 1, #h, 2 do data[h[i]] = h[i + 1] end
  local details = cjson.decode(data['details'] or '{}')
  data['details'] = nil
  for k, v in pairs(details) do data[k] = v end
  for _, k in ipairs({'fired_at', 'resolved_at'}) do
    if data[k] then data[k] = tonumber(data[k]) end
  end
  redis.call('XADD', stream_key, 'MAXLEN', '~', maxlen, '*', 'type', kind, 'source', 'consumer',
    'subject', data['subject'], 'trace_id', data['trace_id'] or '', 'ts_ms', now,
    'data', cjson.encode(data))
end

if op == 'on' then
  if state == 'firing' then
    redis.call('HSET', state_key, 'last_seen', now)
    return 'firing'
  end
  redis.call('PERSIST', state_key)
  local last = tonumber(redis.call('HGET', state_key, 'last_fired') or '0')
  if last > 0 and now - last < cooldown then
    redis.call('HSET', state_key, 'state', 'pending', 'rule', ARGV[5], 'subject', ARGV[6],
      'severity', ARGV[7], 'message', ARGV[8], 'details', ARGV[9], 'trace_id', ARGV[10],
      'last_seen', now)
    redis.call('ZADD', open_key, now, state_key)
    return 'pending'
  end
  local id = ARGV[4]
  local incident = prefix .. id
  redis.call('HSET', state_key, 'state', 'firing', 'incident', id, 'last_fired', now,
    'last_seen', now, 'rule', ARGV[5], 'subject', ARGV[6])
  redis.call('HDEL', state_key, 'message', 'details', 'trace_id', 'severity')
  redis.call('ZADD', open_key, now, state_key)
  redis.call('HSET', incident, 'id', id, 'rule', ARGV[5], 'subject', ARGV[6],
    'severity', ARGV[7], 'message', ARGV[8], 'details', ARGV[9], 'trace_id', ARGV[10],
    'fired_at', now, 'state', 'firing')
  redis.call('ZADD', active_key, now, id)
  redis.call('ZADD', history_key, now, id)
  redis.call('ZREMRANGEBYRANK', history_key, 0, -cap - 1)
  publish('alert_fired', incident)
  return 'fired'
end

-- off
if state == 'firing' then
  local id = redis.call('HGET', state_key, 'incident')
  local incident = prefix .. id
  redis.call('HSET', state_key, 'state', 'ok')
  redis.call('PEXPIRE', state_key, cooldown + 60000)
  redis.call('ZREM', open_key, state_key)
  redis.call('HSET', incident, 'state', 'resolved', 'resolved_at', now)
  redis.call('EXPIRE', incident, ttl)
  redis.call('ZREM', active_key, id)
  publish('alert_resolved', incident)
  return 'resolved'
elseif state == 'pending' then
  redis.call('HSET', state_key, 'state', 'ok')
  redis.call('HDEL', state_key, 'message', 'details', 'trace_id', 'severity')
  redis.call('PEXPIRE', state_key, cooldown + 60000)
  redis.call('ZREM', open_key, state_key)
  return 'cleared'
end
return 'ok'
"""


def queue_signal(pipe, signal: Signal, now: int) -> None:
    """Queue one signal on a pipeline or the Reader's Effects; `now` in ms."""
    rule = signal.rule
    pipe.eval(_SIGNAL, 5,
              keys.alert_state(rule.id, signal.subject), keys.ALERTS_OPEN, keys.ALERTS_ACTIVE,
              keys.ALERTS_HISTORY, keys.stream("alert"),
              "on" if signal.on else "off", now, rule.cooldown_s * 1000,
              "al_" + secrets.token_hex(6), rule.id, signal.subject,
              signal.severity or rule.severity, signal.message,
              json.dumps(signal.details, separators=(",", ":"), default=str), signal.trace_id,
              keys.alert_incident(""), HISTORY_CAP, INCIDENT_TTL_S, STREAM_MAXLEN)


def apply_signals(client: redis.Redis, signals: list[Signal], now: int) -> list[str]:
    """Apply signals in one transaction; returns each one's outcome (fired, resolved, ...)."""
    if not signals:
        return []
    pipe = client.pipeline(transaction=True)
    for signal in signals:
        queue_signal(pipe, signal, now)
    return pipe.execute()


@dataclass(frozen=True)
class OpenState:
    rule: str
    subject: str
    state: str  # firing or pending
    details: dict
    message: str
    trace_id: str
    severity: str


def open_states(client: redis.Redis) -> list[OpenState]:
    """Every (rule, subject) currently firing or pending."""
    state_keys = client.zrange(keys.ALERTS_OPEN, 0, -1)
    if not state_keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in state_keys:
        pipe.hgetall(key)
    out = []
    for raw in pipe.execute():
        if raw.get("state") not in ("firing", "pending"):
            continue
        out.append(OpenState(rule=raw.get("rule", ""), subject=raw.get("subject", ""),
                             state=raw["state"], details=json.loads(raw.get("details") or "{}"),
                             message=raw.get("message", ""), trace_id=raw.get("trace_id", ""),
                             severity=raw.get("severity", "")))
    return out


def _incident(raw: dict) -> dict:
    details = json.loads(raw.pop("details", None) or "{}")
    out = {"id": raw.get("id"), "rule": raw.get("rule"), "subject": raw.get("subject"),
           "severity": raw.get("severity"), "state": raw.get("state"),
           "message": raw.get("message", ""), "trace_id": raw.get("trace_id", ""),
           "details": details,
           "fired_at": int(raw["fired_at"]) if raw.get("fired_at") else None,
           "resolved_at": int(raw["resolved_at"]) if raw.get("resolved_at") else None,
           "acknowledged_at": int(raw["acked_at"]) if raw.get("acked_at") else None,
           "acknowledged_by": raw.get("acked_by") or None}
    return out


class AlertStore:
    """Reads incidents for the API, and acknowledges them."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def _load(self, ids: list[str]) -> list[dict]:
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for incident_id in ids:
            pipe.hgetall(keys.alert_incident(incident_id))
        return [_incident(raw) for raw in pipe.execute() if raw]

    def active(self) -> list[dict]:
        return self._load(self.client.zrevrange(keys.ALERTS_ACTIVE, 0, -1))

    def history(self, limit: int = 100) -> list[dict]:
        return self._load(self.client.zrevrange(keys.ALERTS_HISTORY, 0, limit - 1))

    def get(self, incident_id: str) -> dict:
        found = self._load([incident_id])
        if not found:
            raise NotFound(f"no alert {incident_id!r}")
        return found[0]

    def acknowledge(self, incident_id: str, by: str, trace_id: str = "") -> dict:
        """Mark an incident acknowledged (it keeps firing until its condition clears) and
        publish alert_acknowledged; acknowledging twice keeps the first."""
        incident = self.get(incident_id)
        if incident["acknowledged_at"] is None:
            at = now_ms()
            event = Event(type="alert_acknowledged", source="api", subject=incident["subject"],
                          data={"id": incident_id, "rule": incident["rule"], "by": by},
                          trace_id=trace_id, ts_ms=at)
            pipe = self.client.pipeline(transaction=True)
            pipe.hsetnx(keys.alert_incident(incident_id), "acked_at", at)
            pipe.hsetnx(keys.alert_incident(incident_id), "acked_by", by)
            pipe.xadd(keys.stream("alert"), event.to_fields(), maxlen=STREAM_MAXLEN,
                      approximate=True)
            pipe.execute()
            incident = self.get(incident_id)
        return incident
