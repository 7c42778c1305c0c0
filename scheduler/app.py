"""The scheduler process: APScheduler 3.x triggering time-driven jobs on one leader.

Every replica runs the same APScheduler with the same jobs; a job body runs only on the
leader. Leadership is a fenced lease (app/locks.py FencedLease) with an expiry
(`scheduler_lock_ttl_s`, 3 s) holding a fencing token and the leader's instance id; every
replica tries to take or extend it every quarter of that, so a dead leader is replaced within
1.25 expiries (under 4 s). On becoming leader a replica runs every job at once (the start-up
run), then on each job's interval.

A job runs under the Fence of the term it started in, and checks it in Redis before each
effect (inside the script that writes, where the effect is a Redis write): a leader that was
paused or cut off past its expiry and replaced does nothing when it wakes, whatever it still
believes. Each run has its own trace id, carried by the messages it enqueues and the events
it publishes.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import threading
import time
from collections.abc import Callable

import dramatiq
import redis
from apscheduler.schedulers.background import BackgroundScheduler

from app import redis as keys
from app.background import Backoff
from app.events import Publisher
from app.heartbeat import Heartbeat, instance_name
from app.locks import Fence, FencedLease, LeaseLost
from app.settings import Settings
from app.tracing import trace_context
from scheduler.jobs import SchedulerJobs

log = logging.getLogger(__name__)

class Leadership:
    """The scheduler's lease: `try_lead()` takes or extends it; `fence` is the current term's
    (None while another replica leads)."""

    def __init__(self, client: redis.Redis, ttl_s: float, instance: str | None = None):
        self.instance = instance or f"{instance_name()}:{secrets.token_hex(4)}"
        self.lease = FencedLease(client, keys.scheduler_leader(), keys.scheduler_leader_fence(),
                                 self.instance, ttl_s=ttl_s)
        self.fence: Fence | None = None

    def try_lead(self) -> bool:
        self.fence = self.lease.take()
        return self.fence is not None

    def resign(self) -> None:
        if self.fence is not None:
            self.lease.release(self.fence)
            self.fence = None


class Scheduler:
    """APScheduler plus leadership; `start()` returns at once (a background scheduler)."""

    def __init__(self, settings: Settings, jobs: SchedulerJobs, leadership: Leadership,
                 heartbeat: Heartbeat | None = None):
        self.settings = settings
        self.jobs = jobs
        self.leadership = leadership
        self.heartbeat = heartbeat
        self.is_leader = False
        self.became_leader = threading.Event()
        self.runs: dict[str, int] = {}
        # APScheduler paces the election (every quarter of the lease): this only logs state
        # changes and reports them in the heartbeat.
        self._election = Backoff("scheduler leader election", log)
        self.aps = BackgroundScheduler(timezone=datetime.UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
        self._leader_jobs = {
            "renewal_scan": (jobs.renewal_scan, settings.renewal_scan_s),
            "expiry_warnings": (jobs.expiry_warnings, settings.renewal_scan_s),
            "trim_streams": (jobs.trim_streams, settings.trim_interval_s),
            "reconcile_services": (jobs.reconcile_services, settings.reconcile_interval_s),
        }

    def start(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        for name, (fn, interval_s) in self._leader_jobs.items():
            # Scheduled on every replica; the body only runs on the leader.
            self.aps.add_job(self._as_leader(name, fn), "interval", seconds=interval_s,
                             id=name, name=name)
        self.aps.add_job(self._elect, "interval",
                         seconds=max(0.5, self.settings.scheduler_lock_ttl_s / 4),
                         id="leadership", name="leadership", next_run_time=now)
        if self.heartbeat is not None:
            self.heartbeat.ensure_started()
        self.aps.start()

    def shutdown(self) -> None:
        """Stop triggering, hand leadership over at once, stop the heartbeat (idempotent)."""
        if not self.aps.running:
            return
        self.aps.shutdown(wait=True)
        if self.is_leader:
            try:
                self.leadership.resign()
            except redis.RedisError as ex:
                log.warning("could not resign leadership: %s", ex)
        self.is_leader = False
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def _elect(self) -> None:
        try:
            leading = self.leadership.try_lead()
            self._election.succeeded()
        except redis.RedisError as ex:  # unreachable or refusing: not leading meanwhile
            self._election.failed(ex)
            self.leadership.fence = None
            leading = False
        if leading and not self.is_leader:
            log.info("scheduler %s is the leader; running every job now",
                     self.leadership.instance)
            self.is_leader = True
            now = datetime.datetime.now(datetime.UTC)
            for name in self._leader_jobs:
                self.aps.modify_job(name, next_run_time=now)
            self.became_leader.set()
        elif not leading and self.is_leader:
            log.warning("scheduler %s lost leadership", self.leadership.instance)
            self.is_leader = False
            self.became_leader.clear()

    def _as_leader(self, name: str, fn: Callable[[Fence], object]) -> Callable[[], None]:
        backoff = Backoff(f"scheduler job {name}", log)  # its pace is the job's interval

        def run() -> None:
            fence = self.leadership.fence  # this run's term, checked in Redis by the job
            if fence is None:
                return
            with trace_context(None):
                try:
                    fn(fence)
                except LeaseLost as ex:
                    log.warning("scheduler job %s stopped: no longer the leader (%s)", name, ex)
                    return
                except redis.RedisError as ex:  # the next interval tries again
                    backoff.failed(ex)
                except Exception:
                    log.exception("scheduler job %s failed", name)
                else:
                    backoff.succeeded()
            self.runs[name] = self.runs.get(name, 0) + 1

        return run


def create_scheduler(settings: Settings, client: redis.Redis, broker: dramatiq.Broker,
                     publisher: Publisher, clock: Callable[[], float] = time.time, *,
                     heartbeat: bool = True) -> Scheduler:
    """The scheduler, not started. `broker` only enqueues; `clock` decides what is due."""
    jobs = SchedulerJobs(settings, client, broker, publisher, clock)
    leadership = Leadership(client, settings.scheduler_lock_ttl_s)
    beat = Heartbeat(client, "scheduler") if heartbeat else None
    return Scheduler(settings, jobs, leadership, beat)
