"""``async def`` handlers: run on the worker's event loop, stopped for real (CancelledError), with
their outcomes recorded as for sync handlers. On both backends, with a real worker in a thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from polling import wait_for
from worker_thread import running, stop_while_busy

import jobq
from jobq import JobStatus
from jobq.worker import JobContext, Worker

#: Short leases: the heartbeater (lease/3) notices cancels and lost leases within ~0.5 s.
LEASE_SECONDS = 1.5


def _queue(url: str, **settings: Any) -> jobq.Queue:
    given = {"lease_seconds": LEASE_SECONDS, "backoff_base_seconds": 0.01, **settings}
    return jobq.Queue(settings=jobq.Settings(database_url=url, **given))


def test_async_and_sync_handlers_run_side_by_side(backend_url: str) -> None:
    threads: dict[str, str] = {}

    async def double(ctx: JobContext) -> dict[str, int]:
        threads["async"] = threading.current_thread().name
        await ctx.asleep(0.01)
        return {"doubled": ctx.payload["n"] * 2, "attempt": ctx.job.attempts}

    def shout(ctx: JobContext) -> str:
        threads["sync"] = threading.current_thread().name
        return str(ctx.payload["word"]).upper()

    async def broken(ctx: JobContext) -> None:
        await asyncio.sleep(0)
        raise ValueError("bad input for an async handler")

    with _queue(backend_url) as q:
        a = q.enqueue({"n": 21}, task="double")
        s = q.enqueue({"word": "hi"}, task="shout")
        b = q.enqueue({}, task="broken", max_attempts=1)
        worker = Worker(q, {"double": double, "shout": shout, "broken": broken}, exit_when_idle=True)
        worker.run()
        assert q.get(a).status == JobStatus.COMPLETED and q.get(a).result == {"doubled": 42, "attempt": 1}
        assert q.get(s).result == "HI"
        failed = q.get(b)
        assert failed.status == JobStatus.FAILED
        assert "ValueError: bad input for an async handler" in (failed.last_error or "")
    assert threads["async"] == "jobq-async" and threads["sync"].startswith("jobq-run-")
    assert worker.capacity == worker.concurrency + worker.async_concurrency


def test_many_coroutines_wait_at_once_on_one_worker(backend_url: str) -> None:
    """200 jobs that each await a sleep all wait together: the worker claims for its coroutines,
    not for its one thread (counted, not timed)."""
    gate = asyncio.Event()
    waiting = 0
    most = 0
    loop: list[asyncio.AbstractEventLoop] = []

    async def wait_at_gate(ctx: JobContext) -> int:
        nonlocal waiting, most
        loop[:] = [asyncio.get_running_loop()]
        waiting += 1
        most = max(most, waiting)
        await gate.wait()
        waiting -= 1
        return int(ctx.payload)

    with _queue(backend_url) as q:
        q.enqueue_many(range(200), task="gate")
        worker = Worker(q, {"gate": wait_at_gate}, async_concurrency=100)
        with running(worker):
            wait_for(lambda: most >= 100, 60, "100 coroutines waiting at once")
            assert most == 100, "never more than async_concurrency at once"
            loop[0].call_soon_threadsafe(gate.set)
            wait_for(lambda: q.counts()["COMPLETED"] == 200, 60, "all 200 jobs to complete")


def _sleeps_until_cancelled(seen: list[str]) -> Callable[[JobContext], Awaitable[None]]:
    """A handler that awaits for an hour and notes in ``seen`` the CancelledError that stops it."""

    async def handler(ctx: JobContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    return handler


def test_an_operator_cancel_raises_cancelled_error_in_the_coroutine(backend_url: str) -> None:
    seen: list[str] = []
    forever = _sleeps_until_cancelled(seen)

    with _queue(backend_url) as q:
        job_id = q.enqueue({}, task="forever")
        with running(Worker(q, {"forever": forever})):
            wait_for(lambda: q.get(job_id).status == JobStatus.PROCESSING, 30, "the job to start")
            q.cancel(job_id)
            asked = time.monotonic()
            wait_for(lambda: q.get(job_id).status == JobStatus.CANCELLED, 30, "the cancel to land")
            # Not a speed goal: the promised bound (one heartbeat interval + 1 s), with room for
            # a loaded machine; a cooperative-only cancel would never arrive at all.
            assert time.monotonic() - asked < 30
        assert seen == ["cancelled"]


def test_a_timeout_cancels_the_coroutine_and_fails_the_run(backend_url: str) -> None:
    seen: list[str] = []
    slow = _sleeps_until_cancelled(seen)

    with _queue(backend_url) as q:
        job_id = q.enqueue({}, task="slow", timeout=0.3, max_attempts=1)
        worker = Worker(q, {"slow": slow})
        with running(worker):
            wait_for(lambda: q.get(job_id).status == JobStatus.FAILED, 30, "the timeout to fail the job")
            wait_for(lambda: not worker.active(), 30, "the coroutine to end and give its slot back")
        assert seen == ["cancelled"]
        assert q.get(job_id).last_error == "timed out after 0.3 s"
        kinds = [str(e.kind) for e in q.events(job_id)]
        assert kinds.count("failed") == 1 and "stale_write_refused" not in kinds


def test_a_lost_lease_cancels_the_coroutine(backend_url: str) -> None:
    seen: list[str] = []
    sleeps = _sleeps_until_cancelled(seen)
    began = threading.Event()

    async def forever(ctx: JobContext) -> None:
        began.set()
        await sleeps(ctx)

    # A short grace: the released job is claimed again and runs until the stop cancels it.
    with _queue(backend_url, shutdown_grace_seconds=0.2) as q:
        q.enqueue({}, task="forever")
        worker = Worker(q, {"forever": forever})
        with running(worker):
            # Begun, not only claimed: the row reads PROCESSING once the claim commits, before the
            # worker has taken in its reply and listed the run (a fresh clone's make test caught
            # worker.active() empty there, on PostgreSQL).
            assert began.wait(30), "the handler to begin"
            [ctx] = worker.active()
            # Another worker takes the job over (as after a rescue): the next heartbeat is refused.
            q.release(ctx.job, reason="test: taken away")
            wait_for(lambda: seen == ["cancelled"], 30, "the coroutine to be cancelled")
            wait_for(lambda: not worker.active() or worker.active()[0].key != ctx.key, 30, "the run to end")


def test_shutdown_after_the_grace_period_cancels_and_releases(backend_url: str) -> None:
    seen: list[str] = []

    async def forever(ctx: JobContext) -> None:
        seen.append("began")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    with _queue(backend_url, shutdown_grace_seconds=0.2) as q:
        job_id = q.enqueue({}, task="forever")
        worker = Worker(q, {"forever": forever})
        with running(worker):
            # Begun, not only claimed: a job no coroutine has begun is given back without running.
            wait_for(lambda: seen == ["began"], 30, "the handler to begin")
        assert seen == ["began", "cancelled"]
        job = q.get(job_id)
        assert job.status == JobStatus.PENDING and job.lease_token is None


def test_a_coroutine_that_blocks_the_loop_is_logged_with_its_job(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def blocks(ctx: JobContext) -> str:
        time.sleep(1.5)  # the mistake: blocks every coroutine of the loop
        return "done"

    caplog.set_level(logging.WARNING, logger="jobq.worker")
    with _queue(sqlite_url, lease_seconds=30) as q:
        job_id = q.enqueue({}, task="blocks")
        Worker(q, {"blocks": blocks}, exit_when_idle=True).run()
        assert q.get(job_id).status == JobStatus.COMPLETED
    blocked = [r.getMessage() for r in caplog.records if "blocks the event loop" in r.getMessage()]
    assert blocked and blocked[0].startswith(f"job {job_id} (task 'blocks')"), caplog.text


def test_a_sync_handler_returning_a_coroutine_fails_clearly(sqlite_url: str) -> None:
    async def real(ctx: JobContext) -> int:
        return 1

    with _queue(sqlite_url) as q:
        job_id = q.enqueue({}, task="wrapped", max_attempts=1)
        Worker(q, {"wrapped": lambda ctx: real(ctx)}, exit_when_idle=True).run()
        job = q.get(job_id)
        assert job.status == JobStatus.FAILED and "declare it `async def`" in (job.last_error or "")


def test_a_run_stopped_while_it_waits_for_a_slot_is_settled_without_running(sqlite_url: str) -> None:
    """AsyncRunner: a task cancelled before its run began goes to ``not_run`` (the worker records
    CANCEL or nothing there), never silently dropped (its slot would be held for ever)."""
    from jobq.worker.aio import AsyncRunner

    release = threading.Event()
    ran: list[int] = []
    not_run: list[int] = []

    async def run_one(ctx: JobContext) -> None:
        ran.append(ctx.job.id)
        while not release.is_set():
            await asyncio.sleep(0.01)

    with _queue(sqlite_url) as q:
        q.enqueue_many([1, 2])
        first, second = (JobContext(job, q, "w1") for job in q.claim_many("w1", 2))
        runner = AsyncRunner(1, run_one, lambda ctx: not_run.append(ctx.job.id))
        runner.start()
        try:
            runner.submit(first)
            runner.submit(second)
            wait_for(lambda: ran == [first.job.id], 30, "the first run to hold the one slot")
            second.cancelled.set()  # as the heartbeater does on an operator's cancel
            wait_for(lambda: not_run == [second.job.id], 30, "the waiting run to be settled")
            release.set()
        finally:
            release.set()
            runner.stop()
        assert ran == [first.job.id]


@contextmanager
def _lock_held_while(path_or_url: str, job_id: int, hold: threading.Event, seconds: float) -> Iterator[None]:
    """Another session holds what the job's writes need (SQLite: the write lock; PostgreSQL: the
    job's row) for ``seconds`` once ``hold`` is set: a blocking write waits that long."""
    done = threading.Event()

    def holder() -> None:
        assert hold.wait(30)
        if path_or_url.startswith("sqlite:///"):
            import apsw

            conn = apsw.Connection(path_or_url.removeprefix("sqlite:///"))
            conn.set_busy_timeout(30_000)  # the worker may be writing at this moment: wait for it
            conn.execute("BEGIN IMMEDIATE")
            done.set()
            time.sleep(seconds)  # holding the lock is the point, not waiting for an outcome
            conn.execute("COMMIT")
            conn.close()
            return
        import psycopg

        from jobq.backends.postgres.url import split_url

        options = split_url(path_or_url)
        with psycopg.connect(options.libpq_url) as conn:
            conn.execute(f"SELECT id FROM {options.schema}.jobs WHERE id = %s FOR UPDATE", (job_id,))
            done.set()
            time.sleep(seconds)  # as above

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    try:
        yield
    finally:
        hold.set()
        thread.join(30)
        assert done.is_set()


@pytest.mark.parametrize("form", ["awaited", "blocking"])
def test_ensure_lease_and_complete_in_a_transaction_keep_the_loop_free(
    backend_url: str, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    """``await ctx.aensure_lease()`` and ``await ctx.acomplete(conn=)`` wait for a lock without
    blocking the loop (no watchdog warning); the blocking forms, the control, are reported."""
    hold = threading.Event()
    held_seconds = 4 * 0.5  # four times the watchdog's LOOP_BLOCKED_SECONDS

    async def fenced(ctx: JobContext) -> None:
        hold.set()
        await asyncio.sleep(0.2)  # the other session takes its lock
        if form == "awaited":
            await ctx.aensure_lease()
        else:
            ctx.ensure_lease()  # the mistake the awaitable form avoids
        if backend_url.startswith("sqlite:///"):
            return  # on SQLite, an application's transaction holds the write lock itself
        import psycopg

        from jobq.backends.postgres.url import split_url

        libpq = split_url(backend_url).libpq_url
        if form == "awaited":
            async with await psycopg.AsyncConnection.connect(libpq) as conn, conn.transaction():
                await conn.execute("CREATE TABLE IF NOT EXISTS app_done (job_id bigint)")
                await conn.execute("INSERT INTO app_done VALUES (%s)", (ctx.job.id,))
                await ctx.acomplete({"in": "transaction"}, conn=conn)
        else:
            with psycopg.connect(libpq) as conn, conn.transaction():
                conn.execute("CREATE TABLE IF NOT EXISTS app_done (job_id bigint)")
                conn.execute("INSERT INTO app_done VALUES (%s)", (ctx.job.id,))
                ctx.complete({"in": "transaction"}, conn=conn)

    caplog.set_level(logging.WARNING, logger="jobq.worker")
    with _queue(backend_url, lease_seconds=30) as q:
        job_id = q.enqueue({}, task="fenced")
        # The heartbeat waits for the lock (then the completion runs on the native AsyncConnection).
        with _lock_held_while(backend_url, job_id, hold, held_seconds):
            Worker(q, {"fenced": fenced}, exit_when_idle=True).run()
        job = q.get(job_id)
        assert job.status == JobStatus.COMPLETED, job.last_error
        if not backend_url.startswith("sqlite:///"):
            assert job.result == {"in": "transaction"}
    blocked = [r.getMessage() for r in caplog.records if "blocks the event loop" in r.getMessage()]
    if form == "awaited":
        assert blocked == [], caplog.text
    else:
        assert blocked and blocked[0].startswith(f"job {job_id} (task 'fenced')"), caplog.text


def test_an_async_handler_that_sees_the_shutdown_gives_its_job_back(backend_url: str) -> None:
    """``ctx.stopping`` and ``jobq.WorkerShutdown`` work for coroutines as for threads: the job is
    released at once, uncounted, and the worker stops long before its grace period ends."""
    started = threading.Event()

    async def polite(ctx: JobContext) -> None:
        started.set()
        while not ctx.stopping:
            await ctx.asleep(0.02)
        raise jobq.WorkerShutdown("async: stopped at a safe point")

    with _queue(backend_url, shutdown_grace_seconds=600) as q:
        job_id = q.enqueue({}, task="polite")
        stop_while_busy(Worker(q, {"polite": polite}), started)  # the grace period is 600 s
        job = q.get(job_id)
        assert (job.status, job.attempts) == (JobStatus.PENDING, 0)
        assert q.events(job_id)[-1].kind == "released"
