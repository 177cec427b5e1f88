"""Traces with the OpenTelemetry SDK's in-memory exporter: an enqueue's span is stored with the
job and each attempt runs in a child span, with its outcome and error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import jobq
from jobq.observability import tracing
from jobq.testing import drain

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402
from opentelemetry.util._once import Once  # noqa: E402


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A tracer provider for this test only: the API sets one once per process, so the test puts
    the API's globals back afterwards (other tests must run untraced)."""
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
        tracing._configured = False  # jobq remembers a configured provider: forget this one
        provider.shutdown()


def _settings(url: str) -> jobq.Settings:
    return jobq.Settings(database_url=url, backoff_base_seconds=0, backoff_cap_seconds=0, poll_interval_seconds=0.05)


def test_each_attempt_is_a_child_of_its_enqueue_with_outcome_and_error(
    backend_url: str, spans: InMemorySpanExporter
) -> None:
    calls: dict[int, int] = {}

    def handler(ctx: jobq.worker.JobContext) -> str:
        calls[ctx.job.id] = calls.get(ctx.job.id, 0) + 1
        if ctx.payload == "flaky" and calls[ctx.job.id] == 1:
            raise ValueError("first try fails")
        return "ok"

    with jobq.Queue(settings=_settings(backend_url)) as q:
        ok = q.enqueue("fine", task="t1")
        flaky = q.enqueue("flaky", task="t2", max_attempts=2)
        assert set(q.trace_contexts([ok, flaky])) == {ok, flaky}
        worker = drain(q, handler)
        assert worker.jobs_done == 2
    finished = spans.get_finished_spans()
    enqueues = {s.attributes["jobq.job_ids"][0]: s for s in finished if s.kind is SpanKind.PRODUCER}
    runs = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert set(enqueues) == {ok, flaky}
    assert len(runs) == 3  # one span per attempt
    for run in runs:
        job_id = run.attributes["jobq.job_id"]
        parent = enqueues[job_id].context
        assert run.parent is not None and run.parent.span_id == parent.span_id
        assert run.context.trace_id == parent.trace_id
    by_attempt = {(r.attributes["jobq.job_id"], r.attributes["jobq.attempt"]): r for r in runs}
    failed = by_attempt[(flaky, 1)]
    assert failed.attributes["jobq.outcome"] == "failed"
    assert failed.status.status_code is StatusCode.ERROR and "first try fails" in (failed.status.description or "")
    assert any("ValueError" in str(e.attributes.get("exception.stacktrace")) for e in failed.events)
    assert by_attempt[(flaky, 2)].attributes["jobq.outcome"] == "completed"
    assert by_attempt[(ok, 1)].status.status_code is StatusCode.UNSET


def test_enqueue_many_is_one_span_and_a_job_without_a_context_runs_in_a_root_span(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    with jobq.Queue(settings=_settings(sqlite_url)) as q:
        ids = q.enqueue_many(["a", "b"], queue="bulk")
        assert set(q.trace_contexts(ids)) == set(ids)
        # Enqueued by a process without tracing: stored without a context, run as a root span.
        (untraced,) = q.backend.enqueue([jobq.backends.base.NewJob('"c"', "bulk", "", 0, q.clock(), 1)], q.clock())
        drain(q, lambda ctx: None, queues=["bulk"])
    finished = spans.get_finished_spans()
    (enqueue,) = [s for s in finished if s.kind is SpanKind.PRODUCER]
    assert list(enqueue.attributes["jobq.job_ids"]) == ids
    assert enqueue.attributes["messaging.batch.message_count"] == 2
    runs = {s.attributes["jobq.job_id"]: s for s in finished if s.kind is SpanKind.CONSUMER}
    assert runs[untraced].parent is None
    assert all(runs[i].parent is not None and runs[i].parent.span_id == enqueue.context.span_id for i in ids)


def test_without_a_configured_sdk_nothing_is_stored(sqlite_url: str) -> None:
    assert not tracing.recording()
    with jobq.Queue(settings=_settings(sqlite_url)) as q:
        job_id = q.enqueue("x")
        assert q.trace_contexts([job_id]) == {}


def test_a_short_job_that_reports_progress_writes_nothing(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress is throttled per run, the first report after an interval: the worker's
    statements per short job do not change when its handler reports progress."""
    from jobq.backends import ops

    calls: list[int] = []
    real = ops.progress

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ops, "progress", counted)
    with jobq.Queue(settings=_settings(sqlite_url)) as q:
        q.enqueue_many(list(range(50)))
        worker = drain(q, lambda ctx: ctx.progress(0.5, "half"))
        assert worker.jobs_done == 50
    assert calls == []


def test_without_the_extras_jobq_imports_and_runs(sqlite_url: str) -> None:
    """No opentelemetry, no prometheus_client: the core works and stores no trace context."""
    import subprocess
    import sys

    script = f"""
import sys
sys.modules["opentelemetry"] = None  # as if not installed: every import of it fails
sys.modules["prometheus_client"] = None
import jobq
from jobq.observability import tracing
from jobq.testing import drain
assert tracing.recording() is False
q = jobq.Queue({sqlite_url!r})
job_id = q.enqueue("x")
assert drain(q, lambda ctx: ctx.progress(0.5)).jobs_done == 1
assert q.trace_contexts([job_id]) == {{}}
try:
    from jobq.observability.metrics import serve
    serve(q, 1)
except jobq.ConfigError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "metrics need prometheus_client: pip install 'jobq[metrics]'" in done.stdout


def test_jobq_never_imports_opentelemetry_itself() -> None:
    """Installed or not, the API is imported only by an application that traces (it costs every
    process start 0.1-0.2 s): jobq looks for it in sys.modules."""
    import subprocess
    import sys

    script = "import sys, jobq, jobq.worker, jobq.cli; print(sorted(m for m in sys.modules if 'opentelemetry' in m))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_async_handlers_attempt_is_a_child_span_too(backend_url: str, spans: InMemorySpanExporter) -> None:
    async def handler(ctx: jobq.worker.JobContext) -> str:
        return "ok"

    with jobq.Queue(settings=_settings(backend_url)) as q:
        job_id = q.enqueue("fine", task="t-async")
        worker = drain(q, handler)
        assert worker.jobs_done == 1 and q.get(job_id).result == "ok"
    finished = spans.get_finished_spans()
    (enqueue,) = [s for s in finished if s.kind is SpanKind.PRODUCER]
    (run,) = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert run.attributes["jobq.job_id"] == job_id and run.attributes["jobq.outcome"] == "completed"
    assert run.parent is not None and run.parent.span_id == enqueue.context.span_id


def test_an_enqueue_in_the_applications_transaction_is_traced_like_any_other(
    backend_url: str, app_connect: Any, spans: InMemorySpanExporter
) -> None:
    """``conn=`` (enqueue and enqueue_many, every kind of application connection): the enqueue is
    a span, the child of the application's current span, and its context is stored in the same
    transaction, so a rolled-back enqueue leaves no job and no context behind."""
    tracer = trace.get_tracer("app")
    with jobq.Queue(settings=_settings(backend_url)) as q:
        made: dict[int, str] = {}  # job id -> the connection kind that enqueued it
        for app in app_connect():
            with tracer.start_as_current_span(f"request {app.kind}"):
                app.begin()
                app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (0, app.kind))
                one = q.enqueue("one", task="t-conn", conn=app.conn)
                many = q.enqueue_many(["a", "b"], task="t-conn-many", conn=app.conn)
                app.commit()
                app.begin()
                gone = q.enqueue("rolled back", task="t-conn", conn=app.conn)
                app.rollback()
            made.update({i: app.kind for i in (one, *many)})
            assert gone not in q.trace_contexts([gone])
        assert set(q.trace_contexts(list(made))) == set(made)
        worker = drain(q, lambda ctx: None)
        assert worker.jobs_done == len(made)
    finished = spans.get_finished_spans()
    requests = {s.name.removeprefix("request "): s for s in finished if s.name.startswith("request ")}
    enqueues = [s for s in finished if s.kind is SpanKind.PRODUCER]
    assert len(enqueues) == 3 * len(requests)  # one, many, and the rolled-back one: each a span
    by_job = {i: s for s in enqueues for i in s.attributes.get("jobq.job_ids", ())}
    runs = {s.attributes["jobq.job_id"]: s for s in finished if s.kind is SpanKind.CONSUMER}
    assert set(runs) == set(made)
    for job_id, kind in made.items():
        enqueue = by_job[job_id]
        assert enqueue.parent is not None and enqueue.parent.span_id == requests[kind].context.span_id
        assert runs[job_id].parent is not None and runs[job_id].parent.span_id == enqueue.context.span_id


@pytest.mark.postgres
def test_an_async_queues_enqueue_in_an_async_connection_is_traced(
    postgres_url: str, spans: InMemorySpanExporter
) -> None:
    import psycopg

    from jobq.backends.postgres.url import split_url

    tracer = trace.get_tracer("app")

    async def main() -> list[int]:
        async with jobq.AsyncQueue(settings=_settings(postgres_url)) as q:
            async with await psycopg.AsyncConnection.connect(split_url(postgres_url).libpq_url) as conn:
                with tracer.start_as_current_span("request"):
                    async with conn.transaction():
                        one = await q.enqueue("one", task="t-aconn", conn=conn)
                        many = await q.enqueue_many(["a", "b"], task="t-aconn", conn=conn)
            ids = [one, *many]
            assert set(q.sync.trace_contexts(ids)) == set(ids)
            return ids

    ids = asyncio.run(main())
    with jobq.Queue(settings=_settings(postgres_url)) as q:
        assert drain(q, lambda ctx: None).jobs_done == 3
    finished = spans.get_finished_spans()
    (request,) = [s for s in finished if s.name == "request"]
    enqueues = [s for s in finished if s.kind is SpanKind.PRODUCER]
    assert [list(s.attributes["jobq.job_ids"]) for s in enqueues] == [ids[:1], ids[1:]]
    assert all(s.parent is not None and s.parent.span_id == request.context.span_id for s in enqueues)
    runs = {s.attributes["jobq.job_id"]: s for s in finished if s.kind is SpanKind.CONSUMER}
    by_job = {i: s for s in enqueues for i in s.attributes["jobq.job_ids"]}
    assert all(runs[i].parent is not None and runs[i].parent.span_id == by_job[i].context.span_id for i in ids)
