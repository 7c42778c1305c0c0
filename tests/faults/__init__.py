"""The fault suite: berth's parts fail while a steady request load runs through the real proxy,
and each test prints its figures and asserts that nothing was lost. Every test is marked
`faults` (run alone: `pytest tests/faults` or `pytest -m faults`); the figures are also
collected in a "fault figures" section at the end of the run.

- test_redis_outage: Redis stopped for 30 s and restarted, under every process (proxy, web,
  worker, scheduler, consumer): no failed request, every event landed or counted as dropped,
  every process reconnects by itself, none exits, no traceback in any log.
- test_redis_misconf: Redis refusing writes for 10 s (a real MISCONF) under the platform run
  as `make run` runs it: no failed request, the API answers 503 with Retry-After and never
  500, `berth status` exits 3, no process exits, every one healthy again by itself, every
  event landed and counted once or counted as dropped.
- test_worker_sigkill_certificates: a worker SIGKILLed mid renew, revoke and delete.
- test_worker_sigkill_services: mid scale, redeploy, start, restart, stop and delete.
- test_worker_sigkill_maintenance: mid trim_streams and mid webhook delivery; and a worker
  stopped by SIGTERM to its process group, the forwarded SIGTERM late, mid delivery: it
  finishes and acknowledges the delivery instead of exiting mid-message.
  Covered elsewhere, not repeated: issue (tests/acme/test_certificates_e2e.py, killed while
  validating) and create (tests/docker/test_services_e2e.py, killed in the health wait).
  Not killed here: convert_certificate_to_production (renew's path to a new certificate),
  reconcile_service(s) (idempotent, re-run on every scheduler tick; test_dockerd_outage sees
  it repair) and webhook_delivery_exhausted (it only records).
- test_consumer_sigkill: the consumer SIGKILLed mid-stream, twice: every request counted once.
- test_supervised_kill: the platform run as `make run` runs it (scripts/run.sh, supervisord),
  each process kind SIGKILLed in turn under load through both proxies: back within 10 s,
  no other process stopped, every request answered (the killed proxy's included: supervisord
  holds its socket) and counted once; the longest wait while a proxy's arbiter restarts, and
  the events a SIGKILLed proxy worker takes with it, printed.
- test_acme_outage: the CA down, then rate-limiting (through a front of pebble): backoff,
  the old certificate served by proxy-tls, alerts raised.
- test_dockerd_outage: the suite's own dockerd stopped and restarted: commands refused with a
  clear 503, containers kept alive (live-restore), reconciliation repairs afterwards.
- test_bad_backends: backends that hang, reset, or answer garbage: prompt 504/502 with a
  trace id, the proxy workers unharmed, other hosts unaffected.

Helpers: load.py (the steady load), acme_front.py (a pebble front that can be down,
rate-limit, or hold a request), relay.py (a Redis relay that holds a command), bad_backends.py,
platform.py (process PIDs, heartbeats, tracebacks), services.py (service commands and the
worker that runs them).
"""
