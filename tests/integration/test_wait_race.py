"""The race between a waiter registering and the job finishing (PostgreSQL ``job_waiters`` and
``jobq_notify_waited()``): a finish NOTIFYs only the jobs someone waits for, checked after the
finish holds the row, while ``Queue.wait`` registers, listens, then reads the row waiting for its
writer. Whatever the interleaving, the wait must be woken, not rescued by the 1 s poll: the poll is
turned off here and many waits race a concurrent completion, each with a short deadline."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import psycopg
import pytest
from polling import wait_for
from psycopg import sql

import jobq
from jobq.backends.postgres.url import split_url

pytestmark = pytest.mark.postgres

ROUNDS = 150
#: Far above a wake-up (milliseconds), far below the poll this test turns off (an hour). A wait
#: whose wake-up was lost reads the job once more at its deadline and returns it finished, so a
#: lost wake-up shows as a wait that took the whole deadline: ``LOST_AFTER_SECONDS`` tells them
#: apart (a wake-up under this machine's load is still well below it).
WAKE_DEADLINE_SECONDS = 6.0
LOST_AFTER_SECONDS = 3.0


@pytest.fixture(autouse=True)
def _no_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobq.queue, "WAIT_POLL_SECONDS", 3600.0)


def _finish(finisher: jobq.Queue, job: jobq.Job, n: int) -> None:
    time.sleep(random.random() * 0.004)  # spread the finish over the waiter's register-listen-read
    if n % 3 == 0:
        finisher.complete(job, n)  # the one-statement completion
    elif n % 3 == 1:
        finisher.complete_many([(job, n)])  # the batch form
    else:
        finisher.fail(job, "x", retry=False)


def test_every_sync_wait_racing_a_finish_is_woken(postgres_url: str) -> None:
    with jobq.Queue(postgres_url) as q, jobq.Queue(postgres_url) as finisher:
        for n in range(ROUNDS):
            job_id = q.enqueue({"n": n})
            job = finisher.claim("w1")
            assert job is not None and job.id == job_id
            t = threading.Thread(target=_finish, args=(finisher, job, n))
            started = time.monotonic()
            t.start()
            try:
                done = q.wait(job_id, timeout=WAKE_DEADLINE_SECONDS)
            except TimeoutError:
                pytest.fail(f"round {n}: the wait was never woken (a lost wake-up)")
            finally:
                t.join(30)
            assert done.status in (jobq.JobStatus.COMPLETED, jobq.JobStatus.FAILED)
            took = time.monotonic() - started
            assert took < LOST_AFTER_SECONDS, f"round {n}: woken only by the deadline's read ({took:.1f} s)"


def test_every_async_wait_racing_a_finish_is_woken(postgres_url: str) -> None:
    async def main() -> None:
        async with jobq.AsyncQueue(postgres_url) as q:
            with jobq.Queue(postgres_url) as finisher:
                for n in range(ROUNDS):
                    job_id = await q.enqueue({"n": n})
                    job = finisher.claim("w1")
                    assert job is not None and job.id == job_id
                    t = threading.Thread(target=_finish, args=(finisher, job, n))
                    started = time.monotonic()
                    t.start()
                    try:
                        done = await q.wait(job_id, timeout=WAKE_DEADLINE_SECONDS)
                    except TimeoutError:
                        pytest.fail(f"round {n}: the async wait was never woken (a lost wake-up)")
                    finally:
                        await asyncio.to_thread(t.join, 30)
                    assert done.status in (jobq.JobStatus.COMPLETED, jobq.JobStatus.FAILED)
                    took = time.monotonic() - started
                    assert took < LOST_AFTER_SECONDS, f"round {n}: woken only by the deadline's read ({took:.1f} s)"

    asyncio.run(main())


def test_the_poll_is_really_off_here(postgres_url: str) -> None:
    """The control: with the waiter's ``job_waiters`` row deleted by hand, the finish sends no
    wake-up, so with the poll off the wait returns only at its deadline (its last read). Without
    this, the tests above could pass through the poll."""
    options = split_url(postgres_url)
    with jobq.Queue(postgres_url) as q, psycopg.connect(options.libpq_url, autocommit=True) as admin:
        waiters = sql.Identifier(options.schema, "job_waiters")
        job_id = q.enqueue({"n": 1})
        job = q.claim("w1")
        assert job is not None
        outcome: list[tuple[jobq.Job, float]] = []

        def wait() -> None:
            started = time.monotonic()
            done = q.wait(job_id, timeout=LOST_AFTER_SECONDS)
            outcome.append((done, time.monotonic() - started))

        t = threading.Thread(target=wait)
        t.start()
        try:
            wait_for(
                lambda: admin.execute(sql.SQL("SELECT count(*) FROM {}").format(waiters)).fetchone() == (1,),
                30,
                "the waiter to register",
            )
            admin.execute(sql.SQL("DELETE FROM {}").format(waiters))
            q.complete(job)
        finally:
            t.join(30)
        assert len(outcome) == 1
        done, took = outcome[0]
        assert done.status == jobq.JobStatus.COMPLETED and took >= LOST_AFTER_SECONDS
