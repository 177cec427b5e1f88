"""A worker's start-up and shutdown as one protocol, and its one outcome path.

Set-up that fails part-way (the registration, the wake-up listener, a loop's thread) undoes what
was done: signal handlers restored, listener closed, threads ended, the registry row marked
stopped, and the exception reaches the caller. A timeout is an outcome like any other: recorded
once, written once, by the main loop (never by the heartbeater).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

import pytest
from polling import wait_for

import jobq
from jobq.errors import StorageError
from jobq.worker import JobContext, Worker
from jobq.worker.rescuer import Rescuer
from jobq.worker.runs import Outcome, RunOutcome


def _sentinel(signum: int, frame: FrameType | None) -> None:  # pragma: no cover - never called
    raise AssertionError("the test's own handler was called")


@pytest.fixture
def own_handlers() -> Iterator[None]:
    """Install handlers of the test's own for SIGTERM/SIGINT, so restoring them can be seen."""
    previous = {s: signal.signal(s, _sentinel) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in previous.items():
        signal.signal(s, handler)


class RecordingListener:
    """Delegates to the real listener and remembers whether it was closed."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.address = real.address
        self.closed = False

    def wait(self, timeout: float) -> bool:
        return bool(self.real.wait(timeout))

    def close(self) -> None:
        self.closed = True
        self.real.close()


def _record_listeners(q: jobq.Queue, monkeypatch: pytest.MonkeyPatch) -> list[RecordingListener]:
    opened: list[RecordingListener] = []
    real = q.listener

    def listener(worker_id: str, queue: str | Sequence[str] | None = None) -> RecordingListener:
        opened.append(RecordingListener(real(worker_id, queue)))
        return opened[-1]

    monkeypatch.setattr(q, "listener", listener)
    return opened


def _new_jobq_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.name.startswith("jobq-")]


def _assert_undone(before: set[threading.Thread]) -> None:
    assert signal.getsignal(signal.SIGTERM) is _sentinel and signal.getsignal(signal.SIGINT) is _sentinel
    wait_for(lambda: not _new_jobq_threads(before), 10, "the worker's threads to end")


@pytest.mark.usefixtures("own_handlers")
def test_a_registration_that_fails_undoes_the_set_up(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with jobq.Queue(sqlite_url) as q:
        opened = _record_listeners(q, monkeypatch)

        def register_worker(info: object) -> None:
            raise StorageError("database is away")

        monkeypatch.setattr(q, "register_worker", register_worker)
        before = set(threading.enumerate())
        worker = Worker(q, lambda ctx: None)
        with pytest.raises(StorageError, match="database is away"):
            worker.run()  # on the main thread, so it installs signal handlers
        _assert_undone(before)
        assert len(opened) == 1 and opened[0].closed
        assert not worker.started.is_set()
        assert q.workers() == []


@pytest.mark.usefixtures("own_handlers")
def test_a_listener_that_fails_undoes_the_set_up(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with jobq.Queue(sqlite_url) as q:

        def listener(worker_id: str, queue: object = None) -> None:
            raise StorageError("no wake-up channel")

        monkeypatch.setattr(q, "listener", listener)
        before = set(threading.enumerate())
        with pytest.raises(StorageError, match="no wake-up channel"):
            Worker(q, lambda ctx: None).run()
        _assert_undone(before)
        assert q.workers() == []


@pytest.mark.usefixtures("own_handlers")
def test_a_loop_that_cannot_start_undoes_everything_set_up_before_it(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with jobq.Queue(sqlite_url) as q:
        opened = _record_listeners(q, monkeypatch)

        def start(self: Rescuer) -> None:
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(Rescuer, "start", start)
        before = set(threading.enumerate())
        worker = Worker(q, lambda ctx: None, concurrency=3)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            worker.run()
        _assert_undone(before)  # the heartbeat loop and three runner threads had started
        assert len(opened) == 1 and opened[0].closed
        [row] = q.workers()
        assert row.id == worker.id and row.stopped_at is not None


def test_a_worker_runs_once(sqlite_url: str) -> None:
    with jobq.Queue(sqlite_url) as q:
        worker = Worker(q, lambda ctx: None, exit_when_idle=True)
        worker.run()
        assert worker.started.is_set()
        with pytest.raises(RuntimeError, match="already ran"):
            worker.run()
        assert [w.stopped_at is not None for w in q.workers()] == [True]


def test_a_timeout_is_recorded_once_through_the_outcome_path(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler ignores its timeout and returns later: the timeout is the run's one outcome,
    written once by the main loop; the late result is dropped, not refused."""
    may_return = threading.Event()

    def handler(ctx: JobContext) -> str:
        may_return.wait(60)  # never looks at ctx.cancelled: threads cannot be killed
        return "late result"

    settings = jobq.Settings(database_url=sqlite_url, backoff_base_seconds=0.01)
    with jobq.Queue(settings=settings) as q:
        job_id = q.enqueue({}, timeout=0.3, max_attempts=1)
        worker = Worker(q, handler)
        recorded: list[tuple[RunOutcome, bool]] = []
        real_record = worker.runs.record

        def record(outcome: RunOutcome) -> bool:
            first = real_record(outcome)
            recorded.append((outcome, first))
            return first

        monkeypatch.setattr(worker.runs, "record", record)
        writers: list[tuple[str, list[int]]] = []
        real_fail_many = q.fail_many

        def fail_many(items: Any, **kwargs: Any) -> Any:
            writers.append((threading.current_thread().name, [job.id for job, _, _ in items]))
            return real_fail_many(items, **kwargs)

        monkeypatch.setattr(q, "fail_many", fail_many)
        thread = threading.Thread(target=worker.run, name="worker-main")
        thread.start()
        try:
            assert worker.started.wait(30)
            wait_for(lambda: q.get(job_id).status == jobq.JobStatus.FAILED, 30, "the timeout to fail the job")
            [ctx] = worker.active()  # the handler still holds its slot
            assert ctx.timed_out and ctx.cancelled.is_set()
            wait_for(lambda: ctx.settled, 10, "the run to count as written")
            may_return.set()
            wait_for(lambda: not worker.active(), 30, "the handler to return and give its slot back")
        finally:
            may_return.set()
            worker.stop()
            thread.join(30)
        kept = [o for o, first in recorded if first]
        assert [(o.kind, o.error, o.ends_run) for o in kept] == [(Outcome.FAIL, "timed out after 0.3 s", False)]
        # The handler's completion came second: it only ended the run.
        assert [(o.kind, o.result) for o, first in recorded if not first] == [(Outcome.COMPLETE, "late result")]
        assert writers == [("worker-main", [job_id])], "written once, by the main loop"
        kinds = [str(e.kind) for e in q.events(job_id)]
        assert kinds.count("failed") == 1
        assert "completed" not in kinds and "stale_write_refused" not in kinds
        job = q.get(job_id)
        assert job.last_error == "timed out after 0.3 s" and job.result is None
        assert (worker.jobs_done, worker.jobs_failed) == (0, 1)


def _on_empty_claim(q: jobq.Queue) -> threading.Event:
    """An event set when a claim of ``q`` comes back empty (``q.claim_many`` spied on)."""
    empty = threading.Event()
    claim_many = q.claim_many

    def spied(*args: Any, **kwargs: Any) -> list[jobq.Job]:
        got = claim_many(*args, **kwargs)
        if not got:
            empty.set()
        return got

    q.claim_many = spied  # type: ignore[method-assign]
    return empty


def test_exit_when_idle_looks_again_after_its_last_job_fails_with_a_retry_due_now(backend_url: str) -> None:
    """A worker with a free slot that found nothing while its one job ran waits for a wake-up or
    the poll interval before claiming again. When that job then fails with a retry due at once,
    ``exit_when_idle`` must not take the wait for "nothing due": it looks again, claims the retry
    and runs it (a CI run once stopped with the retries still PENDING)."""
    attempts: list[int] = []

    def handler(ctx: JobContext) -> str:
        attempts.append(ctx.job.attempts)
        if ctx.job.attempts == 1:
            # Fail only after the worker's free slot claimed and found nothing.
            assert wait_for(empty_claim.is_set, timeout=30, what="an empty claim while the job ran")
            raise TimeoutError("slow upstream")
        return "ok"

    with jobq.Queue(backend_url, settings=jobq.Settings(poll_interval_seconds=60)) as q:
        job = q.enqueue("x", task="flaky", max_attempts=2, backoff=0)
        empty_claim = _on_empty_claim(q)  # the first claim takes the job: empty ones come after
        Worker(q, {"flaky": handler}, concurrency=2, exit_when_idle=True).run()
        done = q.get(job)
    assert attempts == [1, 2]
    assert (done.status, done.attempts) == (jobq.JobStatus.COMPLETED, 2)


def test_exit_when_idle_still_stops_when_the_worker_may_not_claim(backend_url: str) -> None:
    """The look of the test above happens only when a claim may be made: a worker that is not
    healthy (its heartbeats failing) skips every claim, so a pass that looks again would loop
    without a pause. It stops instead, its job's retry left for another worker."""
    sick = threading.Event()

    class Unhealthy(Worker):
        @property
        def healthy(self) -> bool:
            return not sick.is_set()

    def handler(ctx: JobContext) -> None:
        assert wait_for(empty_claim.is_set, timeout=30, what="an empty claim while the job ran")
        sick.set()
        raise TimeoutError("slow upstream")

    with jobq.Queue(backend_url, settings=jobq.Settings(poll_interval_seconds=60)) as q:
        job = q.enqueue("x", task="flaky", max_attempts=2, backoff=0)
        empty_claim = _on_empty_claim(q)
        worker = Unhealthy(q, {"flaky": handler}, concurrency=2, exit_when_idle=True)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: not thread.is_alive(), timeout=30, what="the worker to stop")
        finally:
            worker.stop()  # a worker that loops would otherwise spin on after the test
            thread.join(30)
        done = q.get(job)
    assert (done.status, done.attempts) == (jobq.JobStatus.PENDING, 1)
