"""Trace ids on every request: honour `traceparent` / `X-Trace-Id`, answer with `X-Trace-Id`.

The id is set in app.tracing's ContextVar for the duration of the request, so log lines, events
and enqueued jobs (app.jobs.enqueue) carry it without being passed around.
"""

from __future__ import annotations

import contextlib

import falcon

from app.tracing import current_trace_id, trace_id_from_headers


class TraceMiddleware:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        trace_id = trace_id_from_headers(req.get_header("traceparent"),
                                         req.get_header("X-Trace-Id"))
        req.context.trace_id = trace_id
        req.context.trace_token = current_trace_id.set(trace_id)
        resp.set_header("X-Trace-Id", trace_id)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource,
                         req_succeeded: bool) -> None:
        trace_id = getattr(req.context, "trace_id", None)
        if trace_id:
            resp.set_header("X-Trace-Id", trace_id)
        token = getattr(req.context, "trace_token", None)
        if token is not None:
            req.context.trace_token = None
            with contextlib.suppress(ValueError):  # set in another context: nothing to undo
                current_trace_id.reset(token)
