"""Flow control with real workers (docs/flow-control.md): a paused queue is skipped by a running
worker and taken up once resumed; a resume or a retry due now wakes idle workers; the asyncio
facade. Both backends."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from polling import wait_for
from worker_thread import running

import jobq
from jobq import JobStatus, WorkerInfo
from jobq.worker import JobContext, Worker


def test_a_worker_passes_over_a_paused_queue_and_takes_it_up_once_resumed(backend_url: str) -> None:
    ran: list[str] = []

    def handler(ctx: JobContext) -> None:
        ran.append(str(ctx.job.payload))

    with jobq.Queue(backend_url) as q:
        q.pause("mail", actor="ann")
        held = q.enqueue("held", queue="mail")
        with running(Worker(q, handler, queues=["mail", "other"], concurrency=2)):
            # Enqueued after the held job: once it ran, the worker had claimed past the paused queue.
            other = q.enqueue("other", queue="other")
            wait_for(lambda: q.get(other).status == JobStatus.COMPLETED, 30, "the unpaused queue's job")
            job = q.get(held)
            assert (job.status, job.attempts, ran) == (JobStatus.PENDING, 0, ["other"])
            assert q.stats().waiting_on_limit_by_queue == {"mail": 1}
            q.resume("mail", actor="bob")
            wait_for(lambda: q.get(held).status == JobStatus.COMPLETED, 30, "the resumed queue's job")
        assert ran == ["other", "held"]


def test_a_resume_wakes_the_queues_idle_workers(backend_url: str) -> None:
    with jobq.Queue(backend_url) as q:
        q.pause("mail")
        listener = q.listener("idle-worker", "mail")
        now = time.time()
        # Registered as a worker does: SQLite's wake-ups go to the addresses of live workers.
        q.register_worker(
            WorkerInfo("idle-worker", "idle", "h", os.getpid(), ("mail",), now, now, wake_address=listener.address)
        )
        try:
            while listener.wait(0):  # whatever was sent before
                pass
            q.set_limits("mail", concurrency=1)
            assert listener.wait(10), "a loosened limit wakes the queue's workers"
            q.resume("mail")
            assert listener.wait(10), "a resume wakes the queue's workers"
        finally:
            listener.close()


def test_a_retry_due_at_once_wakes_the_queues_idle_workers(backend_url: str) -> None:
    """A failed attempt whose retry is due now wakes idle workers, as a release does (before,
    another worker found it only at its next poll); a retry due later wakes nobody. One job (one
    statement on PostgreSQL) and two (the transaction)."""
    with jobq.Queue(backend_url) as q:
        listener = q.listener("idle-worker", "mail")
        now = time.time()
        q.register_worker(
            WorkerInfo("idle-worker", "idle", "h", os.getpid(), ("mail",), now, now, wake_address=listener.address)
        )
        try:
            q.enqueue_many(["a", "b", "c", "d"], queue="mail", max_attempts=3)
            for delays in ([60.0], [0.0], [60.0, 60.0], [0.0, 60.0]):
                jobs = [q.claim("w", queue="mail") for _ in delays]
                while listener.wait(0):  # whatever was sent before
                    pass
                held = [(job, delay) for job, delay in zip(jobs, delays, strict=True) if job is not None]
                assert held, delays
                # One delay per job failed (fail_many refuses a list of another length).
                q.fail_many([(job, "boom", True) for job, _ in held], delays=[delay for _, delay in held])
                soonest = min(delay for _, delay in held)
                woken = listener.wait(0.5 if soonest else 10)
                assert woken == (soonest == 0), f"retries in {[d for _, d in held]} s: woken {woken}"
        finally:
            listener.close()


def test_the_asyncio_facade_pauses_limits_and_keys(backend_url: str) -> None:
    async def main() -> None:
        async with jobq.AsyncQueue(backend_url) as aq:
            await aq.pause("mail", actor="ann")
            control = await aq.set_limits("mail", per_key=1, rate="5/s", actor="ann")
            assert (control.paused, control.per_key, control.rate_count, control.rate_window) == (True, 1, 5, 1.0)
            await aq.enqueue_many(["a", "b"], queue="mail", concurrency_key="k")
            assert await aq.claim("w", queue="mail") is None
            await aq.resume("mail")
            job = await aq.claim("w", queue="mail")
            assert job is not None and job.payload == "a"
            assert await aq.claim("w", queue="mail") is None  # "b" has the same key: it waits
            assert [c.queue for c in await aq.controls()] == ["mail"]

    asyncio.run(main())


def test_the_metrics_exporter_shows_paused_queues_and_limits(sqlite_url: str) -> None:
    from jobq.observability.metrics import JobqCollector

    with jobq.Queue(sqlite_url) as q:
        q.pause("mail")
        q.set_limits("api", concurrency=4, per_key=1, rate="10/min")
        families = {f.name: f for f in JobqCollector(q).collect()}
    paused = {s.labels["queue"]: s.value for s in families["jobq_queue_paused"].samples}
    limits = {(s.labels["queue"], s.labels["kind"]): s.value for s in families["jobq_queue_limit"].samples}
    assert paused == {"api": 0, "mail": 1}
    assert limits == {("api", "concurrency"): 4, ("api", "per_key"): 1, ("api", "rate_per_second"): 10 / 60}


def test_concurrency_keys_in_an_async_connection_transaction(postgres_url: str) -> None:
    import psycopg

    from jobq.backends.postgres.url import split_url

    async def main() -> None:
        async with jobq.AsyncQueue(postgres_url) as aq:
            await aq.set_limits("sync", per_key=1)
            async with await psycopg.AsyncConnection.connect(split_url(postgres_url).libpq_url) as conn:
                async with conn.transaction():
                    await aq.enqueue("a1", queue="sync", concurrency_key="a", conn=conn)
                    await aq.enqueue_many(["a2", "b1"], queue="sync", concurrency_keys=["a", "b"], conn=conn)
                with pytest.raises(jobq.InvalidPayload, match="1 concurrency keys for 2 payloads"):
                    await aq.enqueue_many(["x", "y"], queue="sync", concurrency_keys=["a"], conn=conn)
            claimed = await aq.claim_many("w", 10, queue="sync")
            assert sorted(str(j.payload) for j in claimed) == ["a1", "b1"]  # a2 waits behind its key

    asyncio.run(main())


def test_a_rate_holds_between_handles_whose_clocks_are_apart_below_the_correction(backend_url: str) -> None:
    """Two handles whose clocks are 1.5 s apart (hosts each within a second of the server's, so
    neither is corrected) claim a 4/s queue in turns. The one behind reads each admission of the
    other 1.75 s ahead, further than one step: taken as a time written by a clock set back
    (``jobq.flow.next_admission``), it moved the next admission back to one step from its own now,
    and the handle ahead admitted again at once, every turn. Within the slack it is taken as
    written: the handle ahead admits one job per step and the one behind waits."""
    from jobq.testing import FakeClock

    clock = FakeClock()
    with jobq.Queue(backend_url, clock=clock) as ahead, jobq.Queue(backend_url, clock=lambda: clock() - 1.5) as behind:
        ahead.enqueue_many(list(range(40)), queue="mail")
        ahead.set_limits("mail", rate="4/s")
        admitted: list[float] = []  # by the clock of the handle ahead
        start = clock.now
        while clock.now < start + 5:
            for handle in (ahead, behind):
                admitted += [clock.now] * len(handle.claim_many("w", 10, queue="mail"))
            clock.advance(0.0625)
        assert 18 <= len(admitted) <= 21, admitted
        for i, at in enumerate(admitted):
            assert sum(1 for t in admitted[i:] if t < at + 1.0) <= 4, admitted
