"""The backend contract: what observability stores and reads (progress, trace contexts, the
metrics reads)."""

from __future__ import annotations

import math

import pytest

import jobq
from jobq import EventKind
from jobq.backends.base import HistogramBounds, NewJob, QueueGauges
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


def test_queue_gauges_without_the_backlog_read_only_the_running_jobs(queue: jobq.Queue, clock: FakeClock) -> None:
    # The exporter reads the running jobs at every scrape and a costly backlog less often.
    queue.enqueue_many(["a1", "a2"], queue="a")
    queue.enqueue("b", queue="b")
    assert queue.claim("w1", queue="b", lease=10) is not None
    queue.enqueue("b later", queue="b", delay=60)
    clock.advance(11)
    assert queue.queue_gauges(backlog=False) == {"b": QueueGauges(0, 0, None, 1, 1)}
    full = queue.queue_gauges()
    assert full["b"] == QueueGauges(0, 1, None, 1, 1) and full["a"].pending_due == 2


def test_events_after_is_a_cursor_with_each_jobs_queue_and_times(queue: jobq.Queue, clock: FakeClock) -> None:
    start = queue.last_event_id()
    assert queue.events_after(start) == []
    queue.enqueue("x", queue="mail", max_attempts=3)
    clock.advance(2)
    job = queue.claim("w1", queue="mail")
    assert job is not None
    claimed_at = clock.now
    clock.advance(3)
    queue.fail_many([(job, "boom", True)], delays=[0])
    events = queue.events_after(start)
    # Enqueues and claims write no event (issue 13): the event that ends an attempt carries its
    # claim time; enqueues are followed along the jobs (test_enqueue_totals_...).
    assert [e.kind for e in events] == ["retry_scheduled"]
    assert events[0].id > start
    retried = events[-1]
    assert (retried.queue, retried.attempt, retried.at, retried.claimed_at) == ("mail", 1, clock.now, claimed_at)
    assert queue.last_event_id() == retried.id
    assert [e.kind for e in queue.events_after(start, limit=1)] == ["retry_scheduled"]
    clock.advance(1)
    queue.purge(older_than=0)
    assert queue.events_after(retried.id) == []


def test_event_totals_count_some_kinds_and_list_the_others(queue: jobq.Queue, clock: FakeClock) -> None:
    """The exporter's fold of events (issue 17): the kinds asked for counted by queue and kind
    in the store, every other event listed as ``events_after`` does."""
    start = queue.last_event_id()
    assert queue.event_totals(start, ["cancelled"]) == (start, {}, [], False)
    for job_id in queue.enqueue_many(["a", "b"], queue="mail"):
        assert queue.cancel(job_id).ok
    queue.enqueue("c", queue="other", max_attempts=3)
    clock.advance(2)
    job = queue.claim("w1", queue="other")
    assert job is not None
    queue.fail_many([(job, "boom", True)], delays=[0])
    listed = queue.events_after(start)
    assert [e.kind for e in listed] == ["cancelled", "cancelled", "retry_scheduled"]
    read = queue.event_totals(start, ["cancelled"])
    assert read.cursor == listed[-1].id == queue.last_event_id() and not read.held_back
    assert read.counts == {("mail", "cancelled"): 2}
    assert read.events == [e for e in listed if e.kind != "cancelled"]
    assert read.events[0].claimed_at is not None
    # A limit counts events of both kinds; the cursor goes on from where a read stopped.
    first = queue.event_totals(start, ["cancelled"], limit=2)
    assert (first.cursor, first.counts, first.events) == (listed[1].id, {("mail", "cancelled"): 2}, [])
    rest = queue.event_totals(first.cursor, ["cancelled"])
    assert (rest.counts, rest.events) == ({}, read.events)
    # Events newer than ``until`` wait for a later read (PostgreSQL's settle delay).
    held = queue.event_totals(start, ["cancelled"], until=clock.now - 1)
    assert held == (listed[1].id, read.counts, [], True)
    assert queue.event_totals(read.cursor, ["cancelled"]) == (read.cursor, {}, [], False)


def test_enqueue_totals_count_the_jobs_made_after_a_cursor(queue: jobq.Queue, clock: FakeClock) -> None:
    """Enqueues are not events (issue 13): the exporter counts the jobs made after a cursor over
    their primary key, summed by queue in the store."""
    start = queue.last_job_id()
    assert queue.enqueue_totals(start) == (start, {}, False)
    first = queue.enqueue("x", queue="mail")
    clock.advance(1)
    second, third = queue.enqueue_many(["y", "z"], queue="sms", delay=5)
    assert queue.last_job_id() == third
    assert queue.enqueue_totals(start) == (third, {"mail": 1, "sms": 2}, False)
    # A limit ends the read that many ids on from the first job; the cursor goes on from there.
    assert queue.enqueue_totals(start, limit=2) == (second, {"mail": 1, "sms": 1}, False)
    assert queue.enqueue_totals(second) == (third, {"sms": 1}, False)
    # Jobs made after ``until`` wait for a later read (PostgreSQL's settle delay).
    assert queue.enqueue_totals(start, until=clock.now - 0.5) == (first, {"mail": 1}, True)
    # A key that a job holds makes nothing: nothing more to count.
    queue.enqueue("k", key="k")
    after_key = queue.last_job_id()
    queue.enqueue("k", key="k")
    assert queue.enqueue_totals(after_key) == (after_key, {}, False)


def test_the_cursors_can_start_at_a_time(queue: jobq.Queue, clock: FakeClock) -> None:
    """``last_job_id(before=t)`` and ``last_event_id(before=t)``: the newest job made and event
    recorded before ``t`` (where the exporter starts over on a SQLite file put in place of the
    one it read: from its last read of the old one)."""
    assert queue.last_job_id(before=clock.now) == 0 and queue.last_event_id(before=clock.now) == 0
    old = queue.enqueue("old")
    assert queue.cancel(old).ok
    old_event = queue.last_event_id()
    moment = clock.now + 0.5
    clock.advance(1)
    new = queue.enqueue("new")
    assert queue.cancel(new).ok
    assert queue.last_job_id(before=moment) == old and queue.last_job_id() == new
    assert queue.last_event_id(before=moment) == old_event < queue.last_event_id()
    assert queue.last_job_id(before=clock.now - 100) == 0
    for bad in (float("nan"), "yesterday", True):
        with pytest.raises(ValueError, match="before"):
            queue.last_job_id(before=bad)  # type: ignore[arg-type]


def test_enqueue_totals_pass_over_missing_ids(queue: jobq.Queue, clock: FakeClock) -> None:
    """A read spans ``limit`` ids from the first job after the cursor: a purged job leaves a
    gap that counts nothing, and a gap right after the cursor is skipped in the same read (one
    seek, however long the gap), never read as an empty range."""
    start = queue.last_job_id()
    first, gone, *rest = queue.enqueue_many(["a", "b", "c", "d"], queue="mail")
    assert queue.cancel(gone).ok
    clock.advance(2)
    assert queue.purge(older_than=1, statuses=["CANCELLED"]) == 1
    # Ids first and gone: the gap counts nothing; the cursor still moves past it.
    assert queue.enqueue_totals(start, limit=2) == (gone, {"mail": 1}, False)
    # From the first job, the gap right after the cursor is passed over: two ids on from the next job.
    assert queue.enqueue_totals(first, limit=2) == (rest[1], {"mail": 2}, False)
    assert queue.enqueue_totals(rest[1]) == (rest[1], {}, False)


def test_completions_after_is_a_cursor_over_finished_jobs(queue: jobq.Queue, clock: FakeClock) -> None:
    """Completions write no event (issue 13): the metrics exporter follows completed job rows
    by (finished_at, id) instead, with each job's queue, times and attempts."""
    queue.enqueue("before")
    old = queue.claim("w0")
    assert old is not None
    queue.complete(old)
    start = queue.completion_cursor()
    assert start == (clock.now, old.id)
    assert queue.completions_after(start) == []
    ids = queue.enqueue_many(["a", "b", "c"], queue="mail")
    clock.advance(2)
    jobs = [queue.claim("w1", queue="mail") for _ in ids]
    clock.advance(3)
    for job in jobs:
        assert job is not None
        queue.complete(job)  # all three at the same time: the id orders them
    failing = queue.enqueue("f", max_attempts=1)
    bad = queue.claim("w1")
    assert bad is not None and bad.id == failing
    queue.fail(bad, "no")  # failures are events, not completions
    done = queue.completions_after(start)
    assert [(e.id, e.kind, e.queue, e.attempt) for e in done] == [(i, "completed", "mail", 1) for i in ids]
    first = done[0]
    assert first.started_at is not None and first.run_at is not None and first.finished_at is not None
    assert (first.started_at - first.run_at, first.finished_at - first.started_at, first.at) == (
        2,
        3,
        first.finished_at,
    )
    assert queue.completions_after((first.at, first.id)) == done[1:]
    assert queue.completions_after(start, limit=2) == done[:2]
    assert queue.completions_after(start, until=clock.now - 1) == []  # not yet settled
    assert queue.completion_cursor() == (clock.now, failing)  # any finished job: where to start
    assert queue.completion_cursor(clock.now - 1) == (clock.now - 5, old.id)  # finished by then
    assert queue.completion_cursor(clock.now - 6) == (0.0, 0)


def test_completion_totals_sum_what_completions_after_lists(queue: jobq.Queue, clock: FakeClock) -> None:
    """The exporter's fold (issue 17): the same completions as ``completions_after``, counted
    per queue and histogram slot by the store, with the cursor after the last one counted."""
    bounds = HistogramBounds(wait=(1.0, 5.0), run=(2.0,), attempts=(1.0, 2.0))
    start = queue.completion_cursor()
    assert queue.completion_totals(start, bounds) == (start, {})
    fast = queue.enqueue_many(["a", "b"], queue="mail")
    retried = queue.enqueue("r", queue="mail", max_attempts=3)
    clock.advance(3)  # waited 3 s: the second wait slot
    jobs = [queue.claim("w1", queue="mail") for _ in range(3)]
    assert [j.id for j in jobs if j] == [*fast, retried]
    clock.advance(1)
    for job in jobs[:2]:
        assert job is not None
        queue.complete(job)  # ran 1 s: the first run slot
    assert jobs[2] is not None
    queue.fail(jobs[2], "again")  # a failure is no completion; retried after its backoff
    other = queue.enqueue("o", queue="other")
    clock.advance(3600)  # "other" waited an hour: past every wait bound
    again = queue.claim("w1", queue="mail")
    late = queue.claim("w1", queue="other")
    assert again is not None and again.id == retried and late is not None and late.id == other
    clock.advance(3)  # ran 3 s: past the run bound
    queue.complete(again)
    queue.complete(late)
    listed = queue.completions_after(start)
    cursor, totals = queue.completion_totals(start, bounds)
    assert cursor == (listed[-1].at, listed[-1].id)
    assert {q: t.completed for q, t in totals.items()} == {"mail": 3, "other": 1}
    mail, other_q = totals["mail"], totals["other"]
    assert mail.wait.counts[:2] == (0, 2) and other_q.wait.counts == (0, 0, 1)
    assert mail.run.counts == (2, 1) and other_q.run.counts == (0, 1)
    assert mail.attempts.counts == (2, 1, 0) and other_q.attempts.counts == (1, 0, 0)
    waits = [e.started_at - e.run_at for e in listed if e.queue == "mail"]  # type: ignore[operator]
    assert mail.wait.total == pytest.approx(sum(max(0.0, w) for w in waits))
    assert (mail.run.total, mail.attempts.total, other_q.wait.total) == (1 + 1 + 3, 4, 3600)
    # Two instants: listed[0:2] finished together, then listed[2:4]. A limit that ends between
    # two instants stops where completions_after's limit does; the cursor goes on from there.
    assert (listed[0].at, listed[2].at) == (listed[1].at, listed[3].at) and listed[1].at < listed[2].at
    cursor2, first2 = queue.completion_totals(start, bounds, limit=2)
    assert cursor2 == (listed[1].at, listed[1].id) and first2["mail"].completed == 2
    assert queue.completion_totals(cursor2, bounds)[1].keys() == {"mail", "other"}
    assert queue.completion_totals(start, bounds, limit=len(listed)) == (cursor, totals)  # exactly the limit left
    # A limit inside an instant, with more left: the fold ends before that instant (fewer than the
    # limit, never an instant in part) ...
    assert queue.completion_totals(start, bounds, limit=3) == (cursor2, first2)
    # ... unless the first instant alone holds more than the limit: it is split by id.
    one, first1 = queue.completion_totals(start, bounds, limit=1)
    assert one == (listed[0].at, listed[0].id) and {q: t.completed for q, t in first1.items()} == {"mail": 1}
    assert queue.completion_totals(one, bounds, limit=1)[0] == (listed[1].at, listed[1].id)
    folds, at = 0, start  # folding by one from the start counts each completion once
    summed: dict[str, int] = {}
    while True:
        at, part = queue.completion_totals(at, bounds, limit=1)
        if not part:
            break
        folds += 1
        for q, t in part.items():
            summed[q] = summed.get(q, 0) + t.completed
    assert (folds, summed, at) == (len(listed), {"mail": 3, "other": 1}, cursor)
    assert queue.completion_totals(cursor, bounds) == (cursor, {})
    # Not yet settled: only what finished by ``until``.
    assert queue.completion_totals(start, bounds, until=listed[0].at - 1) == (start, {})
    settled = queue.completion_totals(start, bounds, until=clock.now - 1)
    assert settled[0] == (listed[1].at, listed[1].id) and settled[1]["mail"].completed == 2


def test_completion_totals_keep_each_queue_apart_whichever_finished_last(queue: jobq.Queue, clock: FakeClock) -> None:
    """The fold sums the last completion's queue by its slots alone and names the others with
    theirs (SQLite's cheaper sort, issue 17): queues whose names hold spaces or other letters are
    kept apart, whichever of them finished last."""
    bounds = HistogramBounds(wait=(1.0,), run=(1.0,), attempts=(1.0,))
    names = ["mail out", "b 1 2", "ünï"]
    for last in range(len(names)):
        start = queue.completion_cursor()
        order = names[last + 1 :] + names[: last + 1]  # names[last] finishes last
        for i, name in enumerate(order):
            queue.enqueue_many(["x"] * (i + 1), queue=name)
        clock.advance(2)  # waited 2 s: past the wait bound
        for name in order:
            for job in queue.claim_many("w", 10, queue=name):
                queue.complete(job)
            clock.advance(0.5)
        cursor, totals = queue.completion_totals(start, bounds)
        assert {q: t.completed for q, t in totals.items()} == {name: i + 1 for i, name in enumerate(order)}
        assert all(t.wait.counts == (0, t.completed) and t.run.counts == (t.completed, 0) for t in totals.values())
        assert cursor == (clock.now - 0.5, max(e.id for e in queue.completions_after(start)))
        assert queue.completions_after(start)[-1].queue == names[last]


def test_history_shows_claims_and_completions_derived_from_the_job_row(queue: jobq.Queue, clock: FakeClock) -> None:
    """What a user sees of a job's history is the same whether an entry is stored or derived:
    claims and completions on the normal path write no event rows (issue 13)."""
    job_id = queue.enqueue("x", max_attempts=3)
    enqueued = clock.now
    clock.advance(1)
    first = queue.claim("w1", lease=30)
    assert first is not None
    clock.advance(2)
    queue.fail_many([(first, "boom", True)], delays=[5])
    clock.advance(5)
    second = queue.claim("w2", lease=30)
    assert second is not None
    running = [(str(e.kind), e.actor, e.attempt, e.at) for e in queue.events(job_id)]
    assert running == [
        ("enqueued", None, 0, enqueued),
        ("claimed", "w1", 1, enqueued + 1),
        ("retry_scheduled", "w1", 1, enqueued + 3),
        ("claimed", "w2", 2, enqueued + 8),
    ]
    clock.advance(4)
    queue.complete(second)
    history = queue.events(job_id)
    assert [(str(e.kind), e.actor, e.attempt, e.at) for e in history] == [
        *running,
        ("completed", "w2", 2, enqueued + 12),
    ]
    assert [e.detail for e in history if e.kind in ("claimed", "completed")] == [{}, {}, {}]
    # The activity feed and the chart see the same entries.
    recent = [(e.job_id, str(e.kind), e.attempt) for e in queue.recent_events(10)]
    assert recent[:4] == [(job_id, "completed", 2), (job_id, "claimed", 2), (job_id, "retry_scheduled", 1),
                          (job_id, "claimed", 1)]  # fmt: skip
    assert [(str(e.kind), e.attempt) for e in queue.recent_events(10, kinds=["claimed"])] == [
        ("claimed", 2),
        ("claimed", 1),
    ]
    clock.advance(1)
    buckets = queue.history(window=60, bucket=60)
    assert (sum(b.claimed for b in buckets), sum(b.completed for b in buckets)) == (2, 1)
    assert queue.stats().completed_last_minute == 1
    # A resubmit resets the row: the event carries the completed attempt, which stays in view.
    clock.advance(1)
    queue.resubmit(job_id)
    third = queue.claim("w3")
    assert third is not None
    after = [(str(e.kind), e.actor, e.attempt) for e in queue.events(job_id)]
    assert after == [
        ("enqueued", None, 0),
        ("claimed", "w1", 1),
        ("retry_scheduled", "w1", 1),
        ("claimed", "w2", 2),
        ("completed", "w2", 2),
        ("resubmitted", after[5][1], 0),
        ("claimed", "w3", 1),
    ]


@pytest.mark.parametrize(
    ("window", "bucket", "message"),
    [
        (math.nan, 60, "window must be a number of seconds above 0"),
        (math.inf, 60, "window must be a number of seconds above 0"),
        (0, 60, "window must be a number of seconds above 0"),
        (3600, 0, "bucket must be a number of seconds up to 100 years that cuts the window into at most 10,000"),
        (3600, 2**63, "bucket must be a number of seconds up to 100 years"),
        (3600, math.nan, "bucket must be a number of seconds"),
        (3600, 1e-6, "bucket must be a number of seconds"),
    ],
)  # fmt: skip
def test_a_history_span_that_is_no_span_is_refused(
    queue: jobq.Queue, window: float, bucket: float, message: str
) -> None:
    """NaN or infinity failed deep in the store (ValueError, OverflowError), a bucket of 0 with
    ZeroDivisionError, one of 2**63 s with OverflowError from the driver, and a bucket of 1e-6 s
    over an hour made 3.6 billion buckets in memory."""
    for read in (queue.history, queue.due_history):
        with pytest.raises(ValueError, match=message):
            read(window=window, bucket=bucket)
    assert len(queue.history(window=3600, bucket=0.36)) == 10_000  # the most buckets, still served


def test_history_keeps_each_attempts_claim_however_it_ended(queue: jobq.Queue, clock: FakeClock) -> None:
    """Released, rescued, cancelled and failed attempts: each ending event carries its claim."""
    job_id = queue.enqueue("x", max_attempts=3)
    job = queue.claim("w1", lease=10)
    assert job is not None
    clock.advance(1)
    queue.release(job)  # at shutdown: the attempt is given back
    clock.advance(1)
    job = queue.claim("w2", lease=10)
    assert job is not None
    clock.advance(11)
    assert [r.job_id for r in queue.rescue_expired()] == [job_id]  # w2 stopped heartbeating
    clock.advance(10)
    job = queue.claim("w3", lease=10)
    assert job is not None
    queue.cancel(job_id)
    clock.advance(1)
    assert queue.heartbeat(job) is True  # told to stop
    queue.ack_cancel(job)
    history = [(str(e.kind), e.actor if e.kind == "claimed" else None, e.attempt) for e in queue.events(job_id)]
    assert history == [
        ("enqueued", None, 0),
        ("claimed", "w1", 1),
        ("released", None, 0),
        ("claimed", "w2", 1),
        ("rescued", None, 1),
        ("claimed", "w3", 2),
        ("cancel_requested", None, None),
        ("cancelled", None, 2),
    ]
    assert kinds(queue, job_id).count("claimed") == 3
    # Stored and derived entries alike: an EventKind, so `e.kind is EventKind.RESCUED` holds.
    assert all(type(e.kind) is EventKind for e in queue.events(job_id))
