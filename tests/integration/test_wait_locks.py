"""A waiter's read and the row locks of claims and finishes (PostgreSQL).

``Queue.wait`` registers, then reads the job locked (``get_job_locked``), so that it waits for a
finish in flight whose check for waiters ran before the registration committed. Two properties,
each shown with a transaction held open at the point that matters (no timing):

- a claim is never held back by that read: a claim's ``SKIP LOCKED`` used to pass over a job a
  waiter was reading ``FOR SHARE``, and the worker woken for the job missed it until its next poll;
- the read still waits for every form of finish in flight, so the wait returns the finished job
  even though that finish found no waiter to NOTIFY.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from polling import wait_for

import jobq
from jobq.backends import ops
from jobq.backends.base import Completion, Failure, JobFilter
from jobq.backends.postgres.url import split_url
from jobq.queue import lease_of
from jobq.testing.contract.waiting import asleep_in_wait

pytestmark = pytest.mark.postgres

#: How long the test lets a waiter take to return once the finish commits (milliseconds when
#: it works); the poll is off (an hour), so only that read or a wake-up can return it this early.
RETURNS_WITHIN_SECONDS = 30.0
#: The waiter's own timeout. A read that waited returns the finished job whatever its deadline;
#: one that did not (the failure this test looks for) leaves the waiter asleep until then.
WAITER_TIMEOUT_SECONDS = 10.0

#: A backend waiting on a lock while it runs the waiter's read (get_job_locked is the only
#: statement that takes FOR KEY SHARE).
_WAITER_BLOCKED = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND query LIKE '%%FOR KEY SHARE%%'"
)


@pytest.fixture
def queue(postgres_url: str) -> Iterator[jobq.Queue]:
    with jobq.Queue(postgres_url) as q:
        yield q


@pytest.fixture
def admin(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(split_url(postgres_url).libpq_url, autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize("limits", [None, "concurrency", "per_key"])
def test_a_claim_takes_a_job_whose_waiter_holds_its_read(
    postgres_url: str, queue: jobq.Queue, admin: psycopg.Connection[Any], limits: str | None
) -> None:
    # Each claim statement: the plain one, a concurrency-limited queue's, a per-key-limited one's.
    if limits == "concurrency":
        queue.set_limits("default", concurrency=5)
    elif limits == "per_key":
        queue.set_limits("default", per_key=5)
    job_id = queue.enqueue({}, concurrency_key="k")
    now = time.time()
    registration = queue.backend.register_waiter(job_id, now, now + 60)
    schema = split_url(postgres_url).schema
    with psycopg.connect(split_url(postgres_url).libpq_url) as waiter:
        # The waiter's read, exactly as Queue.wait sends it, its transaction held open.
        assert len(waiter.execute(queue.backend.dialect.sql["get_job_locked"], {"id": job_id}).fetchall()) == 1
        # It holds the row: a writer that would finish the job has to wait for it.
        with pytest.raises(psycopg.errors.LockNotAvailable):
            admin.execute(f"SELECT id FROM {schema}.jobs WHERE id = %s FOR UPDATE NOWAIT", [job_id])
        job = queue.claim("w1")
        assert job is not None and job.id == job_id, "the claim passed over the job its waiter was reading"
        waiter.rollback()
    queue.complete(job, 1)
    queue.backend.unregister_waiter(registration)
    assert queue.get(job_id).status == jobq.JobStatus.COMPLETED


Finish = Callable[[jobq.Queue, list[int], list[jobq.Job]], Callable[[], ops.Op[Any]]]
"""The finishing operation, given the queue, the job ids and the claimed jobs (the first is waited for)."""

FINISHES: dict[str, Finish] = {
    # The per-job statements (complete_one, fail_one) and the batch ones (complete, fail: two jobs).
    "complete_one": lambda q, ids, jobs: (
        lambda: ops.complete(q.backend.dialect, [Completion(lease_of(jobs[0]))], q.clock, False)
    ),
    "complete_batch": lambda q, ids, jobs: (
        lambda: ops.complete(q.backend.dialect, [Completion(lease_of(j)) for j in jobs], q.clock, False)
    ),
    "fail_one": lambda q, ids, jobs: (
        lambda: ops.fail(q.backend.dialect, [Failure(lease_of(jobs[0]), "x", None)], q.clock, False)
    ),
    "fail_batch": lambda q, ids, jobs: (
        lambda: ops.fail(q.backend.dialect, [Failure(lease_of(j), "x", None) for j in jobs], q.clock, False)
    ),
    "ack_cancel": lambda q, ids, jobs: lambda: ops.ack_cancel(q.backend.dialect, [lease_of(jobs[0])], q.clock, False),
    "operator_cancel": lambda q, ids, jobs: (
        lambda: ops.cancel(q.backend.dialect, JobFilter(ids=[ids[0]]), "ops", q.clock(), 0, 500, frozenset())
    ),
    "rescue": lambda q, ids, jobs: (
        lambda: ops.rescue(q.backend.dialect, lambda: q.clock() + 3600, lambda n: 1.0, "rescuer", [], None)
    ),
}


@pytest.mark.parametrize(
    ("finish", "waiter"), [*((name, "sync") for name in sorted(FINISHES)), ("complete_one", "async")]
)
def test_a_waiters_read_waits_for_a_finish_in_flight(
    postgres_url: str,
    queue: jobq.Queue,
    admin: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    finish: str,
    waiter: str,
) -> None:
    """The race Queue.wait (and AsyncQueue.wait) is built for, held still: the finish has checked
    for waiters (none yet) and not committed; the waiter then registers and reads. Its read must
    wait for that commit, as no NOTIFY will come (the poll is off)."""
    monkeypatch.setattr(jobq.queue, "WAIT_POLL_SECONDS", 3600.0)
    ids = [queue.enqueue({"n": n}, max_attempts=1) for n in range(2)]
    claimed: list[jobq.Job] = []
    if finish != "operator_cancel":  # which cancels a PENDING job; the others end a running one
        claimed = [j for j in (queue.claim("w1", lease=60) for _ in ids) if j is not None]
        assert [j.id for j in claimed] == ids
    if finish == "ack_cancel":
        queue.cancel(ids[0])  # PROCESSING: asked to stop, the worker then acknowledges
    got: list[jobq.Job | BaseException] = []
    with psycopg.connect(split_url(postgres_url).libpq_url) as finisher, jobq.Queue(postgres_url) as other:
        queue.backend._in_caller_transaction(finisher, FINISHES[finish](queue, ids, claimed))  # not committed yet

        async def await_it() -> jobq.Job:
            async with jobq.AsyncQueue(postgres_url) as q:
                return await q.wait(ids[0], timeout=WAITER_TIMEOUT_SECONDS)

        def wait() -> None:
            try:
                if waiter == "sync":
                    got.append(other.wait(ids[0], timeout=WAITER_TIMEOUT_SECONDS))
                else:
                    got.append(asyncio.run(await_it()))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                got.append(exc)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        try:
            wait_for(
                lambda: admin.execute(_WAITER_BLOCKED).fetchone() == (1,) or asleep_in_wait(thread) or got,
                RETURNS_WITHIN_SECONDS,
                "the waiter to read the job",
            )
            assert not got and not asleep_in_wait(thread), "the waiter's read did not wait for the finish in flight"
            finisher.commit()
        finally:
            finisher.rollback()
            thread.join(RETURNS_WITHIN_SECONDS)
    assert not thread.is_alive(), "the waiter was not returned by the finish's commit"
    [result] = got
    assert isinstance(result, jobq.Job), result
    assert result.status.value in ("COMPLETED", "FAILED", "CANCELLED")
