"""OpenTelemetry traces: a span per enqueue, stored with the job, and a child span per attempt.

Only an application that configured an OpenTelemetry SDK gets traces, and such an application
has imported ``opentelemetry.trace`` (``set_tracer_provider`` lives there). So jobq never imports
OpenTelemetry itself until it finds that module loaded: ``recording()`` is one dictionary lookup
in ``sys.modules`` while it is not (importing the API costs 0.1-0.2 s at every process start,
too much for ``jobq list`` or a producer that restarts), one ``isinstance`` while no SDK is set,
and a remembered yes once one is. The facade and the worker skip every tracing step behind it.

The context is stored as W3C ``traceparent`` text in the job row (``jobs.trace_context``, a
nullable column; jobq has no payload envelope, and the payload is the application's own JSON, so
hiding a field in it would change what handlers and the apps see). Only the traceparent is kept:
``tracestate`` and baggage are not carried to the worker.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

TRACER_NAME = "jobq"
_API = "opentelemetry.trace"
_configured = False
_propagator: Any = None


def recording() -> bool:
    """Whether an SDK is configured (the API's default provider is a proxy, or a no-op one, until
    the application sets one): only then is it worth tracing and reading the stored contexts.
    A provider, once set, stays (the API sets it once): a yes is remembered."""
    global _configured, _propagator
    if _configured:
        return True
    trace = sys.modules.get(_API)
    if trace is None:
        return False
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return False
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator = TraceContextTextMapPropagator()
    _configured = True
    return True


def _tracer() -> Any:
    from opentelemetry import trace

    import jobq

    return trace.get_tracer(TRACER_NAME, jobq.__version__)


@contextlib.contextmanager
def enqueue_span(queue: str, task: str, count: int) -> Iterator[tuple[Any, list[str | None]]]:
    """A PRODUCER span around an enqueue; yields it and the traceparent each job will store
    (empty when the span is not recording: no SDK configured, or sampled out)."""
    from opentelemetry.trace import SpanKind

    with _tracer().start_as_current_span(
        f"jobq enqueue {queue}",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "jobq", "messaging.destination.name": queue, "jobq.task": task,
                    "messaging.batch.message_count": count},
    ) as span:  # fmt: skip
        if not span.is_recording():
            yield span, []
            return
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        yield span, [carrier.get("traceparent")] * count


def set_job_ids(span: Any, ids: Sequence[int]) -> None:
    if span.is_recording():
        span.set_attribute("jobq.job_ids", list(ids))


@contextlib.contextmanager
def run_span(traceparent: str | None, job_id: int, queue: str, task: str, attempt: int, worker: str) -> Iterator[Any]:
    """A CONSUMER span for one attempt, the child of its enqueue's span when one was stored."""
    from opentelemetry.trace import SpanKind

    parent = _propagator.extract({"traceparent": traceparent}) if traceparent else None
    with _tracer().start_as_current_span(
        f"jobq run {task or queue}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "jobq", "messaging.destination.name": queue, "jobq.job_id": job_id,
                    "jobq.task": task, "jobq.attempt": attempt, "jobq.worker": worker},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:  # fmt: skip
        yield span


def record_outcome(span: Any, outcome: str, error: str = "") -> None:
    """The attempt's outcome (``completed``, ``failed``, ``cancelled``, ``none``) and its error."""
    if not span.is_recording():
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("jobq.outcome", outcome)
    if error:
        last = error.strip().splitlines()[-1] if error.strip() else error
        span.add_event("exception", {"exception.message": last, "exception.stacktrace": error})
        span.set_status(Status(StatusCode.ERROR, last[:200]))
