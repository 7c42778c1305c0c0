"""Names of the background jobs the API and scheduler enqueue, and the one way to enqueue them.

The API and scheduler only need an actor's name and queue to send it a message, so they never
import the workers package; `workers/` registers actors under these same names.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq

from app.tracing import get_trace_id


@dataclass(frozen=True)
class Job:
    actor_name: str
    queue_name: str


TRIM_STREAMS = Job("trim_streams", "maintenance")


def enqueue(broker: dramatiq.Broker, job: Job, **kwargs) -> dramatiq.Message:
    """Send `job` with keyword arguments, carrying the current trace id."""
    message = dramatiq.Message(queue_name=job.queue_name, actor_name=job.actor_name, args=(),
                               kwargs=kwargs, options={"trace_id": get_trace_id()})
    return broker.enqueue(message)
