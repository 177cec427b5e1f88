"""The backend contract: what observability stores and reads (progress, trace contexts, the
metrics reads)."""

from __future__ import annotations

import pytest

import jobq
from jobq.backends.base import NewJob
from jobq.testing import FakeClock
from jobq.testing.contract.common import kinds


def test_progress_is_stored_and_fenced_by_the_lease(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue("long", max_attempts=5)
    job = queue.claim("w1", lease=10)
    assert job is not None
    assert queue.progress_of([job_id]) == {}  # nothing reported yet
    clock.advance(1)
    assert queue.progress(job, 0.25, "a quarter") is False
    (p,) = queue.progress_of([job_id]).values()
    assert (p.job_id, p.fraction, p.message, p.at) == (job_id, 0.25, "a quarter", clock.now)
    assert queue.progress(job, 7, None) is False  # clamped; a message may be left out
    assert queue.progress_of([job_id])[job_id].fraction == 1.0
    with pytest.raises(jobq.InvalidPayload, match="between 0 and 1"):
        queue.progress(job, float("nan"))
    queue.cancel(job_id)
    assert queue.progress(job, 0.5, "still going") is True  # like a heartbeat: the cancel is said
    # Once the lease is lost the old run may no longer write: refused and recorded.
    clock.advance(11)
    queue.rescue_expired()
    before = queue.progress_of([job_id])[job_id]
    with pytest.raises(jobq.LeaseLost):
        queue.progress(job, 0.9, "late")
    assert queue.progress_of([job_id])[job_id] == before
    assert kinds(queue, job_id)[-1] == "stale_write_refused"


def test_progress_of_reads_many_jobs_at_once(queue: jobq.Queue, clock: FakeClock) -> None:
    ids = queue.enqueue_many(["a", "b", "c"])
    jobs = queue.claim_many("w1", 3)
    queue.progress(jobs[0], 0.1, "x" * 10_000)
    queue.progress(jobs[2], None, "no fraction")
    got = queue.progress_of([*ids, 987654])
    assert sorted(got) == [ids[0], ids[2]]
    assert len(got[ids[0]].message or "") <= jobq.queue.PROGRESS_MESSAGE_MAX_CHARS
    assert (got[ids[2]].fraction, got[ids[2]].message) == (None, "no fraction")
    assert queue.progress_of([]) == {}


def test_trace_context_is_stored_with_new_jobs_only(queue: jobq.Queue, clock: FakeClock) -> None:
    def new(key: str | None) -> NewJob:
        return NewJob('"p"', "default", "", 0, clock.now, 3, idempotency_key=key)

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    a, b = queue.backend.enqueue([new("k1"), new(None)], clock.now, [parent, None])
    (again,) = queue.backend.enqueue([new("k1")], clock.now, [other])  # a known key: the first stays
    (plain,) = queue.backend.enqueue([new(None)], clock.now)
    assert again == a
    assert queue.trace_contexts([a, b, plain]) == {a: parent}


def test_queue_gauges_split_due_and_scheduled_and_count_expired_leases(queue: jobq.Queue, clock: FakeClock) -> None:
    assert queue.queue_gauges() == {}
    first = clock.now
    queue.enqueue("due a", queue="a")
    clock.advance(5)
    queue.enqueue_many(["due a2", "due a3"], queue="a")
    queue.enqueue("later", queue="a", delay=60)
    queue.enqueue("b", queue="b", delay=60)
    queue.enqueue("c", queue="c")
    assert queue.claim("w1", queue="c", lease=10) is not None
    clock.advance(1)
    g = queue.queue_gauges()
    assert sorted(g) == ["a", "b", "c"]
    assert (g["a"].pending_due, g["a"].pending_scheduled, g["a"].oldest_due_at) == (3, 1, first)
    assert (g["b"].pending_due, g["b"].pending_scheduled, g["b"].oldest_due_at) == (0, 1, None)
    assert (g["c"].pending_due, g["c"].processing, g["c"].processing_expired) == (0, 1, 0)
    clock.advance(20)
    assert queue.queue_gauges()["c"].processing_expired == 1


def test_events_after_is_a_cursor_with_each_jobs_queue_and_times(queue: jobq.Queue, clock: FakeClock) -> None:
    start = queue.last_event_id()
    assert queue.events_after(start) == []
    job_id = queue.enqueue("x", queue="mail")
    clock.advance(2)
    job = queue.claim("w1", queue="mail")
    assert job is not None
    clock.advance(3)
    queue.complete(job)
    events = queue.events_after(start)
    assert [e.kind for e in events] == ["enqueued", "claimed", "completed"]
    assert [e.id for e in events] == sorted(e.id for e in events) and events[0].id > start
    done = events[-1]
    assert (done.queue, done.attempt, done.at) == ("mail", 1, clock.now)
    assert done.started_at is not None and done.run_at is not None and done.finished_at is not None
    assert (done.started_at - done.run_at, done.finished_at - done.started_at) == (2, 3)
    assert queue.last_event_id() == done.id
    assert [e.kind for e in queue.events_after(start, limit=2)] == ["enqueued", "claimed"]
    assert queue.events_after(events[1].id) == [done]
    clock.advance(1)
    assert queue.purge(older_than=0) == 1
    assert queue.events_after(start) == [] and job_id not in queue.progress_of([job_id])
