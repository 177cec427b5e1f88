"""The backend contract: enqueue, claim, heartbeat, completion and fencing, failures and retries."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable

import pytest

import jobq
from jobq import EventKind, JobFilter
from jobq.testing import FakeClock
from jobq.testing.contract.common import C, F, P, R, kinds


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


def test_a_large_batch_keeps_its_order_fields_and_history(queue: jobq.Queue, clock: FakeClock) -> None:
    """More jobs than one statement takes (SQLite: 400 a chunk): every job in order, with the
    fields the call gave, its own payload and its ``enqueued`` event; a bad payload anywhere in a
    batch stores none of it."""
    n = 2_345
    ids = queue.enqueue_many(
        [{"i": i} for i in range(n)], queue="bulk", task="t", priority=4, delay=5.0, max_attempts=7, timeout=2.5
    )
    assert len(set(ids)) == n and ids == sorted(ids)
    for i in (0, 999, 1000, 2000, n - 1):
        job = queue.get(ids[i])
        assert (job.payload, job.queue, job.task, job.priority, job.max_attempts) == ({"i": i}, "bulk", "t", 4, 7)
        assert (job.timeout, job.run_at, job.created_at, job.status) == (2.5, clock.now + 5.0, clock.now, P)
        assert kinds(queue, ids[i]) == ["enqueued"]
    with pytest.raises(jobq.InvalidPayload):
        queue.enqueue_many([{"i": 1}, {"bad": object()}, {"i": 3}], queue="other")
    with pytest.raises(jobq.PayloadTooLarge):
        queue.enqueue_many([{"i": 1}, "x" * (queue.settings.payload_limit_bytes + 1)], queue="other")
    assert queue.count(JobFilter(queues=("other",))) == 0 and queue.count() == n


def test_payload_limits_and_types(queue: jobq.Queue) -> None:
    with pytest.raises(jobq.PayloadTooLarge):
        queue.enqueue("x" * (queue.settings.payload_limit_bytes + 1))
    with pytest.raises(jobq.InvalidPayload):
        queue.enqueue({"when": object()})
    with pytest.raises(jobq.InvalidPayload):
        queue.enqueue({"nan": float("nan")})
    # JSON's object keys are text: {1: "a", "1": "b"} was stored as {"1": "b"}, True as "true".
    for keyed in ({1: "a", "1": "b"}, {"outer": {True: 1}}, [{None: 1}]):
        with pytest.raises(jobq.InvalidPayload, match="has an object key that is not text"):
            queue.enqueue(keyed)
        with pytest.raises(jobq.InvalidPayload, match="has an object key that is not text"):
            queue.enqueue_many(["fine", keyed])
    # A string or a dict is not a list of payloads ("abc" made three jobs "a", "b" and "c").
    for not_a_list in ("abc", b"abc", {"a": 1}):
        with pytest.raises(jobq.InvalidPayload, match="enqueue_many takes a list of payloads"):
            queue.enqueue_many(not_a_list)
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
    assert queue.backend.next_due_at(["default"], clock.now) == pytest.approx(clock.now + 60)
    clock.advance(61)
    job = queue.claim("w")
    assert job is not None and job.id == job_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay": math.inf}, "delay must be a number of seconds, at most 100 years, not inf"),
        ({"delay": math.nan}, "delay must be a number of seconds, at most 100 years, not nan"),
        ({"delay": 1e300}, "delay must be a number of seconds, at most 100 years, not 1e+300"),
        ({"delay": "5"}, "delay must be a number of seconds, at most 100 years, not '5'"),
        ({"run_at": math.inf}, "run_at must be a UNIX time in seconds, at most 100 years ahead, not inf"),
        ({"run_at": math.nan}, "run_at must be a UNIX time in seconds, at most 100 years ahead, not nan"),
        ({"run_at": -1}, "run_at must be a UNIX time in seconds, at most 100 years ahead, not -1"),
        ({"run_at": True}, "run_at must be a UNIX time in seconds, at most 100 years ahead, not True"),
        ({"priority": True}, "priority must be an integer (lower runs first)"),
    ],
)  # fmt: skip
def test_a_due_time_that_is_no_time_is_refused(queue: jobq.Queue, kwargs: dict[str, object], message: str) -> None:
    """A delay or run_at of infinity stored a job that never ran (shown with a defect), a NaN
    delay meant none and a NaN run_at failed in the store (NOT NULL); ``priority=True`` was
    priority 1. Refused in one line, and nothing is stored; a negative delay still means "now"."""
    kept = queue.enqueue("kept", delay=-5)
    assert queue.get(kept).run_at == queue.get(kept).created_at
    with pytest.raises(jobq.InvalidPayload) as raised:
        queue.enqueue("x", **kwargs)  # type: ignore[arg-type]
    assert str(raised.value) == message
    if "delay" in kwargs or "priority" in kwargs:
        with pytest.raises(jobq.InvalidPayload):
            queue.enqueue_many(["x", "y"], **kwargs)  # type: ignore[arg-type]
    assert [j.id for j in queue.list_jobs()] == [kept]


def test_a_lease_or_retry_delay_that_is_no_time_is_refused(queue: jobq.Queue) -> None:
    """``claim(lease=...)`` took any number: NaN stored no lease, infinity or 1e300 one that never
    expired, -1 one expired when granted, and 0 quietly meant the default; ``fail_many(delays=)``
    took NaN or infinity as a retry time. Each is now a ValueError and nothing changes; settings
    built in code are checked like loaded ones."""
    job_id = queue.enqueue({"n": 1})
    for bad in (math.nan, math.inf, -math.inf, 1e300, -1, 0, True, "30"):
        with pytest.raises(ValueError, match="lease must be a number of seconds"):
            queue.claim("w", lease=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="lease must be a number of seconds"):
            queue.claim_many("w", 5, lease=bad)  # type: ignore[arg-type]
    assert queue.get(job_id).status == P
    job = queue.claim("w", lease=30)
    assert job is not None and job.id == job_id
    for bad in (math.nan, math.inf, -1):
        with pytest.raises(ValueError, match="lease must be a number of seconds"):
            queue.heartbeat(job, lease=bad)
        with pytest.raises(ValueError, match="a retry delay must be a number of seconds"):
            queue.fail_many([(job, "boom", True)], delays=[bad])
    assert queue.heartbeat(job, lease=60) is False
    assert queue.get(job_id).status == R
    assert queue.fail_many([(job, "boom", True)], delays=[0]) == [(P, True)]
    for bad in (math.nan, math.inf, 0.0):
        with pytest.raises(jobq.ConfigError, match="lease_seconds"):
            jobq.Queue(settings=dataclasses.replace(queue.settings, lease_seconds=bad))


def test_a_limit_that_is_no_count_is_refused(queue: jobq.Queue) -> None:
    """SQLite reads ``LIMIT -1`` as no limit: ``claim_many(w, -1)`` claimed every due job in one
    transaction and ``latest(limit=-1)`` read the whole table; 1.5 failed in the store and 10**20
    in the driver; a list of ``Page(limit=-1)`` read the whole table too. Each is now a one-line
    ValueError; a claim of 0 jobs is still a claim of none, a list of 0 jobs still a count."""
    ids = queue.enqueue_many([{"n": i} for i in range(3)])
    message = "limit must be a whole number from"
    for bad in (-1, 1.5, 10**20, True, "2"):
        with pytest.raises(ValueError, match=message):
            queue.claim_many("w", bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=message):
            queue.complete_many_and_claim([], "w", bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=message):
            queue.latest(limit=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=message):
            queue.recent_events(limit=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=message):
            queue.workers(limit=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=message):
            queue.list(page=jobq.Page(limit=bad))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=message):
            queue.list_page(page=jobq.Page(limit=bad))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="offset must be a whole number from 0"):
            queue.list_page(page=jobq.Page(offset=bad))  # type: ignore[arg-type]
    assert [queue.get(i).status for i in ids] == [P, P, P]
    assert queue.claim_many("w", 0) == []
    assert len(queue.latest(limit=2)) == 2
    assert queue.list_page(page=jobq.Page(limit=0)) == (3, [])  # a count alone


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


def test_a_result_is_held_to_the_payload_limit(queue: jobq.Queue) -> None:
    """A result had no size limit: a 10 MB one was stored in the job's row, and read back by
    every listing of it. Refused as a payload is; the job stays PROCESSING under its lease,
    for a smaller result or a failure. A worker fails such a job at once (its handler's value
    cannot be kept), as it fails one whose value is not JSON."""
    job_id = queue.enqueue("x")
    job = queue.claim("w")
    assert job is not None
    big = "x" * (queue.settings.payload_limit_bytes + 1)
    with pytest.raises(jobq.PayloadTooLarge, match=r"^result is \d+ bytes( or more)?, over the limit of"):
        queue.complete(job, big)
    with pytest.raises(jobq.PayloadTooLarge, match=r"^result is"):
        queue.complete_many([(job, {"blob": big})])
    assert queue.get(job_id).status is R
    worker = jobq.Worker(queue, {"": lambda ctx: big}, exit_when_idle=True)
    queue.complete(job, {"ok": True})
    second = queue.enqueue("y")
    worker.run()
    failed = queue.get(second)
    assert (failed.status, failed.attempts) == (F, 1)
    assert (failed.last_error or "").startswith("result is ")
    assert queue.get(job_id).result == {"ok": True}


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


def test_the_same_job_twice_in_one_group_completion_completes_once(queue: jobq.Queue) -> None:
    """The same lease twice in one complete_many: the first item completes with its result, the
    second is refused as a second call would be (both were reported True, and the stored result
    was either one)."""
    ids = queue.enqueue_many(["a", "b"])
    first, second = queue.claim_many("w", 2)
    assert queue.complete_many([(first, "kept"), (second, None), (first, "dropped")]) == [True, True, False]
    assert queue.get(ids[0]).result == "kept"
    assert "stale_write_refused" in kinds(queue, ids[0])
    assert "stale_write_refused" not in kinds(queue, ids[1])
    third = queue.enqueue("c")
    job = queue.claim("w")
    assert job is not None and job.id == third
    # A repeat (the first call's reply lost) is recognised as applied, each item alike.
    assert queue.complete_many([(job, 1), (job, 2)], repeat=True) == [True, True]
    assert queue.get(third).result == 1


def test_a_group_completion_keeps_each_result_and_note_and_fences_each_row(queue: jobq.Queue, clock: FakeClock) -> None:
    """A group commit (SQLite: one set-based statement) stores each job's own result, note and
    finish time, refuses only the items whose lease is gone, whatever their order in the call, and
    a repeat of the committed group is recognised as applied, nothing refused."""
    ids = queue.enqueue_many([{"n": n} for n in range(6)])
    jobs = queue.claim_many("w", 6)
    assert [j.id for j in jobs] == ids
    queue.complete(jobs[3])  # its lease is spent: completing with it again is a stale write
    results = [{"nested": [1, {"k": "v"}]}, "text é ✓ \u0000", None, 1, 2.5, [True, None]]
    notes = [None, "kept", None, None, None, None]
    clock.advance(3)
    order = [5, 0, 3, 2, 1, 4]  # not in id order: each item keeps its own result
    done = queue.complete_many([(jobs[i], results[i]) for i in order], notes=[notes[i] for i in order])
    assert done == [i != 3 for i in order]
    for i, job_id in enumerate(ids):
        row = queue.get(job_id)
        assert row.status == C and row.finished_at is not None
        if i != 3:
            assert (row.result, row.finished_at) == (results[i], clock.now), i
    assert [e.detail.get("note") for e in queue.events(ids[1]) if e.kind == "completed"] == ["kept"]
    assert "stale_write_refused" in kinds(queue, ids[3])
    again = [(jobs[i], results[i]) for i in (0, 2, 4)]
    assert queue.complete_many(again, repeat=True) == [True, True, True]
    assert all("stale_write_refused" not in kinds(queue, ids[i]) for i in (0, 2, 4))


def test_complete_and_claim_in_one_call(queue: jobq.Queue, clock: FakeClock) -> None:
    """A worker's completions and its next claim share one transaction; each part behaves as
    ``complete_many`` and ``claim_many`` do: fenced per job, the next jobs in claim order with
    fresh leases."""
    first, second, third, fourth = queue.enqueue_many(["a", "b", "c", "d"])
    stale, valid = queue.claim_many("w", 2)
    assert (stale.id, valid.id) == (first, second)
    queue.complete(stale)  # its lease is spent: completing with it again is a stale write
    clock.advance(1)
    done, claimed = queue.complete_many_and_claim([(stale, None), (valid, {"n": 1})], "w", 1, lease=30)
    assert done == [False, True]
    assert [j.id for j in claimed] == [third]
    assert claimed[0].status == R and claimed[0].lease_owner == "w" and claimed[0].lease_token
    assert claimed[0].lease_expires_at == pytest.approx(clock.now + 30)
    assert queue.get(second).status == C and queue.get(second).result == {"n": 1}
    assert queue.get(fourth).status == P
    assert "stale_write_refused" in kinds(queue, first)
    # Nothing to complete, or nothing to claim: each part on its own.
    assert queue.complete_many_and_claim([], "w", 1) == ([], [queue.get(fourth)])
    last = queue.get(fourth)
    assert queue.complete_many_and_claim([(last, None)], "w", 5) == ([True], [])
    assert queue.counts() == {"PENDING": 0, "PROCESSING": 1, "COMPLETED": 3, "FAILED": 0, "CANCELLED": 0}


def test_complete_and_claim_repeated_after_an_unknown_outcome(queue: jobq.Queue) -> None:
    """Repeated with ``repeat=True`` (its first try raised while committing), a completion that
    had committed is recognised, and the claim part claims anew."""
    a, b = queue.enqueue_many(["a", "b"])
    job = queue.claim("w")
    assert job is not None and job.id == a
    done, claimed = queue.complete_many_and_claim([(job, None)], "w", 1)
    assert done == [True] and [j.id for j in claimed] == [b]
    assert queue.complete_many_and_claim([(job, None)], "w", 1, repeat=True) == ([True], [])
    assert "stale_write_refused" not in kinds(queue, a)


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
