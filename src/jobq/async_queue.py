"""``AsyncQueue``: the ``Queue`` API for asyncio code (FastAPI, aiohttp), without blocking the loop.

One copy of every rule. The rules live in the ``ops`` generators and the ``Queue`` facade's
checks; ``AsyncQueue`` adds no rule of its own:

- ``conn=`` with a ``psycopg.AsyncConnection`` (PostgreSQL) runs natively: the same ``ops``
  generator (``ops.enqueue``, ``ops.complete``) driven by ``ops.adrive`` on the caller's
  connection, in its transaction, after the same checks as the blocking ``conn=``
  (``backends/postgres/caller.py``); so a request handler enqueues in its own transaction
  and its workers are woken at its COMMIT.
- ``wait`` waits on the loop itself: the backend's finish waiter (SQLite: a datagram socket;
  PostgreSQL: a LISTEN connection) is watched with ``loop.add_reader``, so a thousand waiting
  requests hold no thread.
- every other call runs the blocking ``Queue`` method in a thread (``asyncio.to_thread``): SQLite's
  driver is blocking anyway, and on PostgreSQL these calls are short single transactions on the
  pool. A native ``AsyncConnectionPool`` store for them is not written yet (see CHANGELOG).

Why not the other way round (one async core, sync wrappers, as procrastinate does): every
blocking call, the worker's hot path included, would pay for an event loop; see
docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterable, Sequence
from typing import Any

from jobq import queue as queue_module
from jobq.backends.base import ActionResult, Completion, HeartbeatResult, JobFilter, Listener, Page, QueueStats
from jobq.backends.ops import TERMINAL_STATUSES
from jobq.config import Settings
from jobq.errors import InvalidPayload, LeaseLost
from jobq.job import Event, Job, JobStatus
from jobq.payloads import encode_json
from jobq.queue import Queue, lease_of


def _is_async_connection(conn: object) -> bool:
    # Without importing psycopg (an extra): an asyncio connection has a coroutine ``commit``.
    return conn is not None and asyncio.iscoroutinefunction(getattr(conn, "commit", None))


class AsyncQueue:
    """The ``Queue`` API as coroutines. Takes what ``Queue`` takes (``url``, ``settings``,
    ``clock``, ``create``); use ``async with`` or ``await aclose()``.

    >>> async with jobq.AsyncQueue("postgresql://localhost/app") as q:   # doctest: +SKIP
    ...     job = await q.wait(await q.enqueue({"n": 1}), timeout=30)
    """

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        self.sync = Queue(url, **kwargs)
        """The blocking facade underneath (settings, clock, backend, checks)."""

    @property
    def settings(self) -> Settings:
        return self.sync.settings

    @property
    def url(self) -> str:
        return self.sync.url

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(functools.partial(func, *args, **kwargs))

    async def __aenter__(self) -> AsyncQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._call(self.sync.close)

    # -- producers ---------------------------------------------------------------------------
    async def enqueue(self, payload: Any, *, conn: Any = None, **options: Any) -> int:
        """``Queue.enqueue``. ``conn``: a ``psycopg.AsyncConnection`` in an open transaction
        (PostgreSQL; the job commits with it) or what ``Queue.enqueue`` takes."""
        if _is_async_connection(conn):
            return (await self._enqueue_in(conn, [payload], options, single=True))[0]
        return int(await self._call(self.sync.enqueue, payload, conn=conn, **options))

    async def enqueue_many(self, payloads: Iterable[Any], *, conn: Any = None, **options: Any) -> list[int]:
        """``Queue.enqueue_many``; ``conn`` as for ``enqueue``."""
        if _is_async_connection(conn):
            return await self._enqueue_in(conn, list(payloads), options, single=False)
        return list(await self._call(self.sync.enqueue_many, payloads, conn=conn, **options))

    async def _enqueue_in(self, conn: Any, payloads: list[Any], options: dict[str, Any], *, single: bool) -> list[int]:
        q = self.sync
        now = q.clock()
        keys = options.pop("keys", None) if not single else [options.pop("key", None)]
        common = {
            "queue": options.pop("queue", None),
            "task": options.pop("task", ""),
            "priority": options.pop("priority", 0),
            "delay": options.pop("delay", None),
            "run_at": options.pop("run_at", None),
            "max_attempts": options.pop("max_attempts", None),
            "timeout": options.pop("timeout", None),
        }
        common["policy"] = q._policy(
            common["max_attempts"], common["timeout"], options.pop("backoff", None), options.pop("retry_on", None)
        )
        if options:
            raise TypeError(f"enqueue() got unexpected keyword arguments: {', '.join(sorted(options))}")
        if keys is not None and len(keys) != len(payloads):
            raise InvalidPayload(f"{len(keys)} keys for {len(payloads)} payloads")
        jobs = [
            q._new_job(p, key=keys[i] if keys else None, now=now, **common)  # the facade's checks, unchanged
            for i, p in enumerate(payloads)
        ]
        if not jobs:
            return []
        return await q.backend.aenqueue_in(conn, jobs, now)  # type: ignore[attr-defined,no-any-return]

    # -- reads -------------------------------------------------------------------------------
    async def get(self, job_id: int) -> Job:
        job: Job = await self._call(self.sync.get, job_id)
        return job

    async def events(self, job_id: int) -> list[Event]:
        return list(await self._call(self.sync.events, job_id))

    async def list_jobs(self, where: JobFilter | None = None, page: Page | None = None) -> list[Job]:
        return list(await self._call(self.sync.list_jobs, where, page))

    async def count(self, where: JobFilter | None = None) -> int:
        return int(await self._call(self.sync.count, where))

    async def counts(self) -> dict[str, int]:
        return dict(await self._call(self.sync.counts))

    async def stats(self) -> QueueStats:
        stats: QueueStats = await self._call(self.sync.stats)
        return stats

    # -- operators ---------------------------------------------------------------------------
    async def resubmit(self, job_id: int, *, actor: str | None = None) -> ActionResult:
        result: ActionResult = await self._call(self.sync.resubmit, job_id, actor=actor)
        return result

    async def cancel(self, job_id: int, *, actor: str | None = None) -> ActionResult:
        result: ActionResult = await self._call(self.sync.cancel, job_id, actor=actor)
        return result

    async def resubmit_many(self, **kwargs: Any) -> list[ActionResult]:
        return list(await self._call(self.sync.resubmit_many, **kwargs))

    async def cancel_many(self, **kwargs: Any) -> list[ActionResult]:
        return list(await self._call(self.sync.cancel_many, **kwargs))

    async def purge(self, *, older_than: float, statuses: Sequence[JobStatus | str] = (JobStatus.COMPLETED,)) -> int:
        return int(await self._call(self.sync.purge, older_than=older_than, statuses=statuses))

    # -- workers -----------------------------------------------------------------------------
    async def claim(self, worker_id: str, **kwargs: Any) -> Job | None:
        job: Job | None = await self._call(self.sync.claim, worker_id, **kwargs)
        return job

    async def claim_many(self, worker_id: str, limit: int, **kwargs: Any) -> list[Job]:
        return list(await self._call(self.sync.claim_many, worker_id, limit, **kwargs))

    async def heartbeat(self, job: Job, *, lease: float | None = None) -> bool:
        return bool(await self._call(self.sync.heartbeat, job, lease=lease))

    async def heartbeat_many(self, jobs: Sequence[Job], *, lease: float | None = None) -> list[HeartbeatResult]:
        return list(await self._call(self.sync.heartbeat_many, jobs, lease=lease))

    async def complete(self, job: Job, result: Any = None, *, conn: Any = None) -> None:
        """``Queue.complete``; ``conn``: a ``psycopg.AsyncConnection`` in an open transaction, or
        what ``Queue.complete`` takes."""
        if not _is_async_connection(conn):
            await self._call(self.sync.complete, job, result, conn=conn)
            return
        completion = Completion(lease_of(job), None if result is None else encode_json(result, "result"))
        done = await self.sync.backend.acomplete_in(conn, [completion], self.sync.clock)  # type: ignore[attr-defined]
        if not done[0]:
            raise LeaseLost(job.id, "complete", "roll your transaction back")

    async def complete_many(self, items: Sequence[tuple[Job, Any]], **kwargs: Any) -> list[bool]:
        return list(await self._call(self.sync.complete_many, items, **kwargs))

    async def fail(self, job: Job, error: str, *, retry: bool = True) -> JobStatus:
        status: JobStatus = await self._call(self.sync.fail, job, error, retry=retry)
        return status

    async def release(self, job: Job, reason: str = "released", **kwargs: Any) -> bool:
        return bool(await self._call(self.sync.release, job, reason, **kwargs))

    # -- waiting -----------------------------------------------------------------------------
    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """``Queue.wait`` without a thread: the finish waiter's socket is watched by the loop."""
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must not be negative")
        job = await self.get(job_id)
        if job.status.value in TERMINAL_STATUSES:
            return job
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiter: Listener = await self._call(self.sync.backend.finish_waiter, job_id)
        try:
            while True:
                job = await self.get(job_id)
                if job.status.value in TERMINAL_STATUSES:
                    return job
                pause = queue_module.WAIT_POLL_SECONDS
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise TimeoutError(
                            f"job {job_id} did not finish within {timeout:g} s (it is {job.status.value})"
                        )
                    pause = min(pause, left)
                await _readable(waiter, pause)
        finally:
            waiter.close()

    list = list_jobs  # last in the class: the name shadows the builtin for annotations below it


async def _readable(waiter: Listener, pause: float) -> None:
    """Wait until ``waiter`` has a wake-up (then take it) or ``pause`` seconds passed."""
    fileno = getattr(waiter, "fileno", None)
    fd = fileno() if callable(fileno) else -1
    if fd < 0:
        await asyncio.sleep(pause)
        return
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def woken() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, woken)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready, pause)
    finally:
        loop.remove_reader(fd)
    if ready.done():
        waiter.wait(0)  # take the wake-up (non-blocking: it is there)
