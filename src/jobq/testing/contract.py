"""The backend contract: every backend must pass these tests unchanged (River ships the same
idea as ``riverdrivertest``).

They go through the public facade (``jobq.Queue``) with a fake clock: FakeClock, so lease expiry and
backoff need no sleeping. A behaviour change extends this suite.

To run it against a backend of your own, import its tests into a test module and provide three
pytest fixtures: ``clock`` (a :class:`jobq.testing.FakeClock`), ``queue`` (a ``jobq.Queue`` on a
fresh, empty store, driven by that clock: FakeClock) and ``open_queue`` (a function opening more handles on
the same store, as other processes would)::

    # tests/test_my_backend.py
    from jobq.testing.contract import *  # noqa: F403

    @pytest.fixture
    def queue(clock: FakeClock): ...
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

import pytest

import jobq
from jobq import EventKind, JobFilter, JobStatus, Page
from jobq.backends.base import WorkerInfo
from jobq.testing import FakeClock
from jobq.worker.rescuer import Rescuer, process_table_id

P, R, C, F, X = (
    JobStatus.PENDING,
    JobStatus.PROCESSING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)


def kinds(q: jobq.Queue, job_id: int) -> list[str]:
    return [str(e.kind) for e in q.events(job_id)]


# -- enqueue ------------------------------------------------------------------------------------
def test_enqueue_and_get_round_trip(queue: jobq.Queue, clock: FakeClock) -> None:
    payload = {"path": "data/files/ä.txt", "n": [1, 2.5, None, True]}
    job_id = queue.enqueue(payload, queue="files", task="stamp", priority=3, max_attempts=5, timeout=9.0)
    job = queue.get(job_id)
    assert (job.id, job.queue, job.task, job.payload) == (job_id, "files", "stamp", payload)
    assert (job.status, job.priority, job.attempts, job.max_attempts, job.run) == (P, 3, 0, 5, 1)
    assert job.timeout == 9.0
    assert job.created_at == job.run_at == clock.now
    assert job.lease_token is None and job.started_at is None and job.finished_at is None
    assert kinds(queue, job_id) == ["enqueued"]


def test_ids_increase(queue: jobq.Queue) -> None:
    ids = [queue.enqueue({"i": i}) for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5


def test_idempotency_key_returns_existing_job(queue: jobq.Queue) -> None:
    first = queue.enqueue({"a": 1}, key="k1")
    again = queue.enqueue({"a": 2}, key="k1")
    assert first == again
    assert queue.get(first).payload == {"a": 1}
    assert queue.count() == 1
    many = queue.enqueue_many([{"x": 1}, {"x": 2}, {"x": 3}], keys=["k1", "k2", "k2"])
    assert many[0] == first and many[1] == many[2] != first
    assert queue.count() == 2


def test_enqueue_many_in_order(queue: jobq.Queue) -> None:
    ids = queue.enqueue_many([{"i": i} for i in range(50)], queue="bulk")
    assert len(ids) == 50 and ids == sorted(ids)
    assert [queue.get(i).payload["i"] for i in ids[:3]] == [0, 1, 2]
    assert queue.count(JobFilter(queues=("bulk",))) == 50


def test_payload_limits_and_types(queue: jobq.Queue) -> None:
    with pytest.raises(jobq.PayloadTooLarge):
        queue.enqueue("x" * (queue.settings.payload_limit_bytes + 1))
    with pytest.raises(jobq.InvalidPayload):
        queue.enqueue({"when": object()})
    with pytest.raises(jobq.InvalidPayload):
        queue.enqueue({"nan": float("nan")})
    assert queue.count() == 0


# -- claim --------------------------------------------------------------------------------------
def test_claim_order_priority_run_at_id(queue: jobq.Queue, clock: FakeClock) -> None:
    low = queue.enqueue("low", priority=5)
    high_later = queue.enqueue("high-later", priority=1, run_at=clock.now - 1)
    high_earlier = queue.enqueue("high-earlier", priority=1, run_at=clock.now - 5)
    normal = queue.enqueue("normal")
    order = [queue.claim("w").payload for _ in range(4)]  # type: ignore[union-attr]
    assert order == ["normal", "high-earlier", "high-later", "low"]
    assert queue.claim("w") is None
    assert {low, high_later, high_earlier, normal} == {j.id for j in queue.list(JobFilter(statuses=(R,)))}


def test_delayed_job_waits_until_due(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue("later", delay=60)
    assert queue.claim("w") is None
    assert queue.backend.next_due_at(["default"]) == pytest.approx(clock.now + 60)
    clock.advance(61)
    job = queue.claim("w")
    assert job is not None and job.id == job_id


def test_claim_hands_out_a_lease(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue({"a": 1})
    job = queue.claim("w1", lease=30)
    assert job is not None and job.id == job_id
    assert (job.status, job.attempts, job.lease_owner) == (R, 1, "w1")
    assert job.lease_expires_at == pytest.approx(clock.now + 30)
    assert job.started_at == clock.now and job.lease_token
    assert kinds(queue, job_id) == ["enqueued", "claimed"]
    assert queue.events(job_id)[1].actor == "w1"


def test_claim_many_distinct_tokens(queue: jobq.Queue) -> None:
    queue.enqueue_many([{"i": i} for i in range(10)])
    jobs = queue.claim_many("w", 4)
    assert len(jobs) == 4
    assert len({j.lease_token for j in jobs}) == 4
    assert [j.payload["i"] for j in jobs] == [0, 1, 2, 3]
    assert len(queue.claim_many("w", 100)) == 6


def test_queues_are_separate(queue: jobq.Queue) -> None:
    queue.enqueue("a", queue="a")
    b = queue.enqueue("b", queue="b")
    job = queue.claim("w", queue="b")
    assert job is not None and job.id == b
    assert queue.claim("w", queue="b") is None
    assert queue.claim("w", queue="c") is None
    assert len(queue.claim_many("w", 5, queue=["a", "b"])) == 1


def test_no_job_claimed_twice_by_concurrent_handles(queue: jobq.Queue, open_queue: Callable[[], jobq.Queue]) -> None:
    queue.enqueue_many([{"i": i} for i in range(200)])
    handles = [open_queue() for _ in range(4)]
    got: list[list[int]] = [[] for _ in handles]

    def drain(index: int) -> None:
        while True:
            jobs = handles[index].claim_many(f"w{index}", 3)
            if not jobs:
                return
            got[index].extend(j.id for j in jobs)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = [i for ids in got for i in ids]
    assert len(claimed) == 200 and len(set(claimed)) == 200


# -- heartbeat, complete, fencing ---------------------------------------------------------------
def test_heartbeat_extends_lease(queue: jobq.Queue, clock: FakeClock) -> None:
    queue.enqueue("x")
    job = queue.claim("w", lease=10)
    assert job is not None
    clock.advance(8)
    assert queue.heartbeat(job, lease=10) is False
    assert queue.get(job.id).lease_expires_at == pytest.approx(clock.now + 10)


def test_complete_records_result(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue("x")
    job = queue.claim("w")
    assert job is not None
    clock.advance(2)
    queue.complete(job, {"bytes": 12})
    done = queue.get(job_id)
    assert (done.status, done.result, done.finished_at) == (C, {"bytes": 12}, clock.now)
    assert done.lease_token is None
    assert kinds(queue, job_id) == ["enqueued", "claimed", "completed"]


def test_fencing_stale_worker_is_refused(queue: jobq.Queue, clock: FakeClock) -> None:
    """A claims, its lease runs out, B claims and completes; A's late writes change nothing."""
    job_id = queue.enqueue("x", max_attempts=3)
    a = queue.claim("A", lease=5)
    assert a is not None
    clock.advance(6)
    rescued = queue.rescue_expired()
    assert [(r.job_id, r.outcome, r.previous_owner) for r in rescued] == [(job_id, "rescued", "A")]
    clock.advance(queue.settings.backoff_cap_seconds + 1)
    b = queue.claim("B", lease=5)
    assert b is not None and b.id == job_id and b.lease_token != a.lease_token
    for late in (lambda: queue.complete(a), lambda: queue.heartbeat(a), lambda: queue.fail(a, "boom")):
        with pytest.raises(jobq.LeaseLost):
            late()
    current = queue.get(job_id)
    assert (current.status, current.lease_owner, current.lease_token) == (R, "B", b.lease_token)
    queue.complete(b)
    with pytest.raises(jobq.LeaseLost):
        queue.complete(a)
    assert queue.get(job_id).status == C
    refused = [e for e in queue.events(job_id) if e.kind == EventKind.STALE_WRITE_REFUSED]
    assert {e.detail["operation"] for e in refused} == {"complete", "heartbeat", "fail"}
    assert all(e.actor == "A" for e in refused)


def test_complete_twice_is_refused(queue: jobq.Queue) -> None:
    queue.enqueue("x")
    job = queue.claim("w")
    assert job is not None
    queue.complete(job)
    with pytest.raises(jobq.LeaseLost):
        queue.complete(job)


def test_complete_many_group_commit_fenced_per_job(queue: jobq.Queue, clock: FakeClock) -> None:
    queue.enqueue_many(["a", "b", "c"])
    jobs = queue.claim_many("w", 3, lease=5)
    clock.advance(6)
    queue.rescue_expired()
    clock.advance(queue.settings.backoff_cap_seconds + 1)
    fresh = queue.claim("other", lease=60)
    assert fresh is not None
    stale = next(j for j in jobs if j.id == fresh.id)
    assert queue.complete_many([(stale, None), (fresh, 1)]) == [False, True]
    assert queue.get(fresh.id).status == C


# -- failures and retries -----------------------------------------------------------------------
def test_fail_retries_with_backoff_then_fails(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue("x", max_attempts=2)
    job = queue.claim("w")
    assert job is not None
    assert queue.fail(job, "first error") == P
    after = queue.get(job_id)
    base = queue.settings.backoff_base_seconds
    assert after.status == P and after.last_error == "first error"
    assert clock.now + base * 0.5 <= after.run_at <= clock.now + base
    assert queue.claim("w") is None or base * 0.5 == 0
    clock.advance(base + 0.01)
    job = queue.claim("w")
    assert job is not None and job.attempts == 2
    assert queue.fail(job, "second error") == F
    final = queue.get(job_id)
    assert (final.status, final.last_error, final.finished_at) == (F, "second error", clock.now)
    assert kinds(queue, job_id) == ["enqueued", "claimed", "retry_scheduled", "claimed", "failed"]


def test_fail_without_retry(queue: jobq.Queue) -> None:
    job_id = queue.enqueue("x", max_attempts=5)
    job = queue.claim("w")
    assert job is not None
    assert queue.fail(job, "bad path", retry=False) == F
    assert queue.get(job_id).status == F


# -- rescue -------------------------------------------------------------------------------------
def test_rescue_outcomes(queue: jobq.Queue, clock: FakeClock) -> None:
    again = queue.enqueue("again", max_attempts=2)
    spent = queue.enqueue("spent", max_attempts=1)
    stopped = queue.enqueue("stopped", max_attempts=3)
    alive = queue.enqueue("alive", max_attempts=1)
    jobs = {j.id: j for j in queue.claim_many("dead", 3, lease=5)}
    keeper = queue.claim("live", lease=5)
    assert keeper is not None and keeper.id == alive and set(jobs) == {again, spent, stopped}
    queue.cancel(stopped, actor="op")
    outcomes: dict[int, str] = {}
    for _ in range(10):  # a job that keeps heartbeating is never rescued, however long it runs
        clock.advance(4)
        queue.heartbeat(keeper, lease=5)
        outcomes.update({r.job_id: r.outcome for r in queue.rescue_expired()})
    assert outcomes == {again: "rescued", spent: "expired", stopped: "cancelled"}
    statuses = {i: queue.get(i).status for i in (again, spent, stopped, alive)}
    assert statuses == {again: P, spent: F, stopped: X, alive: R}
    assert "lease expired" in (queue.get(spent).last_error or "")
    assert kinds(queue, again)[-1] == "rescued" and kinds(queue, spent)[-1] == "expired"


def test_rescue_is_conditional_on_the_lease_it_read(queue: jobq.Queue, clock: FakeClock) -> None:
    queue.enqueue("x")
    job = queue.claim("w", lease=5)
    assert job is not None
    clock.advance(1)
    queue.complete(job)
    clock.advance(10)
    assert queue.rescue_expired() == []
    assert queue.get(job.id).status == C


def test_release_returns_job_without_counting_attempt(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue("x")
    job = queue.claim("w")
    assert job is not None
    assert queue.release(job) is True
    released = queue.get(job_id)
    assert (released.status, released.attempts, released.run_at) == (P, 0, clock.now)
    assert queue.release(job) is False
    assert kinds(queue, job_id)[-2:] == ["released", "stale_write_refused"]


# -- operator actions ---------------------------------------------------------------------------
def test_cancel_pending_and_failed(queue: jobq.Queue) -> None:
    pending = queue.enqueue("p")
    result = queue.cancel(pending, actor="alice")
    assert (result.ok, result.status) == (True, X)
    assert queue.get(pending).status == X
    event = queue.events(pending)[-1]
    assert (event.kind, event.actor) == ("cancelled", "alice")
    failed = queue.enqueue("f")
    job = queue.claim("w")
    assert job is not None
    queue.fail(job, "nope", retry=False)
    assert queue.cancel(failed).status == X


def test_cancel_running_is_cooperative(queue: jobq.Queue) -> None:
    job_id = queue.enqueue("r")
    job = queue.claim("w")
    assert job is not None
    result = queue.cancel(job_id, actor="bob")
    assert result.ok and result.status == R and "requested" in result.message
    assert queue.get(job_id).cancel_requested is True
    assert queue.heartbeat(job) is True
    assert queue.ack_cancel(job) is True
    assert queue.get(job_id).status == X
    assert kinds(queue, job_id)[-2:] == ["cancel_requested", "cancelled"]


def test_illegal_actions_change_nothing(queue: jobq.Queue) -> None:
    job_id = queue.enqueue("x")
    with pytest.raises(jobq.InvalidTransition, match="cannot resubmit a job that is PENDING"):
        queue.resubmit(job_id)
    job = queue.claim("w")
    assert job is not None
    queue.complete(job)
    with pytest.raises(jobq.InvalidTransition):
        queue.cancel(job_id)
    with pytest.raises(jobq.JobNotFound):
        queue.cancel(987654)
    with pytest.raises(jobq.JobNotFound):
        queue.resubmit(987654)
    assert queue.get(job_id).status == C
    assert kinds(queue, job_id) == ["enqueued", "claimed", "completed"]


def test_resubmit_starts_a_new_run(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue("x", max_attempts=1)
    job = queue.claim("w")
    assert job is not None
    queue.fail(job, "boom")
    clock.advance(5)
    result = queue.resubmit(job_id, actor="carol")
    assert (result.ok, result.status) == (True, P)
    again = queue.get(job_id)
    assert (again.status, again.attempts, again.run, again.run_at) == (P, 0, 2, clock.now)
    assert again.finished_at is None
    assert queue.events(job_id)[-1].actor == "carol"
    job2 = queue.claim("w")
    assert job2 is not None and job2.run == 2
    with pytest.raises(jobq.LeaseLost):
        queue.complete(job)
    queue.complete(job2)
    assert queue.resubmit(job_id).status == P  # COMPLETED -> PENDING too


def test_bulk_actions_by_ids_and_filter(queue: jobq.Queue) -> None:
    a = queue.enqueue_many(["a1", "a2", "a3"], queue="a")
    b = queue.enqueue("b1", queue="b")
    results = queue.cancel_many(where=JobFilter(statuses=(P,), queues=("a",)), actor="ops")
    assert sorted(r.job_id for r in results if r.ok) == sorted(a)
    assert queue.get(b).status == P
    mixed = queue.resubmit_many(ids=[a[0], b, 424242], actor="ops")
    by_id = {r.job_id: r for r in mixed}
    assert by_id[a[0]].ok and by_id[a[0]].status == P
    assert not by_id[b].ok and by_id[b].status == P and "cannot resubmit" in by_id[b].message
    assert not by_id[424242].ok and by_id[424242].status is None
    assert queue.cancel_many(ids=[]) == []
    assert queue.get(b).status == P


# -- reads --------------------------------------------------------------------------------------
def test_list_filter_search_sort_page(queue: jobq.Queue, clock: FakeClock) -> None:
    for i in range(30):
        queue.enqueue({"path": f"data/files/f{i:02d}.txt"}, queue="even" if i % 2 == 0 else "odd")
        clock.advance(1)
    evens = queue.list(JobFilter(queues=("even",)), Page(limit=100))
    assert len(evens) == 15 and all(j.queue == "even" for j in evens)
    assert [j.id for j in evens] == sorted((j.id for j in evens), reverse=True)
    found = queue.list(JobFilter(search="F07"))
    assert [j.payload["path"] for j in found] == ["data/files/f07.txt"]
    assert queue.list(JobFilter(search="100%_")) == []
    page1 = queue.list(JobFilter(), Page(sort="created_at", descending=False, limit=10, offset=0))
    page2 = queue.list(JobFilter(), Page(sort="created_at", descending=False, limit=10, offset=10))
    assert [j.payload["path"] for j in page1][:2] == ["data/files/f00.txt", "data/files/f01.txt"]
    assert page1[-1].created_at < page2[0].created_at
    assert queue.count(JobFilter(search="f1")) == 10
    with pytest.raises(jobq.ConfigError):
        queue.list(JobFilter(), Page(sort="payload; DROP TABLE jobs"))


def test_counts_and_stats(queue: jobq.Queue, clock: FakeClock) -> None:
    assert queue.counts() == {s.value: 0 for s in JobStatus}
    queue.enqueue_many(["a", "b", "c", "d"])
    clock.advance(10)
    done = queue.claim("w")
    assert done is not None
    queue.complete(done)
    running = queue.claim("w", lease=5)
    assert running is not None
    counts = queue.counts()
    assert counts == {"PENDING": 2, "PROCESSING": 1, "COMPLETED": 1, "FAILED": 0, "CANCELLED": 0}
    clock.advance(6)
    stats = queue.stats()
    assert stats.counts == counts
    assert stats.by_queue["default"]["PENDING"] == 2
    assert stats.oldest_pending_at == pytest.approx(clock.now - 16)
    assert stats.completed_last_minute == 1
    assert stats.expired_leases == 1


def test_history_buckets(queue: jobq.Queue, clock: FakeClock) -> None:
    start = clock.now
    queue.enqueue_many(["a", "b", "c"])
    clock.advance(30)
    job = queue.claim("w")
    assert job is not None
    clock.advance(5)
    queue.complete(job)
    clock.advance(90)
    buckets = queue.history(window=180, bucket=60)
    assert len(buckets) == 3
    assert sum(b.enqueued for b in buckets) == 3
    assert sum(b.completed for b in buckets) == 1
    finished = start + 35
    first = next(b for b in buckets if b.start <= finished < b.start + 60)
    assert first.completed == 1 and first.claimed == 1 and first.run_p50 == pytest.approx(5)
    assert first.wait_p50 == pytest.approx(30)
    assert buckets[-1].depth == 2


def test_purge_old_finished_jobs(queue: jobq.Queue, clock: FakeClock) -> None:
    old = queue.enqueue("old")
    job = queue.claim("w")
    assert job is not None
    queue.complete(job)
    clock.advance(8 * 86400)
    fresh = queue.enqueue("fresh")
    job2 = queue.claim("w")
    assert job2 is not None
    queue.complete(job2)
    waiting = queue.enqueue("waiting")
    assert queue.purge(older_than=7 * 86400, statuses=[JobStatus.COMPLETED]) == 1
    with pytest.raises(jobq.JobNotFound):
        queue.get(old)
    assert queue.events(old) == []
    assert queue.get(fresh).status == C and queue.get(waiting).status == P
    assert queue.enqueue("next") > waiting  # ids are never reused


# -- workers and wake-up ------------------------------------------------------------------------
def test_worker_registry(queue: jobq.Queue, clock: FakeClock) -> None:
    info = WorkerInfo(
        id="host:1:abc",
        name="consumer1",
        host="host",
        pid=1,
        queues=("default",),
        started_at=clock.now,
        last_seen_at=clock.now,
    )
    queue.backend.register_worker(info)
    clock.advance(5)
    queue.backend.worker_seen(info.id, clock.now, [7, 8], 3, 1)
    (seen,) = queue.workers()
    assert (seen.name, seen.current_jobs, seen.jobs_done, seen.jobs_failed) == ("consumer1", (7, 8), 3, 1)
    assert seen.last_seen_at == clock.now and seen.stopped_at is None
    queue.backend.worker_stopped(info.id, clock.now)
    (stopped,) = queue.workers()
    assert stopped.stopped_at == clock.now and stopped.current_jobs == ()


def test_listener_wakes_on_enqueue(queue: jobq.Queue, open_queue: Callable[[], jobq.Queue]) -> None:
    now = time.time()
    listener = queue.backend.listener("w-listen", ["default"])
    try:
        queue.backend.register_worker(
            WorkerInfo(
                id="w-listen",
                name="w",
                host="h",
                pid=1,
                queues=("default",),
                started_at=now,
                last_seen_at=now,
                wake_address=listener.address,
            )
        )
        producer = jobq.Queue(settings=queue.settings)  # real clock: the registry is "live"
        try:
            listener.wait(0)  # drain anything pending
            producer.enqueue("wake up")
            deadline = time.monotonic() + 10
            woke = False
            while not woke and time.monotonic() < deadline:
                woke = listener.wait(0.5)
            assert woke
        finally:
            producer.close()
    finally:
        listener.close()


def test_jobs_of_a_gone_worker_are_rescued_before_their_lease_expires(queue: jobq.Queue, clock: FakeClock) -> None:
    gone_job = queue.enqueue("held by a dead worker")
    live_job = queue.enqueue("held by a live worker")
    dead = queue.claim("dead-worker", lease=300)
    live = queue.claim("live-worker", lease=300)
    assert dead is not None and live is not None and dead.id == gone_job and live.id == live_job
    results = queue.rescue_expired(actor="w", gone_owners=["dead-worker"])
    assert [(r.job_id, r.outcome) for r in results] == [(gone_job, "rescued")]
    assert "exited" in (queue.get(gone_job).last_error or "")
    assert queue.get(live_job).status == R
    with pytest.raises(jobq.LeaseLost):
        queue.complete(dead)


# -- hardening: repeated writes, late clocks, stalls, bad rows -----------------------------------
def test_a_repeated_write_that_had_committed_is_recognised_not_refused(queue: jobq.Queue) -> None:
    """After a commit whose reply was lost, the worker repeats its write with ``repeat=True``."""
    done_id, failed_id, retried_id = queue.enqueue_many(["c", "f", "r"])
    jobs = {j.id: j for j in queue.claim_many("w", 3)}
    queue.complete(jobs[done_id], {"ok": 1})
    queue.fail(jobs[failed_id], "bad", retry=False)
    queue.fail(jobs[retried_id], "flaky")
    assert queue.complete_many([(jobs[done_id], {"ok": 1})], repeat=True) == [True]
    assert queue.fail_many([(jobs[failed_id], "bad", False), (jobs[retried_id], "flaky", True)], repeat=True) == [
        (F, True),
        (P, True),
    ]
    for job_id in (done_id, failed_id, retried_id):
        assert "stale_write_refused" not in kinds(queue, job_id)
    assert kinds(queue, done_id).count("completed") == 1
    # Without repeat a second write with the same lease is refused, as any stale one.
    with pytest.raises(jobq.LeaseLost):
        queue.complete(jobs[done_id])


def test_a_repeat_does_not_accept_a_write_that_another_lease_superseded(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue("x")
    a = queue.claim("A", lease=5)
    assert a is not None
    clock.advance(6)
    queue.rescue_expired()
    clock.advance(queue.settings.backoff_cap_seconds + 1)
    b = queue.claim("B", lease=60)
    assert b is not None and b.id == job_id
    queue.complete(b)
    assert queue.complete_many([(a, None)], repeat=True) == [False]
    assert kinds(queue, job_id)[-1] == "stale_write_refused"


def test_completion_clears_the_error_of_an_earlier_attempt(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue("x", max_attempts=3)
    first = queue.claim("w")
    assert first is not None
    queue.fail(first, "boom")
    assert queue.get(job_id).last_error == "boom"
    clock.advance(queue.settings.backoff_cap_seconds + 1)
    second = queue.claim("w")
    assert second is not None
    queue.complete(second)
    done = queue.get(job_id)
    assert (done.status, done.last_error) == (C, None)
    assert queue.events(job_id)[2].detail["error"] == "boom"  # the history keeps it


def test_completion_note_is_recorded(queue: jobq.Queue) -> None:
    job_id = queue.enqueue("x")
    job = queue.claim("w")
    assert job is not None
    assert queue.complete_many([(job, 1)], notes=["a cancel came too late"]) == [True]
    assert queue.events(job_id)[-1].detail == {"note": "a cancel came too late"}


def test_worker_writes_read_the_clock_when_they_happen(queue: jobq.Queue, clock: FakeClock) -> None:
    """The time is read inside the transaction (after any wait for a lock), not before."""
    queue.enqueue("x")
    calls = []

    def later() -> float:
        calls.append(clock.now)
        return clock.now

    queue.clock = later
    job = queue.claim("w", lease=10)
    assert job is not None and calls  # the backend asked for the time itself
    assert job.lease_expires_at == pytest.approx(clock.now + 10)


def test_rescue_cutoff_spares_leases_that_expired_after_it(queue: jobq.Queue, clock: FakeClock) -> None:
    early, late = queue.enqueue_many(["early", "late"])
    a = queue.claim("A", lease=5)
    clock.advance(3)
    b = queue.claim("B", lease=5)
    assert a is not None and b is not None and (a.id, b.id) == (early, late)
    clock.advance(10)  # both leases expired: A's at +5, B's at +8
    start = clock.now
    rescued = queue.rescue_expired(cutoff=lambda now: start - 13 + 6)  # a stall began at +6
    assert [r.job_id for r in rescued] == [early]
    assert queue.get(late).status == R
    assert queue.rescue_expired() and queue.get(late).status == P


def test_enqueue_refuses_too_deep_a_payload(queue: jobq.Queue) -> None:
    from jobq.payloads import JSON_DEPTH_LIMIT

    deep: object = "leaf"
    for _ in range(990):
        deep = [deep]
    with pytest.raises(jobq.InvalidPayload, match="deeper than"):
        queue.enqueue(deep)
    ok: object = 1
    for _ in range(JSON_DEPTH_LIMIT):
        ok = {"k": ok}
    job_id = queue.enqueue(ok)
    assert queue.get(job_id).payload == ok and queue.get(job_id).defect is None
    with pytest.raises(jobq.InvalidPayload):
        queue.enqueue({"k": ok})
    assert queue.count() == 1


# -- liveness by pid: only within our own process table ----------------------------------------
DEAD_PID = 2**22 + 1
"""Above Linux's PID_MAX_LIMIT (2**22): no process has it, so ``kill(pid, 0)`` always says gone."""


def _worker(worker_id: str, host: str, pid: int, process_table: str | None, now: float) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        name=worker_id,
        host=host,
        pid=pid,
        queues=("default",),
        started_at=now,
        last_seen_at=now,
        process_table=process_table,
    )


def test_a_dead_pid_means_gone_only_in_our_own_process_table(queue: jobq.Queue, clock: FakeClock) -> None:
    """Every row has this host's name and (but one) a pid no process has. Only rows of our process
    table (same boot, same PID namespace) are pid-checked: another container's row (other PID
    namespace), another boot's, or one of unknown identity waits for its lease. The host name
    plays no part. PostgreSQL (many hosts) never checks pids at all."""
    ours = process_table_id()
    if ours is None:
        pytest.skip("no /proc here: no process-table identity, so pids are never checked")
    boot_id, namespace = ours.split("/")
    host = socket.gethostname()
    rows = {
        "ours-dead": (host, DEAD_PID, ours),
        "ours-renamed-dead": ("another-uts-name", DEAD_PID, ours),
        "ours-alive": (host, os.getpid(), ours),
        "other-namespace-dead": (host, DEAD_PID, f"{boot_id}/pid:[1]"),
        "other-boot-dead": (host, DEAD_PID, f"00000000-0000-0000-0000-000000000000/{namespace}"),
        "unknown-dead": (host, DEAD_PID, None),
    }
    held = {}
    for worker_id, (name, pid, table) in rows.items():
        queue.backend.register_worker(_worker(worker_id, name, pid, table, clock.now))
        queue.enqueue(worker_id)
        job = queue.claim(worker_id, lease=300)
        assert job is not None
        held[worker_id] = job.id
    assert {w.id: w.process_table for w in queue.workers()} == {k: v[2] for k, v in rows.items()}

    rescuer = Rescuer(queue, "the-rescuer", 1.0)
    gone = ["ours-dead", "ours-renamed-dead"] if queue.backend.single_host else []
    assert sorted(rescuer.gone_workers()) == gone
    rescuer.tick()
    assert sorted(w.id for w in queue.workers() if w.stopped_at is not None) == gone
    assert {k: queue.get(i).status for k, i in held.items()} == {k: P if k in gone else R for k in held}


def test_errors_are_capped_in_the_job_and_in_each_event(queue: jobq.Queue) -> None:
    from jobq.backends.common import EVENT_ERROR_MAX_CHARS
    from jobq.queue import ERROR_MAX_CHARS

    job_id = queue.enqueue("x", max_attempts=2)
    job = queue.claim("w")
    assert job is not None
    error = "Traceback (most recent call last):\n" + "x" * 100_000 + "\nValueError: the cause"
    queue.fail(job, error)
    stored = queue.get(job_id).last_error or ""
    assert len(stored) <= ERROR_MAX_CHARS and stored.endswith("ValueError: the cause")
    detail = queue.events(job_id)[-1].detail["error"]
    assert len(detail) <= EVENT_ERROR_MAX_CHARS and detail.endswith("ValueError: the cause")
    assert "characters cut" in detail


def test_out_of_range_numbers_are_refused_in_one_line(queue: jobq.Queue) -> None:
    with pytest.raises(jobq.JobNotFound):
        queue.get(10**20)
    with pytest.raises(jobq.InvalidPayload, match="priority"):
        queue.enqueue("x", priority=2**31)
    with pytest.raises(jobq.InvalidPayload, match="max_attempts"):
        queue.enqueue("x", max_attempts=2**40)
    assert queue.count() == 0
