"""``jobq.AsyncQueue`` where it is more than the blocking facade in a thread: ``conn=`` on a
``psycopg.AsyncConnection`` (the ``ops`` generators driven by ``adrive``) and ``wait`` on the loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import pytest

import jobq
import jobq.backends.postgres.url
import jobq.queue
from jobq import JobStatus


def test_wait_many_at_once_holds_no_thread(backend_url: str) -> None:
    """50 waits at once, each woken when its job completes; the waits hold no thread of their own."""

    async def main() -> None:
        async with jobq.AsyncQueue(backend_url) as q:
            ids = await q.enqueue_many(range(50))
            waits = [asyncio.ensure_future(q.wait(i, timeout=60)) for i in ids]
            await asyncio.sleep(0)  # let them start
            threads = threading.active_count()
            for _ in ids:
                job = await q.claim("w1")
                assert job is not None
                await q.complete(job, job.payload * 2)
            done = await asyncio.gather(*waits)
            assert [(j.status, j.result) for j in done] == [(JobStatus.COMPLETED, i * 2) for i in range(50)]
            assert threading.active_count() <= threads + 8, "a wait must not hold a thread"
            with pytest.raises(jobq.JobNotFound):
                await q.wait(10_000, timeout=1)
            pending = await q.enqueue({})
            with pytest.raises(TimeoutError, match=f"job {pending} did not finish within 0.1 s"):
                await q.wait(pending, timeout=0.1)

    asyncio.run(main())


@pytest.mark.postgres
def test_enqueue_and_complete_in_an_async_connection_transaction(postgres_url: str) -> None:
    import psycopg

    from jobq.backends.postgres.url import split_url

    libpq = split_url(postgres_url).libpq_url

    async def main() -> None:
        async with jobq.AsyncQueue(postgres_url) as q:
            async with await psycopg.AsyncConnection.connect(libpq) as conn:
                async with conn.transaction():
                    kept = await q.enqueue({"n": 1}, conn=conn, task="t")
                    assert (await q.counts())["PENDING"] == 0, "not visible before the commit"
                with pytest.raises(RuntimeError, match="rolled back"):
                    async with conn.transaction():
                        await q.enqueue({"n": 2}, conn=conn)
                        raise RuntimeError("rolled back")
                assert (await q.counts())["PENDING"] == 1
                assert (await q.get(kept)).task == "t"
                job = await q.claim("w1")
                assert job is not None
                async with conn.transaction():
                    await q.complete(job, {"ok": True}, conn=conn)
                assert (await q.wait(kept, timeout=5)).result == {"ok": True}
                with pytest.raises(jobq.LeaseLost):  # the same lease again: refused before any commit
                    async with conn.transaction():
                        await q.complete(job, {"twice": True}, conn=conn)
                await conn.set_autocommit(True)
                with pytest.raises(jobq.ConfigError, match="autocommit"):
                    await q.enqueue({}, conn=conn)
            with psycopg.connect(libpq) as blocking, pytest.raises(jobq.ConfigError, match="AsyncConnection"):
                await q.sync.backend.aenqueue_in(blocking, [], 0.0)

    asyncio.run(main())


class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    """A loop's default executor that refuses work: ``asyncio.to_thread`` and
    ``run_in_executor(None, ...)`` then fail, so a call that passes used no worker thread."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        raise AssertionError(f"a worker thread was asked to run {fn!r}")


@pytest.mark.postgres
@pytest.mark.parametrize("options", ["", "schema=billing", "pooler=transaction&prepare_threshold=none"])
def test_async_queue_is_native_on_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch, options: str) -> None:
    """Every call but open/close runs on the loop, on the pool's AsyncConnections: no thread;
    ``wait`` is woken by the asyncio LISTEN (the poll turned off), except behind a transaction
    pooler without ``listen_url``, where it must poll (no LISTEN through a pooler)."""
    import psycopg

    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}{options}" if options else postgres_url
    pooled = "pooler=transaction" in options
    if not pooled:
        monkeypatch.setattr(jobq.queue, "WAIT_POLL_SECONDS", 3600.0)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(_NoThreads())
        q = jobq.AsyncQueue(url)
        assert q.native
        job_id = await q.enqueue({"n": 1}, key="k")
        assert await q.enqueue({"n": 1}, key="k") == job_id
        waiting = asyncio.ensure_future(q.wait(job_id, timeout=60))
        job = await q.claim("w1", lease=30)
        assert job is not None and job.id == job_id
        assert await q.heartbeat(job) is False
        await asyncio.sleep(0.05)  # the waiter subscribes and reads PROCESSING meanwhile
        assert not waiting.done()
        await q.complete(job, {"ok": True})
        done = await asyncio.wait_for(waiting, 30)
        assert (done.status, done.result) == (JobStatus.COMPLETED, {"ok": True})
        second = await q.enqueue({}, max_attempts=1)
        job = await q.claim("w1")
        assert job is not None
        assert await q.fail(job, "boom") == JobStatus.FAILED
        assert (await q.get(second)).last_error == "boom"
        assert (await q.counts())["FAILED"] == 1 and (await q.stats()).counts["COMPLETED"] == 1
        assert [r.ok for r in await q.cancel_many(ids=[second])] == [True]  # FAILED -> CANCELLED
        assert (await q.get(second)).status == JobStatus.CANCELLED
        pool = q.store.pool
        assert pool is not None
        async with pool.connection() as conn:
            assert isinstance(conn, psycopg.AsyncConnection)
            if pooled:
                assert conn.prepare_threshold is None
        with pytest.raises(AssertionError, match="worker thread"):
            await q.aclose()  # closing the blocking backend underneath takes a thread: proof the check bites
        asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(1))
        await q.aclose()

    asyncio.run(main())
    if "schema=billing" in options:  # the calls went to the URL's schema
        with psycopg.connect(jobq.backends.postgres.url.split_url(url).libpq_url) as conn:
            assert conn.execute("SELECT count(*) FROM billing.jobs").fetchone() == (2,)


@pytest.mark.postgres
def test_one_async_queue_serves_many_waiters_on_one_listen_connection(postgres_url: str) -> None:
    import psycopg

    async def main() -> None:
        async with jobq.AsyncQueue(postgres_url) as q:
            ids = await q.enqueue_many(range(20))
            waits = [asyncio.ensure_future(q.wait(i, timeout=60)) for i in ids * 2]  # two per job
            # Polled, not slept on: under load the LISTEN connection took longer than the 0.1 s
            # this test once gave it (and its failure then left the waits to time out).
            libpq_url = jobq.backends.postgres.url.split_url(postgres_url).libpq_url
            listening = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
            )
            deadline = time.monotonic() + 30
            with psycopg.connect(libpq_url, autocommit=True) as conn:
                while (count := conn.execute(listening).fetchone()) == (0,) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # the waits' own coroutines run meanwhile
                assert count == (1,)  # one LISTEN session for every waiter
                assert conn.execute(listening).fetchone() == (1,)
            for _ in ids:
                job = await q.claim("w1")
                assert job is not None
                await q.complete(job, job.payload)
            done = await asyncio.gather(*waits)
            assert [j.result for j in done] == list(range(20)) * 2

    asyncio.run(main())


#: ``Queue`` methods ``AsyncQueue`` leaves out: the worker's, the scheduler's, the rescuer's and the
#: metrics exporter's own plumbing, and the ops app's chart reads (``history``, ``due_history``,
#: ``latest``, ``recent_events``): each runs a blocking ``Queue`` of its own. Also helpers that do
#: no I/O. Everything else an application or an operator calls is awaited the same way.
QUEUE_ONLY = {
    "ack_cancel", "backoff", "clock_base", "close", "complete_many_and_claim", "completion_cursor", "completion_totals",
    "completions_after", "due_history", "enqueue_totals", "event_totals", "events_after", "fail_many",
    "fire_schedule", "history", "last_event_id", "last_job_id", "latest", "listener", "mark_lost_workers",
    "newest_write", "next_due_at", "progress", "prune_workers", "queue_gauges", "recent_events", "register_worker",
    "release_many",
    "rescue_expired", "restamp_ahead", "result_text", "save_schedule", "settle_waiters", "sync_clock", "trace_contexts",
    "wall_time",
    "worker_seen", "worker_stopped",
}  # fmt: skip


def test_async_queue_has_every_call_of_the_queue_an_application_makes() -> None:
    """A method added to ``Queue`` is added to ``AsyncQueue`` too, or listed above on purpose (the
    schedules, limit history and worker registry were missing: an asyncio app could not add a
    schedule or list the workers without a blocking Queue of its own)."""
    public = {name for name, value in vars(jobq.Queue).items() if not name.startswith("_") and callable(value)}
    missing = sorted(public - set(dir(jobq.AsyncQueue)) - QUEUE_ONLY)
    assert missing == []
    assert sorted(QUEUE_ONLY - public) == []  # a name listed that Queue no longer has


def test_async_queue_schedules_limits_workers_and_progress(backend_url: str) -> None:
    async def main() -> None:
        async with jobq.AsyncQueue(backend_url) as q:
            info = await q.add_schedule("nightly", task="report", cron="0 3 * * *")
            assert info.name == "nightly" and [s.name for s in await q.schedules()] == ["nightly"]
            await q.pause_schedule("nightly", actor="ann")
            await q.resume_schedule("nightly", actor="bob")
            assert [(a.action, a.actor) for a in await q.schedule_history("nightly")] == [
                ("resume", "bob"),
                ("pause", "ann"),
            ]
            await q.remove_schedule("nightly")
            assert await q.schedules() == []
            with pytest.raises(jobq.ScheduleNotFound):
                await q.remove_schedule("nightly")

            await q.set_limits("mail", concurrency=2, actor="ann")
            cleared = await q.clear_limits("mail", actor="bob")
            assert cleared.concurrency is None
            assert [(e.action, e.actor) for e in await q.control_history("mail")] == [
                ("limits", "bob"),
                ("limits", "ann"),
            ]

            job_id = await q.enqueue({})
            job = await q.claim("w1")
            assert job is not None and job.id == job_id
            with jobq.Queue(backend_url) as blocking:
                assert blocking.progress(job, 0.5, "half") is False  # stored; no cancel asked
            assert (await q.progress_of([job_id]))[job_id].fraction == 0.5
            assert await q.workers() == []  # no worker registered: claims by hand

    asyncio.run(main())
