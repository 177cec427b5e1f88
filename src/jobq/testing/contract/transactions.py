"""The backend contract: enqueue and complete in the application's own transaction (``conn=``).

These tests need a fourth fixture, ``app_connect``: a function returning fresh application
connections (``jobq.testing.appconn.AppConnection``), one of every kind the backend accepts, on
the same store, with the application's table ``app_rows`` created; the fixture closes them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import jobq
from jobq import EventKind
from jobq.backends.base import NewJob
from jobq.testing import FakeClock
from jobq.testing.appconn import AppConnection
from jobq.testing.contract.common import C, P, R, kinds
from jobq.testing.contract.waiting import _wait_until_blocked, _waiting, _woken

AppConnect = Callable[[], list[AppConnection]]


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, repr(text)
    return text


def test_a_job_enqueued_in_the_callers_transaction_exists_once_it_commits(
    queue: jobq.Queue, open_queue: Callable[[], jobq.Queue], app_connect: AppConnect
) -> None:
    other = open_queue()
    for app in app_connect():
        app.begin()
        app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (0, "signed up"))
        job_id = queue.enqueue({"to": "ann"}, queue=f"mail-{app.kind}", key=f"welcome-{app.kind}", conn=app.conn)
        more = queue.enqueue_many([1, 2], queue=f"mail-{app.kind}", conn=app.conn)
        # Not committed: invisible to everyone else. (Only reads here: on SQLite the caller's
        # transaction holds the one write lock until it ends, and a claim would wait for it.)
        assert other.count(jobq.JobFilter(queues=(f"mail-{app.kind}",))) == 0, app
        app.commit()
        assert [other.get(i).status for i in (job_id, *more)] == [P, P, P], app
        assert kinds(other, job_id) == ["enqueued"]
        # The key is stored like any other: the same key again names the same job.
        assert queue.enqueue({"to": "ann"}, queue=f"mail-{app.kind}", key=f"welcome-{app.kind}") == job_id
        claimed = other.claim_many("w", 3, queue=f"mail-{app.kind}")
        assert sorted(j.id for j in claimed) == sorted([job_id, *more])


def test_a_rolled_back_enqueue_leaves_nothing(
    queue: jobq.Queue, open_queue: Callable[[], jobq.Queue], app_connect: AppConnect
) -> None:
    other = open_queue()
    for app in app_connect():
        before = other.count()
        app.begin()
        app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (0, "signed up"))
        job_id = queue.enqueue("x", key=f"k-{app.kind}", conn=app.conn)
        queue.enqueue_many(["y", "z"], conn=app.conn)
        app.rollback()
        assert other.count() == before, app
        assert queue.events(job_id) == []
        assert app.execute("SELECT count(*) FROM app_rows") == [(0,)]
        # The key was never taken: enqueuing it again creates the job.
        again = queue.enqueue("x", key=f"k-{app.kind}")
        assert queue.get(again).status == P and other.count() == before + 1


def test_trace_contexts_given_in_the_callers_transaction_commit_or_roll_back_with_the_jobs(
    queue: jobq.Queue, clock: FakeClock, app_connect: AppConnect
) -> None:
    def new(key: str | None) -> NewJob:
        return NewJob('"p"', "default", "", 0, clock.now, 3, idempotency_key=key)

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for app in app_connect():
        app.begin()
        kept = queue.backend.enqueue_in(app.conn, [new(f"k-{app.kind}"), new(None)], clock.now, [parent, None])
        app.commit()
        app.begin()
        (gone,) = queue.backend.enqueue_in(app.conn, [new(None)], clock.now, [parent])
        app.rollback()
        assert queue.trace_contexts([*kept, gone]) == {kept[0]: parent}, app


def test_a_job_completed_in_the_callers_transaction_is_completed_once_it_commits(
    queue: jobq.Queue, open_queue: Callable[[], jobq.Queue], app_connect: AppConnect
) -> None:
    other = open_queue()
    for app in app_connect():
        job_id = queue.enqueue("x", queue=app.kind)
        job = queue.claim("w", queue=app.kind)
        assert job is not None and job.id == job_id
        app.begin()
        app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (job_id, "done"))
        queue.complete(job, {"rows": 1}, conn=app.conn)
        assert other.get(job_id).status == R, app  # not committed yet
        app.commit()
        done = other.get(job_id)
        assert (done.status, done.result) == (C, {"rows": 1}), app
        assert kinds(other, job_id) == ["enqueued", "claimed", "completed"]
        assert app.rows(job_id) == 1


def test_a_rolled_back_completion_leaves_the_lease_held(queue: jobq.Queue, app_connect: AppConnect) -> None:
    for app in app_connect():
        job_id = queue.enqueue("x", queue=app.kind)
        job = queue.claim("w", queue=app.kind)
        assert job is not None
        app.begin()
        app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (job_id, "done"))
        queue.complete(job, conn=app.conn)
        app.rollback()
        assert queue.get(job_id).status == R and app.rows(job_id) == 0
        # The lease still holds: the worker may heartbeat, complete in a new transaction, ...
        assert queue.heartbeat(job) is False
        app.begin()
        app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (job_id, "done"))
        queue.complete(job, conn=app.conn)
        app.commit()
        assert queue.get(job_id).status == C and app.rows(job_id) == 1
        assert kinds(queue, job_id) == ["enqueued", "claimed", "completed"]


def test_a_lost_lease_refuses_the_completion_before_the_caller_commits(
    queue: jobq.Queue, clock: FakeClock, app_connect: AppConnect
) -> None:
    for app in app_connect():
        job_id = queue.enqueue("x", queue=app.kind)
        stale = queue.claim("A", lease=5, queue=app.kind)
        assert stale is not None
        clock.advance(6)
        queue.rescue_expired()
        clock.advance(queue.settings.backoff_cap_seconds + 1)
        current = queue.claim("B", queue=app.kind)
        assert current is not None and current.id == job_id
        app.begin()
        app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (job_id, "from A"))
        with pytest.raises(jobq.LeaseLost) as refused:
            queue.complete(stale, conn=app.conn)
        _one_line(refused)
        app.rollback()  # what the handler's transaction does with the exception
        assert app.rows(job_id) == 0
        job = queue.get(job_id)
        assert (job.status, job.lease_owner, job.lease_token) == (R, "B", current.lease_token)
        queue.complete(current)
        assert kinds(queue, job_id)[-1] == "completed"


def test_a_refused_completion_committed_anyway_is_recorded(queue: jobq.Queue, app_connect: AppConnect) -> None:
    """The refusal is written in the caller's transaction: kept if the caller commits regardless."""
    for app in app_connect():
        job_id = queue.enqueue("x", queue=app.kind)
        job = queue.claim("A", queue=app.kind)
        assert job is not None
        queue.complete(job)
        app.begin()
        with pytest.raises(jobq.LeaseLost):
            queue.complete(job, conn=app.conn)
        app.commit()
        refused = [e for e in queue.events(job_id) if e.kind == EventKind.STALE_WRITE_REFUSED]
        assert [(e.actor, e.detail["operation"]) for e in refused] == [("A", "complete")]


def test_a_heartbeat_after_the_leases_own_completion_is_not_a_stale_write(queue: jobq.Queue) -> None:
    """A heartbeat that waited for the application's commit finds the lease's own completion:
    refused (the lease is over) but not recorded as a stale write."""
    job_id = queue.enqueue("x")
    job = queue.claim("A")
    assert job is not None
    queue.complete(job)
    assert [r.alive for r in queue.heartbeat_many([job])] == [False]
    assert "stale_write_refused" not in kinds(queue, job_id)


def test_a_connection_of_the_wrong_kind_or_closed_is_refused_in_one_line(
    queue: jobq.Queue, app_connect: AppConnect
) -> None:
    job_id = queue.enqueue("x")
    job = queue.claim("w")
    assert job is not None
    for wrong in (object(), queue.url, queue):
        with pytest.raises(jobq.ConfigError) as error:
            queue.enqueue("y", conn=wrong)
        assert "conn must be" in _one_line(error)
        with pytest.raises(jobq.ConfigError):
            queue.complete(job, conn=wrong)
    for app in app_connect():
        app.close()
        with pytest.raises(jobq.StorageError) as closed:
            queue.enqueue("y", conn=app.conn)
        _one_line(closed)
    assert queue.count() == 1 and queue.get(job_id).status == R


def test_a_job_completed_in_the_callers_transaction_wakes_its_waiter_at_commit(
    queue: jobq.Queue, app_connect: AppConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobq.queue, "WAIT_POLL_SECONDS", 3600.0)  # only a wake-up returns in time
    for app in app_connect():
        job_id = queue.enqueue("x", queue=app.kind)
        job = queue.claim("w", queue=app.kind)
        assert job is not None
        # First a completion that rolls back: the waiter may be woken, finds the job running
        # and goes on waiting.
        waiter = jobq.Queue(settings=queue.settings, clock=queue.clock)
        try:
            thread, got = _waiting(waiter, job_id)
            _wait_until_blocked(thread)
            app.begin()
            queue.complete(job, "no", conn=app.conn)
            app.rollback()
            _wait_until_blocked(thread)
            assert thread.is_alive() and not got, got
            app.begin()
            app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (job_id, "done"))
            queue.complete(job, {"rows": 1}, conn=app.conn)
            app.commit()
            done = _woken(thread, got)
            assert (done.status, done.result) == (C, {"rows": 1}), app
        finally:
            waiter.close()
