"""The Redis client factory and every key name berth uses, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

PREFIX = "berth"

# Event streams, one per domain (the architecture's names, so operators can XLEN them).
STREAM_DOMAINS = ("request", "route", "service", "certificate", "alert", "system")


def stream(domain: str) -> str:
    return f"events:{domain}:stream"


DEAD_LETTER_STREAM = "events:dead:stream"
ALL_STREAMS = tuple(stream(d) for d in STREAM_DOMAINS) + (DEAD_LETTER_STREAM,)

# Publisher drop counter, summed over every process.
EVENTS_DROPPED = f"{PREFIX}:events:dropped"

# Component heartbeats: hash of "component/instance" -> last beat (ms since epoch).
HEARTBEATS = f"{PREFIX}:heartbeats"
# Hash of the same members -> why that process is degraded (absent while it is healthy).
HEARTBEAT_STATES = f"{PREFIX}:heartbeats:degraded"

# What each proxy worker serves: hash of "component/instance" (its heartbeat's member) ->
# JSON {"route": n, "certificate": n} table versions in its memory (app/served.py).
PROXY_SERVED = f"{PREFIX}:proxy:served"


def job_held(trace_id: str) -> str:
    """Set, with a short expiry a running job keeps renewing, while a worker runs a message
    of this trace (workers/broker.py HeldMiddleware); absent while the message waits."""
    return f"{PREFIX}:job:held:{trace_id}"


def record(noun: str, record_id: str) -> str:
    """The JSON document of one stored resource."""
    return f"{PREFIX}:{noun}:{record_id}"


def index(noun: str) -> str:
    """Sorted set of every id of a noun, scored by creation time (listing without KEYS)."""
    return f"{PREFIX}:{noun}:index"


def owner_index(noun: str, owner: str) -> str:
    """Sorted set of the ids of a noun that one owner holds."""
    return f"{PREFIX}:{noun}:owner:{owner}"


def unique_index(noun: str, name: str) -> str:
    """Hash of a unique attribute value -> id (e.g. route host+path, token hash)."""
    return f"{PREFIX}:{noun}:unique:{name}"


def table_version(noun: str) -> str:
    """Counter bumped on every change of a noun; caches compare it to refresh."""
    return f"{PREFIX}:{noun}:version"


def changes_channel(noun: str) -> str:
    """Pub/sub channel announcing a change of a noun (payload: the new table version)."""
    return f"{PREFIX}:{noun}:changed"


# -- tenancy: who holds a hostname, and the admin tokens (kept by app/stores) ---------------

# Hash of hostname (exact, or `*.parent` for a wildcard) -> the owner holding it.
HOST_OWNERS = f"{PREFIX}:hosts:owner"
# Set once the claims of routes stored before claims were kept have been built (an upgrade).
HOST_CLAIMS_BUILT = f"{PREFIX}:hosts:claims-built"


def host_routes(host: str) -> str:
    """Hash of owner -> how many of its routes use `host` (the holder, and owners an admin
    routed there with override); the claim goes when the holder's count does."""
    return f"{PREFIX}:hosts:routes:{host}"


def hosts_under(parent: str) -> str:
    """Hash of owner -> how many exact hosts one label below `parent` it holds, so adding
    `*.parent` reads one small hash to learn whether it would cover another owner's host."""
    return f"{PREFIX}:hosts:under:{parent}"


# Set of the ids of every admin token, so revoking the last one can be refused atomically.
ADMIN_TOKENS = f"{PREFIX}:token:scope:admin"


def ports_allocated() -> str:
    """Hash of allocated host port -> owning service."""
    return f"{PREFIX}:ports:allocated"


def lock(name: str) -> str:
    return f"{PREFIX}:lock:{name}"


def create_client(url: str, **options) -> redis.Redis:
    """A client with bounded timeouts, so a Redis outage is an error, not a hang."""
    options.setdefault("socket_connect_timeout", 2.0)
    options.setdefault("socket_timeout", 5.0)
    options.setdefault("health_check_interval", 15)
    options.setdefault("decode_responses", True)
    # Imported here, not above: the gunicorn configs read the settings (and so the key
    # names) in the arbiter, before the gevent worker monkey-patches; the redis package
    # imports ssl names directly, so importing it there drew gevent's MonkeyPatchWarning
    # at every start of the web and proxy processes.
    import redis

    return redis.Redis.from_url(url, **options)


def acme_challenge(token: str) -> str:
    """HTTP-01 key authorization for `token` (string with a TTL), answered by the proxy."""
    return f"{PREFIX}:acme:challenge:{token}"


def acme_account(account_id: str) -> str:
    """JSON of one ACME account (key sealed at rest, account URL); the id is a digest of
    (directory URL, contact e-mail), so each pair has exactly one account."""
    return f"{PREFIX}:acme:account:{account_id}"


def acme_orders(registered_domain: str) -> str:
    """Sorted set of new orders placed for a registered domain (member: order, score: epoch
    seconds), for the weekly cap."""
    return f"{PREFIX}:acme:orders:{registered_domain}"


def certificate_lock(certificate_id: str) -> str:
    """Held by the worker running an operation (issue, renew, revoke...) on one certificate."""
    return lock(f"certificate:{certificate_id}")


def certificate_job_guard(certificate_id: str) -> str:
    """Set (with an expiry) while a scheduler-enqueued renewal of a certificate is queued,
    so repeated scans do not pile up messages; the actor clears it when done."""
    return f"{PREFIX}:acme:queued:{certificate_id}"


def expiry_warnings(certificate_id: str) -> str:
    """Hash of expiry-warning threshold (days) -> serial it was sent for: once per threshold
    per certificate, starting over when a renewal brings a new serial."""
    return f"{PREFIX}:acme:warned:{certificate_id}"


def scheduler_leader() -> str:
    """The scheduler leader lease (value: "<fencing token>:<leader's instance id>", with an
    expiry; app/locks.py FencedLease)."""
    return lock("scheduler-leader")


def scheduler_leader_fence() -> str:
    """Counter of scheduler leadership terms: INCR gives each new leader its fencing token."""
    return lock("scheduler-leader:fence")


# -- metrics (the consumer writes them, the API and /metrics read them) -------------------------
# Per dimension ("router": a host, "service": an upstream) and name: a hash of counters and a
# string of latency buckets, for the totals (never expire) and for each minute (ts_ms // 60000;
# they expire after the longest window).


def metrics_total(dimension: str, name: str) -> str:
    return f"{PREFIX}:metrics:{dimension}:{name}:total"


def metrics_minute(dimension: str, name: str, minute: int) -> str:
    return f"{PREFIX}:metrics:{dimension}:{name}:m:{minute}"


def metrics_latency_total(dimension: str, name: str) -> str:
    """String of big-endian i64 counters, one per fine latency bucket (BITFIELD INCRBY)."""
    return f"{PREFIX}:metrics:{dimension}:{name}:latency:total"


def metrics_latency_minute(dimension: str, name: str, minute: int) -> str:
    return f"{PREFIX}:metrics:{dimension}:{name}:latency:m:{minute}"


def metrics_index(dimension: str) -> str:
    """Sorted set of the names of a dimension, scored by the last event seen (ms)."""
    return f"{PREFIX}:metrics:index:{dimension}"


# Hash "<domain>:<event type>" -> events applied by the consumer, for every stream it reads.
METRICS_EVENTS = f"{PREFIX}:metrics:events"

# -- alerts ---------------------------------------------------------------------------------------

ALERT_RULES = f"{PREFIX}:alerts:rules"  # JSON overrides of the rule settings, set through the API
ALERTS_OPEN = f"{PREFIX}:alerts:open"  # zset of state keys that are firing or pending
ALERTS_ACTIVE = f"{PREFIX}:alerts:active"  # zset of firing incident ids, scored by fired_at ms
ALERTS_HISTORY = f"{PREFIX}:alerts:history"  # zset of incident ids, scored by fired_at ms (capped)
ALERTS_DROPPED_SEEN = f"{PREFIX}:alerts:dropped-seen"  # EVENTS_DROPPED at the last evaluation
WEBHOOK_FAILURES = f"{PREFIX}:alerts:webhook-failures"  # failed webhook attempts, ever
WEBHOOKS_ABANDONED = f"{PREFIX}:alerts:webhooks-abandoned"  # deliveries that ran out of retries


def alert_state(rule: str, subject: str) -> str:
    """Hash: the state machine of one rule for one subject (host, certificate, service...)."""
    return f"{PREFIX}:alert:state:{rule}:{subject}"


def alert_incident(incident_id: str) -> str:
    """Hash: one firing of an alert, from alert_fired to alert_resolved."""
    return f"{PREFIX}:alert:incident:{incident_id}"


# -- Dramatiq's own keys (its Redis broker's layout, namespace "dramatiq"), read for /metrics ----

DRAMATIQ_NAMESPACE = "dramatiq"


def dramatiq_queue(queue: str) -> str:
    """List of message ids ready to run (`<queue>.DQ`: the delayed ones, e.g. retries)."""
    return f"{DRAMATIQ_NAMESPACE}:{queue}"


def dramatiq_messages(queue: str) -> str:
    """Hash of message id -> message for every message of `queue` not yet acknowledged
    (waiting in `dramatiq_queue(queue)` or fetched by a worker)."""
    return f"{DRAMATIQ_NAMESPACE}:{queue}.msgs"


def dramatiq_dead(queue: str) -> str:
    """Sorted set of the message ids that exhausted their retries."""
    return f"{DRAMATIQ_NAMESPACE}:{queue}.XQ"


def dramatiq_wake(queue: str) -> str:
    """berth's own: a list holding at most one token, pushed after each message sent to
    `queue`; idle consumers block on it instead of sleeping (workers/broker.py)."""
    return f"{PREFIX}:dramatiq-wake:{queue}"


# -- services ---------------------------------------------------------------------------------


def service_lock(name: str) -> str:
    """Held (with an expiry, renewed) by the worker running a command on one service."""
    return lock(f"service:{name}")


def service_health(name: str) -> str:
    """Hash of container name -> JSON of its last health check (healthy, error, checked_at),
    written by the workers, read by the API."""
    return f"{PREFIX}:service-health:{name}"


def engine_watcher_lease() -> str:
    """Held by the one worker process that follows the container engine's event stream."""
    return lock("engine-watcher")


# This installation's id (set once): containers carry it, so two berth installations sharing
# one container engine never take each other's containers for orphans.
INSTANCE_ID = f"{PREFIX}:instance-id"
