"""The backend contract: rescue, operator actions, reads."""

from __future__ import annotations

import math
from typing import Any

import pytest

import jobq
from jobq import ActionResult, JobFilter, JobStatus, Page
from jobq.testing import FakeClock
from jobq.testing.contract.common import C, F, P, R, X, kinds


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


def test_a_repeated_release_is_recognised_until_the_job_is_claimed_again(queue: jobq.Queue) -> None:
    """A give-back written again as a repeat (its first try committed, its reply lost) is
    recognised as done: one ``released`` event, the attempt given back once. Once another worker
    has claimed the job, the same repeat is refused and the new claim keeps the job."""
    job_id = queue.enqueue("x", max_attempts=2)
    job = queue.claim("w1")
    assert job is not None
    assert queue.release_many([job], "worker shut down") == [True]
    assert queue.release_many([job], "worker shut down", repeat=True) == [True]
    assert (queue.get(job_id).status, queue.get(job_id).attempts) == (P, 0)
    assert kinds(queue, job_id) == ["enqueued", "claimed", "released"]
    again = queue.claim("w2")
    assert again is not None and again.id == job_id and again.attempts == 1
    assert queue.release_many([job], "worker shut down", repeat=True) == [False]
    stored = queue.get(job_id)
    assert (stored.status, stored.lease_owner, stored.attempts) == (R, "w2", 1)
    assert kinds(queue, job_id)[-1] == "stale_write_refused"
    queue.complete(again)


def test_release_of_a_job_whose_cancel_was_requested_cancels_it(queue: jobq.Queue) -> None:
    """A worker that gives back a running job (at shutdown) whose cancel an operator requested
    ends it CANCELLED, as the rescuer would: released, it was claimed and run again, the request
    dropped by the next claim. A repeat of that release (its reply lost) is recognised, not refused."""
    job_id, other_id = queue.enqueue("asked to stop"), queue.enqueue("not asked")
    job, other = queue.claim("w"), queue.claim("w")
    assert job is not None and other is not None and job.id == job_id
    assert queue.cancel(job_id, actor="alice").ok
    assert queue.release_many([job, other], reason="worker shut down") == [True, True]
    assert (queue.get(job_id).status, queue.get(other_id).status) == (X, P)
    event = queue.events(job_id)[-1]
    assert (event.kind, event.actor, event.detail["by"], event.detail["reason"]) == ("cancelled", "w", "worker",
                                                                                    "worker shut down")  # fmt: skip
    again = queue.claim("w2")
    assert again is not None and again.id == other_id  # the cancelled job is not run again
    assert queue.release_many([job], repeat=True) == [True]
    assert "stale_write_refused" not in kinds(queue, job_id)
    assert queue.release(job) is False  # not a repeat: refused, as any late write
    assert kinds(queue, job_id)[-1] == "stale_write_refused"


def test_a_failed_attempt_of_a_job_whose_cancel_was_requested_is_not_retried(queue: jobq.Queue) -> None:
    """An operator asked to cancel a running job, and its handler then failed with attempts left:
    the job ends CANCELLED (a ``cancelled`` event by the worker, with the error), not PENDING,
    where its next claim ran it again and dropped the request. One job alone (PostgreSQL's
    one-statement write) and a batch; a repeat after a lost reply is recognised."""
    asked, plain, alone = (queue.enqueue(name, max_attempts=3) for name in ("asked", "plain", "alone"))
    a, p, one = queue.claim("w"), queue.claim("w"), queue.claim("w")
    assert a is not None and p is not None and one is not None
    assert queue.cancel(asked).ok and queue.cancel(alone).ok
    assert queue.fail(one, "boom alone") == X
    assert queue.fail_many([(a, "boom", True), (p, "boom", True)]) == [(X, True), (P, True)]
    assert [queue.get(i).status for i in (asked, plain, alone)] == [X, P, X]
    for job_id, error in ((asked, "boom"), (alone, "boom alone")):
        event = queue.events(job_id)[-1]
        got = (event.kind, event.actor, event.detail["by"], event.detail["error"])
        assert got == ("cancelled", "w", "worker", error)
    assert queue.fail_many([(a, "boom", True)], repeat=True) == [(X, True)]
    assert "stale_write_refused" not in kinds(queue, asked)
    with pytest.raises(jobq.LeaseLost):
        queue.fail(a, "late")


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


def test_one_cancel_of_jobs_in_every_status_acts_and_records_each_once(queue: jobq.Queue) -> None:
    """A chunk's cancels are one statement per status left and one for their events: jobs of
    several statuses in one call, each cancelled (or asked to stop) once, with its own event
    saying what it was, and the ones that may not be cancelled left alone."""
    ids = queue.enqueue_many([f"j{n}" for n in range(6)], max_attempts=1)
    done, failed, running = (queue.claim("w") for _ in range(3))
    assert done is not None and failed is not None and running is not None
    queue.complete(done)
    queue.fail(failed, "nope", retry=False)
    results = queue.cancel_many(ids=[*ids, 10**9], actor="carol")
    got = {r.job_id: (r.ok, r.status) for r in results}
    assert got == {
        done.id: (False, C),
        failed.id: (True, X),
        running.id: (True, R),
        **{i: (True, X) for i in ids[3:]},
        10**9: (False, None),
    }
    assert queue.get(running.id).cancel_requested is True
    for job_id in (failed.id, *ids[3:]):
        (event,) = [e for e in queue.events(job_id) if str(e.kind) == "cancelled"]
        assert (event.actor, event.attempt) == ("carol", None)
        assert event.detail == {"from": "FAILED" if job_id == failed.id else "PENDING"}
    assert kinds(queue, running.id)[-1] == "cancel_requested"
    assert "cancelled" not in kinds(queue, done.id)
    assert queue.counts() == {"PENDING": 0, "PROCESSING": 1, "COMPLETED": 1, "FAILED": 0, "CANCELLED": 4}


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


def test_filters_by_error_text_and_time_ranges_select_exactly_what_they_say(
    queue: jobq.Queue, clock: FakeClock
) -> None:
    """ "Retry what failed in the last hour in queue Y with 'timeout' in its error": the same filter
    counts, lists and acts on the same jobs."""
    start = clock.now

    def failed(queue_name: str, error: str) -> int:
        job_id = queue.enqueue(error, queue=queue_name, max_attempts=1)
        job = queue.claim("w", queue=queue_name)
        assert job is not None and job.id == job_id
        queue.fail(job, f"Traceback ...\nOSError: {error}")
        return job_id

    old = failed("y", "read TIMEOUT old")  # finished two hours ago
    clock.advance(7200)
    recent = failed("y", "read timeout")
    other_error = failed("y", "disk full")
    other_queue = failed("z", "read timeout")
    hour_ago = clock.now - 3600
    where = JobFilter(statuses=(F,), queues=("y",), error="TIMEOUT", finished_after=hour_ago)
    assert [j.id for j in queue.list(where)] == [recent]
    assert queue.count(where) == 1
    assert queue.count(JobFilter(error="timeout")) == 3  # case-insensitive; jobs without errors never match
    assert queue.count(JobFilter(error="%")) == 0  # LIKE wildcards are literal
    assert queue.count(JobFilter(created_before=start)) == 1
    assert queue.count(JobFilter(created_after=start + 1, created_before=clock.now)) == 3
    assert queue.count(JobFilter(finished_before=hour_ago)) == 1
    pending = queue.enqueue("never finished")
    assert pending not in [j.id for j in queue.list(JobFilter(finished_before=clock.now + 1))]
    results = queue.resubmit_many(where=where, actor="ops")
    assert [(r.job_id, r.ok) for r in results] == [(recent, True)]
    assert {queue.get(i).status for i in (old, other_error, other_queue)} == {F}


def test_list_page_reads_the_count_and_the_rows_together(queue: jobq.Queue) -> None:
    ids = queue.enqueue_many([f"j{i}" for i in range(5)])
    total, jobs = queue.list_page(JobFilter(statuses=(P,)), Page(limit=2, offset=2))
    assert (total, [j.id for j in jobs]) == (5, sorted(ids, reverse=True)[2:4])
    assert queue.list_page(JobFilter(statuses=(P,)), Page(limit=2, offset=6)) == (5, [])
    assert queue.list_page(JobFilter(statuses=(F,))) == (0, [])


def test_a_filter_of_several_statuses_counts_and_lists_the_same_jobs(queue: jobq.Queue) -> None:
    """A count of several statuses is one count per status, summed (each from its own index), and
    a list of them is read in id order along an index: both must still describe the same jobs, a
    status named twice counted once, with the filter's other terms applied to every status."""
    failed = []
    for i in range(2):
        job_id = queue.enqueue(f"f{i}", queue="y", max_attempts=1)
        job = queue.claim("w", queue="y")
        assert job is not None and job.id == job_id
        queue.fail(job, "boom")
        failed.append(job_id)
    done = queue.enqueue("c", queue="y")
    job = queue.claim("w", queue="y")
    assert job is not None and job.id == done
    queue.complete(job)
    running = queue.enqueue("r", queue="y")
    job = queue.claim("w", queue="y")
    assert job is not None and job.id == running
    pending = queue.enqueue_many(["p1", "p2"], queue="y")
    queue.enqueue("elsewhere", queue="z")
    where = JobFilter(statuses=(P, F, R, P), queues=("y",))
    expected = sorted([*pending, *failed, running], reverse=True)
    assert queue.count(where) == 5
    assert [j.id for j in queue.list(where)] == expected
    assert queue.list_page(where, Page(limit=2, offset=1)) == (5, queue.list(where)[1:3])
    ascending = queue.list(where, Page(sort="id", descending=False))
    assert [j.id for j in ascending] == sorted(expected)
    assert queue.count(JobFilter(statuses=(F, C), queues=("y",), error="BOOM")) == 2
    assert queue.count(JobFilter(statuses=(F, X), queues=("z",))) == 0


def test_a_windowed_list_reads_only_the_newest_matching_jobs(queue: jobq.Queue) -> None:
    """``Page.window`` bounds a list's cost at any table size (the manager's list of all
    10,000,000 stored jobs, sorted by creation, took 3 s a refresh): the count stops at
    ``window + 1`` (more than the window), and the page is taken from the newest ``window``
    matching jobs, in its own order; with no more matches than the window, as with none."""
    ids = [queue.enqueue(f"j{i}", priority=i) for i in range(7)]  # by priority: oldest first
    everything = JobFilter()

    def page(**kw: Any) -> tuple[int, list[int]]:
        total, jobs = queue.list_page(everything, Page(limit=2, **kw))
        return total, [j.id for j in jobs]

    by_priority: dict[str, Any] = {"sort": "priority", "descending": False}
    assert page(**by_priority) == (7, ids[:2])
    assert page(window=3, **by_priority) == (4, ids[4:6])  # the newest three, by priority
    assert page(window=3, offset=2, **by_priority) == (4, ids[6:])
    assert page(window=3, offset=3, **by_priority) == (4, [])  # the window's end
    assert page(window=3) == (4, [ids[6], ids[5]])  # newest first: the same as with no window
    assert page(window=3, offset=2) == (4, [ids[4]])
    assert page(window=3, offset=3) == (4, [])
    assert page(window=7, **by_priority) == page(window=10, **by_priority) == (7, ids[:2])
    assert [j.id for j in queue.list(everything, Page(window=3, **by_priority))] == ids[4:]
    # Several statuses: each counted up to the window, the newest of all of them listed.
    claimed = queue.claim_many("w", 2)  # the lowest priorities: the two oldest jobs
    assert sorted(j.id for j in claimed) == ids[:2]
    where = JobFilter(statuses=(P, R))
    total, jobs = queue.list_page(where, Page(window=6, sort="status", descending=True, limit=2))
    assert (total, [j.id for j in jobs]) == (7, [ids[1], ids[6]])  # ids[0] is not among the newest 6
    assert queue.list_page(JobFilter(statuses=(R,)), Page(window=1)) == (2, [queue.get(ids[1])])
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="window must be a whole number"):
            queue.list_page(everything, Page(window=bad))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="window must be a whole number"):
            queue.list(everything, Page(window=bad))  # type: ignore[arg-type]


def test_a_capped_count_stops_at_its_cap(queue: jobq.Queue) -> None:
    """``count(up_to=N)`` counts at most N matches (``jobq list``'s footer: an exact count of
    10,000,000 COMPLETED jobs read them all), also summed over several statuses; below the cap it
    is the exact count; a cap below 1 is refused."""
    ids = [queue.enqueue(f"j{i}") for i in range(5)]
    queue.claim_many("w", 2)
    queue.cancel_many(ids=[ids[4]])
    assert [queue.count(up_to=n) for n in (1, 4, 5, 6)] == [1, 4, 5, 5]
    several = JobFilter(statuses=(P, R, X))
    assert [queue.count(several, up_to=n) for n in (3, 5, 50)] == [3, 5, 5]
    assert queue.count(JobFilter(statuses=(R,)), up_to=1) == 1
    assert queue.count(JobFilter(statuses=(F,)), up_to=1) == 0
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="up_to must be a whole number"):
            queue.count(up_to=bad)  # type: ignore[arg-type]


def test_a_bulk_action_over_many_jobs_runs_chunk_by_chunk_in_id_order(
    queue: jobq.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's action handles ``OPERATOR_CHUNK_JOBS`` jobs a transaction, in id order, until
    none is left (one transaction for 9,700,000 completed jobs held SQLite's write lock for
    minutes): every job once, the results in id order, named ids that match nothing last."""
    monkeypatch.setattr(jobq.backends.base, "OPERATOR_CHUNK_JOBS", 2)
    ids = queue.enqueue_many([f"j{i}" for i in range(5)])
    other = queue.enqueue("elsewhere", queue="z")
    results = queue.cancel_many(where=JobFilter(statuses=(P,), queues=("default",)), actor="ops")
    assert [(r.job_id, r.ok) for r in results] == [(i, True) for i in ids]
    assert queue.get(other).status == P
    named = [ids[4], 424242, ids[0], ids[2], ids[3]]
    results = queue.resubmit_many(ids=named, actor="ops")
    assert [(r.job_id, r.ok) for r in results] == [(i, True) for i in sorted(named[:1] + named[2:])] + [(424242, False)]
    assert [queue.get(i).status for i in ids] == [P, X, P, P, P]
    assert queue.cancel_many(where=JobFilter(statuses=(F,)), actor="ops") == []
    # Named ids and a status: those an earlier chunk moved out of the filter are not "not found".
    results = queue.cancel_many(ids=[*ids, 424242], where=JobFilter(statuses=(P,)), actor="ops")
    assert [(r.job_id, r.ok) for r in results] == [(i, True) for i in ids if i != ids[1]] + [
        (ids[1], False),
        (424242, False),
    ]


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


def test_a_move_takes_waiting_failed_and_cancelled_jobs_to_another_queue_and_leaves_the_rest(
    queue: jobq.Queue,
) -> None:
    """A producer's mistyped queue: its jobs wait for a worker that never comes. ``move_many``
    takes those not running and not COMPLETED to the queue meant, with a ``moved`` event each;
    their status, run time and attempts stay, and a worker of that queue then claims them."""
    ids = queue.enqueue_many([f"m{n}" for n in range(6)], queue="mial", max_attempts=1)
    done, failed, running, cancelled = (queue.claim("w", queue="mial") for _ in range(4))
    assert done is not None and failed is not None and running is not None and cancelled is not None
    queue.complete(done)
    queue.fail(failed, "nope", retry=False)
    queue.cancel(cancelled.id)
    queue.ack_cancel(cancelled)
    other = queue.enqueue("stays", queue="other")
    before = {i: queue.get(i) for i in ids}
    results = queue.move_many("mail", where=JobFilter(queues=("mial",)), actor="ann")
    got = {r.job_id: (r.ok, r.status) for r in results}
    assert got == {
        done.id: (False, C),
        failed.id: (True, F),
        running.id: (False, R),
        cancelled.id: (True, X),
        **{i: (True, P) for i in ids[4:]},
    }
    by_id = {r.job_id: r.message for r in results}
    assert by_id[running.id] == f"job {running.id} not moved: it is running: move it once it ends"
    assert by_id[ids[4]] == "moved to queue 'mail'"
    for job_id in ids:
        job, old = queue.get(job_id), before[job_id]
        moved = got[job_id][0]
        assert job.queue == ("mail" if moved else "mial")
        assert (job.status, job.run_at, job.attempts) == (old.status, old.run_at, old.attempts)
        events = [e for e in queue.events(job_id) if str(e.kind) == "moved"]
        assert [(e.actor, e.detail) for e in events] == ([("ann", {"from": "mial", "to": "mail"})] if moved else [])
    assert queue.get(other).queue == "other"
    assert queue.claim("w2", queue="mial") is None
    claimed = queue.claim("w2", queue="mail")
    assert claimed is not None and claimed.id == ids[4] and claimed.queue == "mail"
    # Done twice: nothing more moves, and no second event.
    again = queue.move_many("mail", ids=[ids[5]], actor="ann")
    assert [(r.ok, r.message) for r in again] == [(True, "in queue 'mail' already")]
    assert kinds(queue, ids[5]).count("moved") == 1


def test_one_move_refuses_what_it_may_not_move_and_a_name_no_worker_serves(queue: jobq.Queue) -> None:
    job_id = queue.enqueue("x", queue="a")
    job = queue.claim("w", queue="a")
    assert job is not None
    with pytest.raises(jobq.InvalidTransition, match=f"job {job_id}: cannot move a job that is PROCESSING"):
        queue.move(job_id, "b")
    with pytest.raises(jobq.JobNotFound):
        queue.move(987654, "b")
    waiting = queue.enqueue("y", queue="a")
    for bad in ("", " b", "b "):
        with pytest.raises(jobq.InvalidPayload, match="the queue to move to must not be empty"):
            queue.move(waiting, bad)
    assert queue.move(waiting, "b", actor="bob").ok
    assert [queue.get(i).queue for i in (job_id, waiting)] == ["a", "b"]


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


def test_a_search_folds_every_letter_and_finds_values_json_writes_escaped(queue: jobq.Queue) -> None:
    """A search matched letters of another case only in ASCII on SQLite ("été" missed "Été"),
    and never found a value holding a quote, a backslash or a newline: it matched the payload's
    JSON text, which writes them escaped (``a\\b`` is stored ``a\\\\b``)."""
    accented = queue.enqueue({"path": "data/Données/Été.txt"})
    escaped = queue.enqueue({"path": 'x/"quoted"/a\\b', "note": "two\nlines"})
    plain = queue.enqueue({"path": "data/plain.txt"})
    job = queue.claim("w")
    assert job is not None and job.id == accented
    queue.fail(job, "Échec: fichier introuvable", retry=False)
    cases = {
        "été": [accented],
        "DONNÉES": [accented],
        "Été": [accented],
        '"quoted"': [escaped],  # as the value holds it
        '\\"QUOTED\\"': [escaped],  # as the stored JSON writes it
        "a\\b": [escaped],
        "two\nlines": [escaped],
        '"path":"data/': [plain, accented],  # the JSON text itself still matches
        "été%": [],  # LIKE's wildcards stay literal
        "ÉTÉ_TXT": [],
    }
    for text, ids in cases.items():
        assert [j.id for j in queue.list(JobFilter(search=text))] == ids, text
        assert queue.count(JobFilter(search=text)) == len(ids), text
    assert [j.id for j in queue.list(JobFilter(error="échec"))] == [accented]
    assert [j.id for j in queue.list(JobFilter(error="ÉCHEC: FICHIER"))] == [accented]
    assert queue.list(JobFilter(error="echec")) == []  # é is not e


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


def test_stats_count_finished_jobs_in_a_window(queue: jobq.Queue, clock: FakeClock) -> None:
    """Finished jobs are counted among the newest ``finished_window``; PENDING and PROCESSING
    always in full. Within the window the counts are totals and say so."""
    queue.enqueue_many(["a", "b", "c", "d", "e", "f", "g"])
    for _ in range(4):
        clock.advance(1)
        job = queue.claim("w")
        assert job is not None
        queue.complete(job)
    clock.advance(1)
    failing = queue.claim("w")
    assert failing is not None
    queue.fail(failing, "boom", retry=False)
    assert queue.claim("w") is not None
    exact = queue.backend.stats(clock.now)
    assert exact.finished_window is None
    assert exact.counts == queue.counts() == {"PENDING": 1, "PROCESSING": 1, "COMPLETED": 4, "FAILED": 1,
                                              "CANCELLED": 0}  # fmt: skip
    assert queue.backend.stats(clock.now, finished_window=5).finished_window is None  # exactly all of them
    windowed = queue.backend.stats(clock.now, finished_window=3)
    assert windowed.finished_window == 3
    # The newest three finished: the failure and the last two completions.
    assert windowed.counts == {"PENDING": 1, "PROCESSING": 1, "COMPLETED": 2, "FAILED": 1, "CANCELLED": 0}
    assert windowed.by_queue["default"] == windowed.counts


def test_latest_jobs_newest_updates_first(queue: jobq.Queue, clock: FakeClock) -> None:
    old_done, old_failed, running, waiting_old = queue.enqueue_many(["a", "b", "c", "d"])
    clock.advance(1)
    for expected in (old_done, old_failed):
        job = queue.claim("w")
        assert job is not None and job.id == expected
        clock.advance(1)
        if expected == old_done:
            queue.complete(job)
        else:
            queue.fail(job, "boom", retry=False)
    clock.advance(1)
    job = queue.claim("w")
    assert job is not None and job.id == running
    clock.advance(1)
    waiting_new = queue.enqueue("e")
    latest = [j.id for j in queue.latest(limit=10)]
    assert latest == [waiting_new, running, old_failed, old_done, waiting_old]
    assert [j.id for j in queue.latest(limit=2)] == [waiting_new, running]
    assert [j.id for j in queue.latest(F)] == [old_failed]
    assert [j.id for j in queue.latest(C)] == [old_done]
    assert [j.id for j in queue.latest(P)] == [waiting_new, waiting_old]
    assert [j.id for j in queue.latest(R)] == [running]
    assert queue.latest(X) == []


def test_stats_tell_due_jobs_from_scheduled_ones_per_queue(queue: jobq.Queue, clock: FakeClock) -> None:
    queue.enqueue_many(["a", "b"])
    queue.enqueue("later", delay=7200)  # scheduled: not a backlog
    queue.enqueue("mail-1", queue="mail")
    clock.advance(5)
    queue.enqueue("mail-2", queue="mail")
    stats = queue.stats()
    assert stats.counts["PENDING"] == 5
    assert (stats.due, stats.scheduled) == (4, 1)
    assert stats.due_by_queue == {"default": 2, "mail": 2}
    assert stats.oldest_due_by_queue == {"default": pytest.approx(clock.now - 5), "mail": pytest.approx(clock.now - 5)}
    assert stats.oldest_pending_at == pytest.approx(clock.now - 5)
    job = queue.claim("w", queue="mail")
    assert job is not None
    queue.fail(job, "boom")  # retries later: scheduled, and waiting to retry
    stats = queue.stats()
    assert (stats.due, stats.scheduled, stats.retrying, stats.retrying_by_queue) == (3, 2, 1, {"mail": 1})
    clock.advance(7200)
    stats = queue.stats()
    assert stats.due_by_queue == {"default": 3, "mail": 2} and stats.retrying == 0


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
    second = queue.claim("w")
    assert second is not None
    queue.fail(second, "boom")  # an attempt failed; the job retries: not a final failure
    clock.advance(1)
    buckets = queue.history(window=180, bucket=60)
    assert (sum(b.retried for b in buckets), sum(b.failed for b in buckets)) == (1, 0)


def test_history_counts_the_whole_backlog_in_its_depth_and_only_the_windows_jobs_as_enqueued(
    queue: jobq.Queue, clock: FakeClock
) -> None:
    queue.enqueue_many(["old", "older"])
    queue.enqueue("later", delay=7200)  # PENDING as well, not due: part of the backlog too
    clock.advance(600)
    queue.enqueue("new")
    clock.advance(1)
    buckets = queue.history(window=180, bucket=60)
    assert [b.enqueued for b in buckets] == [0, 0, 1]
    assert [b.depth for b in buckets] == [3, 3, 4]
    job = queue.claim("w")
    assert job is not None and job.payload == "old"
    clock.advance(1)
    buckets = queue.history(window=180, bucket=60)
    assert (sum(b.enqueued for b in buckets), sum(b.claimed for b in buckets), buckets[-1].depth) == (1, 1, 3)


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


def test_ids_are_never_reused_after_the_newest_jobs_are_purged(queue: jobq.Queue, clock: FakeClock) -> None:
    """A purge of the newest jobs, then of every job, leaves no id to be taken again, by any way of
    enqueueing: an id names its job for good (in the demo's stamps, links, logs). SQLite's ids came
    from AUTOINCREMENT until schema 14, from a floor that such a delete raises since."""
    kept, *newest = queue.enqueue_many(["kept", "new1", "new2"])
    queue.cancel_many(ids=newest, actor="ops")
    clock.advance(10)
    assert queue.purge(older_than=1, statuses=[X]) == 2
    assert queue.count() == 1
    after_newest = queue.enqueue("after the newest")
    assert after_newest > newest[-1]
    queue.cancel_many(ids=[kept, after_newest], actor="ops")
    clock.advance(10)
    assert queue.purge(older_than=1, statuses=[X]) == 2
    assert queue.count() == 0
    ids = [
        queue.enqueue("one"),
        *queue.enqueue_many(["many1", "many2"]),
        queue.enqueue("keyed", key="k"),
        *queue.enqueue_many(["keyed1", "keyed2"], keys=["k1", "k2"]),
    ]
    assert ids[0] > after_newest and ids == sorted(set(ids))


def test_a_purge_deletes_chunk_by_chunk_every_old_job_and_its_events(
    queue: jobq.Queue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge deletes ``PURGE_CHUNK_JOBS`` jobs per transaction, the first finished first, until a
    chunk comes back short (one transaction for every finished job of 10,000,000 held SQLite's
    write lock, which every worker needs, for the whole delete): all the old jobs of its statuses
    and their stored events, and nothing else, with the count of them all."""
    monkeypatch.setattr(jobq.backends.base, "PURGE_CHUNK_JOBS", 2)
    old = queue.enqueue_many([f"o{i}" for i in range(4)])
    queue.cancel_many(ids=old, actor="ops")  # a stored event each
    done = queue.enqueue("done")
    job = queue.claim("w")
    assert job is not None and job.id == done
    queue.complete(job)
    clock.advance(8 * 86400)
    fresh = queue.enqueue("fresh")
    queue.cancel_many(ids=[fresh], actor="ops")
    assert queue.purge(older_than=7 * 86400, statuses=[X]) == 4  # two full chunks, then an empty one
    for job_id in old:
        with pytest.raises(jobq.JobNotFound):
            queue.get(job_id)
    assert not {e.job_id for e in queue.recent_events(100)} & set(old)
    assert queue.get(done).status == C and queue.get(fresh).status == X
    assert [e.kind for e in queue.events(fresh) if e.kind == "cancelled"] == ["cancelled"]
    assert queue.purge(older_than=7 * 86400, statuses=[C, X]) == 1  # one short chunk
    assert queue.count() == 1


def test_a_purge_with_a_limit_deletes_the_first_finished_first(queue: jobq.Queue, clock: FakeClock) -> None:
    """``limit``: at most that many, those that finished first (a pruner's call of bounded size);
    a limit of 0 deletes nothing, and one that is no count is a one-line ValueError."""
    ids = []
    for i in range(5):
        ids.append(queue.enqueue(f"j{i}"))
        queue.cancel_many(ids=[ids[-1]], actor="ops")
        clock.advance(1)
    clock.advance(8 * 86400)
    assert queue.purge(older_than=7 * 86400, statuses=[X], limit=0) == 0
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="limit must be a whole number"):
            queue.purge(older_than=7 * 86400, statuses=[X], limit=bad)  # type: ignore[arg-type]
    assert queue.count() == 5
    assert queue.purge(older_than=7 * 86400, statuses=[X], limit=3) == 3
    assert [j.id for j in queue.list(page=Page(sort="id", descending=False))] == ids[3:]
    assert queue.purge(older_than=7 * 86400, statuses=[X], limit=3) == 2
    assert queue.count() == 0


def test_purge_refuses_an_age_that_is_no_time(queue: jobq.Queue, clock: FakeClock) -> None:
    """``older_than`` of NaN deleted nothing, and -inf (or any negative) every finished job, with
    no word either way. Refused; nothing is deleted."""
    job_id = queue.enqueue("done")
    job = queue.claim("w")
    assert job is not None
    queue.complete(job)
    for bad in (math.nan, -math.inf, -1, math.inf, "7d"):
        with pytest.raises(ValueError, match="older_than must be a number of seconds"):
            queue.purge(older_than=bad)  # type: ignore[arg-type]
    for unfinished in (["PENDING"], [P, C], ["processing"], ["bogus"]):  # PENDING was taken
        with pytest.raises(ValueError, match=r"purge deletes finished jobs|a job status is one of"):
            queue.purge(older_than=0, statuses=unfinished)
    assert queue.get(job_id).status == C
    clock.advance(1)
    assert queue.purge(older_than=0, statuses=["completed"]) == 1


def test_an_id_no_job_can_have_is_not_found_and_an_id_that_is_no_number_is_refused(queue: jobq.Queue) -> None:
    """Ids above 2**63-1 raised OverflowError from the driver in ``events``, ``cancel`` and
    ``cancel_many``; ``cancel("1")`` was taken as job 1 (SQLite's type affinity), ``get(True)``
    too. Now: not found, as any unknown id; and ValueError for what is no whole number."""
    job_id = queue.enqueue("kept")
    for huge in (2**63, 2**64):
        with pytest.raises(jobq.JobNotFound):
            queue.get(huge)
        with pytest.raises(jobq.JobNotFound):
            queue.cancel(huge)
        with pytest.raises(jobq.JobNotFound):
            queue.resubmit(huge)
        assert queue.events(huge) == []
        assert queue.cancel_many(ids=[huge]) == [ActionResult(huge, False, None)]
    [done, missing] = queue.cancel_many(ids=[job_id, 2**64], actor="ops")
    assert (done.job_id, done.ok, missing) == (job_id, True, ActionResult(2**64, False, None))
    for not_an_id in ("1", True, 1.0, None):
        for call in (queue.get, queue.cancel, queue.resubmit, queue.events):
            with pytest.raises(ValueError, match="a job id is a whole number"):
                call(not_an_id)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="a job id is a whole number"):
            queue.cancel_many(ids=[not_an_id])  # type: ignore[list-item]
    assert [e.kind for e in queue.events(job_id)] == ["enqueued", "cancelled"]


def test_a_filter_takes_statuses_by_name_and_refuses_what_is_no_filter(queue: jobq.Queue) -> None:
    """``JobFilter(statuses=("PENDING",))`` failed deep in the store with AttributeError, as did
    ``search=5``; a status by name is now the status, and a value of the wrong type is one
    ValueError line, for a list, a count and a bulk action alike."""
    pending = queue.enqueue("p")
    assert [j.id for j in queue.list_jobs(JobFilter(statuses=("pending",)))] == [pending]  # type: ignore[arg-type]
    assert queue.count(JobFilter(statuses=("PENDING", "FAILED"))) == 1  # type: ignore[arg-type]
    assert [j.id for j in queue.latest("PENDING")] == [pending]  # type: ignore[arg-type]
    for bad, message in [
        (JobFilter(statuses=("bogus",)), "a job status is one of PENDING"),  # type: ignore[arg-type]
        (JobFilter(search=5), "search must be text"),  # type: ignore[arg-type]
        (JobFilter(error=b"x"), "error must be text"),  # type: ignore[arg-type]
        (JobFilter(queues=(5,)), "queues must be names"),  # type: ignore[arg-type]
        (JobFilter(created_after=math.nan), "created_after must be a UNIX time"),
        (JobFilter(finished_before="now"), "finished_before must be a UNIX time"),  # type: ignore[arg-type]
        (JobFilter(ids=("1",)), "a job id is a whole number"),  # type: ignore[arg-type]
    ]:
        for call in (queue.list_jobs, queue.count, queue.list_page, lambda w: queue.cancel_many(where=w)):
            with pytest.raises(ValueError, match=message):
                call(bad)
    with pytest.raises(ValueError, match="a job status is one of"):
        queue.latest("bogus")  # type: ignore[arg-type]
    assert queue.get(pending).status is P


@pytest.mark.parametrize("text", ["a\nb", "red\x1b[31m", "del\x7f", "c1\x85", "line\u2028sep"])
def test_a_name_or_actor_that_would_move_a_terminal_is_refused(queue: jobq.Queue, text: str) -> None:
    """An actor holding a newline and an escape sequence was stored and echoed raw by the CLI; DEL,
    C1 controls and the line separator passed the name check."""
    job_id = queue.enqueue("kept")
    with pytest.raises(jobq.InvalidPayload, match="printable characters"):
        queue.cancel(job_id, actor=text)
    with pytest.raises(jobq.InvalidPayload, match="printable characters"):
        queue.pause("q", actor=text)
    with pytest.raises(jobq.InvalidPayload, match="printable characters"):
        queue.enqueue("x", queue=text)
    with pytest.raises(jobq.ConfigError, match="printable characters"):
        queue.add_schedule(text, task="t", every=60)
    assert queue.get(job_id).status is P and queue.controls() == [] and queue.schedules() == []
    assert queue.cancel(job_id, actor="ann · ops").ok  # printable text of any script is fine


def test_a_string_where_a_list_is_meant_and_a_nul_in_a_search_are_refused(queue: jobq.Queue) -> None:
    """A string is no tuple of names: ``JobFilter(queues="mail")`` matched queues "m", "a", "i"
    and "l", and ``ids=""`` every job (``cancel_many`` on it cancelled all); ``ids=b"\\x03"`` was
    job 3. A NUL in ``search`` ended SQLite's LIKE pattern there, so it matched everything. A
    whole number past any float (``10**400``) raised OverflowError. Each is refused in one line;
    nothing changes."""
    kept = [queue.enqueue("a", queue="mail"), queue.enqueue("b"), queue.enqueue("c")]
    for bad in (
        JobFilter(queues="mail"),  # type: ignore[arg-type]
        JobFilter(ids=""),  # type: ignore[arg-type]
        JobFilter(statuses="PENDING"),  # type: ignore[arg-type]
        JobFilter(tasks=None),  # type: ignore[arg-type]
        JobFilter(search="\x00"),
        JobFilter(error="a\x00"),
        JobFilter(created_after=10**400),
    ):
        with pytest.raises(ValueError):
            queue.cancel_many(where=bad)
        with pytest.raises(ValueError):
            queue.list_jobs(bad)
    for ids in (b"\x03", "1", 5):
        with pytest.raises(ValueError, match="ids must be a list of job ids"):
            queue.cancel_many(ids=ids)  # type: ignore[arg-type]
    with pytest.raises(jobq.InvalidPayload, match="takes a list of keys"):
        queue.enqueue_many(["x", "y"], keys="ab")
    with pytest.raises(ValueError, match="queue must be a name or a list of names"):
        queue.claim("w", queue=5)  # type: ignore[arg-type]
    for huge in ({"delay": 10**400}, {"run_at": 10**400}, {"timeout": 10**400}):
        with pytest.raises(jobq.InvalidPayload):
            queue.enqueue("x", **huge)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        queue.claim("w", lease=10**400)
    with pytest.raises(ValueError):
        queue.purge(older_than=10**400)
    assert sorted(j.id for j in queue.list_jobs(JobFilter(statuses=(P,)))) == sorted(kept)
    assert [j.id for j in queue.list_jobs(JobFilter(queues=("mail",)))] == [kept[0]]


def test_arguments_of_the_wrong_type_are_refused_before_the_store(queue: jobq.Queue) -> None:
    """Each of these reached the driver or a dict and raised TypeError or OverflowError there, or
    was stored: a number as the lease owner, queue=0 as the default queue, key_ttl without keys
    in enqueue_many (enqueue refuses it), a bad priority in an empty enqueue_many."""
    kept = queue.enqueue("kept")
    odd: list[dict[str, Any]] = [{"task": []}, {"task": {}}, {"queue": 0}, {"queue": []}]
    for kwargs in odd:
        with pytest.raises(jobq.InvalidPayload, match="must be text"):
            queue.enqueue("x", **kwargs)
    with pytest.raises(jobq.InvalidPayload, match="key_scope and key_ttl apply to keys"):
        queue.enqueue_many(["x", "y"], key_ttl=5)
    with pytest.raises(jobq.InvalidPayload, match="priority must be an integer"):
        queue.enqueue_many([], priority="x")  # type: ignore[arg-type]
    for worker_id in (5, ["w"], float("nan")):
        with pytest.raises(jobq.InvalidPayload, match="worker id must be text"):
            queue.claim(worker_id)  # type: ignore[arg-type]
        with pytest.raises(jobq.InvalidPayload, match="worker id must be text"):
            queue.claim_many(worker_id, 2)  # type: ignore[arg-type]
    assert queue.progress_of([2**63]) == {} and queue.trace_contexts([2**64]) == {}
    with pytest.raises(ValueError, match="job ids must be a list"):
        queue.progress_of(5)  # type: ignore[arg-type]
    for call in (queue.pause_schedule, queue.remove_schedule):
        with pytest.raises(ValueError, match="name must be text"):
            call([1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue must be text"):
        queue.control_history([1])  # type: ignore[arg-type]
    assert [j.id for j in queue.list_jobs()] == [kept] and queue.get(kept).status is P


def test_a_queue_name_that_begins_or_ends_with_a_space_is_refused_everywhere(queue: jobq.Queue) -> None:
    """``"mail "`` was a queue of its own: its jobs waited for a worker of ``"mail "``, which no
    one runs; a queue of only spaces was listed as a blank column. Refused wherever a queue is
    named for writing, and nothing is stored."""
    for name in ("mail ", " mail", " ", "\u00a0mail"):
        with pytest.raises(jobq.InvalidPayload, match="must not be empty or begin or end with a space"):
            queue.enqueue("x", queue=name)
        with pytest.raises(jobq.InvalidPayload, match="must not be empty or begin or end with a space"):
            queue.enqueue_many(["x", "y"], queue=name)
        with pytest.raises(jobq.InvalidPayload, match="must not be empty or begin or end with a space"):
            queue.pause(name)
        with pytest.raises(jobq.InvalidPayload, match="must not be empty or begin or end with a space"):
            queue.add_schedule("s", task="t", every=60, queue=name)
        with pytest.raises(jobq.InvalidPayload, match="must not be empty or begin or end with a space"):
            jobq.Worker(queue, lambda ctx: None, queues=[name])
    assert queue.list_jobs() == [] and queue.controls() == [] and queue.schedules() == []
    assert queue.get(queue.enqueue("x", queue="my mail")).queue == "my mail"  # a space inside is a name


def test_ids_and_a_filter_act_on_the_named_jobs_the_whole_filter_matches(queue: jobq.Queue) -> None:
    """With both ids and a filter, the filter's error and time bounds were dropped: every named
    job was acted on, whatever its error."""
    ids = [queue.enqueue(n, max_attempts=1) for n in ("a", "b")]
    for job_id, error in zip(ids, ("timeout upstream", "bad input"), strict=True):
        job = queue.claim("w")
        assert job is not None and job.id == job_id
        queue.fail(job, error, retry=False)
    results = queue.resubmit_many(ids=ids, where=JobFilter(statuses=(F,), error="timeout"))
    assert [(r.job_id, r.ok) for r in results if r.ok] == [(ids[0], True)]
    assert [queue.get(i).status for i in ids] == [P, F]
