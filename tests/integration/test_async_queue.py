"""``jobq.AsyncQueue`` where it is more than the blocking facade in a thread: ``conn=`` on a
``psycopg.AsyncConnection`` (the ``ops`` generators driven by ``adrive``) and ``wait`` on the loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

import jobq
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
