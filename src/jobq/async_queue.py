"""``AsyncQueue``: the ``Queue`` API for asyncio code (FastAPI, aiohttp), without blocking the loop.

One copy of every rule. The rules live in the ``ops`` generators (run by ``SqlStore``'s methods)
and the ``Queue`` facade's checks (``Queue._new_job``, ``lease_of``, ``_target``); ``AsyncQueue``
adds no rule of its own:

- **PostgreSQL, natively.** Every call runs ``SqlStore``'s method on an ``AsyncPostgresStore``
  (``backends/postgres/aio.py``): the same ``ops`` generator, driven by ``ops.adrive`` on a
  ``psycopg.AsyncConnection`` from a ``psycopg_pool.AsyncConnectionPool``, with the blocking
  backend's retries; no thread. ``wait`` listens on one asyncio ``LISTEN`` connection per
  ``AsyncQueue`` (``AsyncFinishHub``), whatever the number of waiters.
- ``conn=`` with a ``psycopg.AsyncConnection`` runs the same generator on the caller's
  connection, in its transaction (``backends/postgres/caller.py``): a request handler enqueues in
  its own transaction and its workers are woken at its COMMIT.
- **SQLite** (apsw is a blocking driver): each call runs the blocking ``Queue`` method in a thread
  (``asyncio.to_thread``), so the loop never waits on a lock or the disk; ``wait`` watches its
  finish waiter's socket with ``loop.add_reader``, so a thousand waiting requests hold no thread.

Why not the other way round (one async core, sync wrappers, as procrastinate does): every
blocking call, the worker's hot path included, would pay for an event loop; see
docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from jobq import queue as queue_module
from jobq.backends.base import (
    ActionResult,
    ActionResults,
    Completion,
    ControlEvent,
    HeartbeatResult,
    JobFilter,
    Listener,
    NewJob,
    Page,
    Progress,
    QueueControl,
    QueueCopy,
    QueueStats,
    ScheduleAction,
    ScheduleInfo,
    WorkerInfo,
)
from jobq.backends.ops import TERMINAL_STATUSES
from jobq.config import Settings
from jobq.errors import DuplicateJob, InvalidPayload, InvalidTransition, JobNotFound, LeaseLost, OutcomeUnknown
from jobq.job import Event, Job, JobStatus
from jobq.observability import tracing
from jobq.queue import (
    Queue,
    _count_up_to,
    _purge_limit,
    actor_of,
    check_filter,
    check_key_options,
    check_page,
    check_queue_name,
    check_rows,
    check_wait_timeout,
    check_worker_id,
    enqueue_outcome_unknown,
    job_id_or_none,
    lease_of,
    leases_of,
    operator_targets,
    payload_list,
    purge_cutoff,
    purged_statuses,
)


def _is_async_connection(conn: object) -> bool:
    # Without importing psycopg (an extra): an asyncio connection has a coroutine ``commit``.
    return conn is not None and asyncio.iscoroutinefunction(getattr(conn, "commit", None))


_ENQUEUE_OPTIONS = {
    "queue": None,
    "task": "",
    "priority": 0,
    "delay": None,
    "run_at": None,
    "key_scope": "all",
    "key_ttl": None,
    "on_conflict": "return",
    "max_attempts": None,
    "timeout": None,
    "concurrency_key": None,
    "concurrency_keys": None,
    "backoff": None,
    "retry_on": None,
}


class AsyncQueue:
    """The ``Queue`` API as coroutines. Takes what ``Queue`` takes (``url``, ``settings``,
    ``clock``, ``create``); use ``async with`` or ``await aclose()``. Open one per event loop.

    >>> async with jobq.AsyncQueue("postgresql://localhost/app") as q:   # doctest: +SKIP
    ...     job = await q.wait(await q.enqueue({"n": 1}), timeout=30)
    """

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        self.sync = Queue(url, **kwargs)
        """The blocking facade underneath (settings, clock, backend, checks)."""
        make_store = getattr(self.sync.backend, "async_store", None)
        self.store: Any = make_store() if callable(make_store) else None
        """The native asyncio store (PostgreSQL's ``AsyncPostgresStore``), or None (SQLite:
        calls run the blocking ``Queue`` in a thread)."""
        self._hub: Any = self.store.finish_hub() if self.store is not None else None

    @property
    def settings(self) -> Settings:
        return self.sync.settings

    @property
    def url(self) -> str:
        return self.sync.url

    @property
    def native(self) -> bool:
        """True when calls run on the loop itself (PostgreSQL), False when in a thread (SQLite)."""
        return self.store is not None

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(functools.partial(func, *args, **kwargs))

    async def _check_clock(self) -> None:
        """``Queue._check_clock`` before a native call that stamps a lease: the measurement (three
        reads of the server's clock, once a minute or after a step) runs in a thread."""
        q = self.sync
        due = q._clock_due() if q._watching_clock else None
        if due is not None:
            await self._call(q._measure_clock, due)

    async def _now(self) -> float:
        """``Queue._now`` for a native call off the lease path: measured again first when due."""
        await self._check_clock()
        return self.sync.clock()

    async def _store(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``SqlStore.<method>`` on the native store, awaited (each returns a coroutine)."""
        return await getattr(self.store, method)(*args, **kwargs)

    async def __aenter__(self) -> AsyncQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._hub is not None:
            await self._hub.aclose()
        if self.store is not None:
            await self.store.aclose()
        await self._call(self.sync.close)

    # -- producers ---------------------------------------------------------------------------
    async def enqueue(self, payload: Any, *, conn: Any = None, key: str | None = None, **options: Any) -> int:
        """``Queue.enqueue``. ``conn``: a ``psycopg.AsyncConnection`` in an open transaction
        (PostgreSQL; the job commits with it) or what ``Queue.enqueue`` takes."""
        if self.store is None and not _is_async_connection(conn):
            return int(await self._call(self.sync.enqueue, payload, conn=conn, key=key, **options))
        return (await self._enqueue([payload], [key], options, conn))[0]

    async def enqueue_many(
        self,
        payloads: Iterable[Any],
        *,
        conn: Any = None,
        keys: Sequence[str | None] | None = None,
        **options: Any,
    ) -> list[int]:
        """``Queue.enqueue_many``; ``conn`` as for ``enqueue``."""
        if self.store is None and not _is_async_connection(conn):
            return list(await self._call(self.sync.enqueue_many, payloads, conn=conn, keys=keys, **options))
        items = payload_list(payloads)
        keys = None if keys is None else payload_list(keys, "keys")
        check_key_options(keys, options.get("key_scope", "all"), options.get("key_ttl"))
        if options.get("concurrency_keys") is not None:
            options["concurrency_keys"] = payload_list(options["concurrency_keys"], "concurrency keys")
        if "run_at" in options:
            raise TypeError("enqueue_many() got an unexpected keyword argument 'run_at'")
        if keys is not None and len(keys) != len(items):
            raise InvalidPayload(f"{len(keys)} keys for {len(items)} payloads")
        return await self._enqueue(
            items, list(keys) if keys is not None else [None] * len(items), options, conn, many=True
        )

    async def _enqueue(
        self, payloads: list[Any], keys: list[str | None], options: dict[str, Any], conn: Any, *, many: bool = False
    ) -> list[int]:
        unknown = options.keys() - _ENQUEUE_OPTIONS.keys()
        if unknown:
            raise TypeError(f"enqueue() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
        given = {**_ENQUEUE_OPTIONS, **options}
        q = self.sync
        await self._check_clock()
        now = q.clock()
        concurrency_keys = given.pop("concurrency_keys", None) or [given["concurrency_key"]] * len(payloads)
        if len(concurrency_keys) != len(payloads):
            raise InvalidPayload(f"{len(concurrency_keys)} concurrency keys for {len(payloads)} payloads")
        # The retry policy the enqueue set, checked once (Queue._policy); the task's defaults fill the rest.
        given["policy"] = q._policy(
            given["max_attempts"], given["timeout"], given.pop("backoff", None), given.pop("retry_on", None)
        )
        jobs: list[NewJob] = []
        if not payloads:  # no jobs: the options are checked all the same, as Queue.enqueue_many does
            q._new_job(None, **{**given, "key_scope": "all", "key_ttl": None}, key=None, now=now)
        for payload, key, ckey in zip(payloads, keys, concurrency_keys, strict=True):
            args = {**given, "concurrency_key": ckey}
            if many and key is None:  # Queue.enqueue_many's rule: a key's options apply to keyed jobs
                args.update(key_scope="all", key_ttl=None)
            jobs.append(q._new_job(payload, **args, key=key, now=now))  # the facade's checks, unchanged
        if not jobs:
            return []
        try:
            return await self._enqueue_jobs(jobs, now, conn)
        except OutcomeUnknown as exc:
            raise enqueue_outcome_unknown(exc) from None

    async def _enqueue_jobs(self, jobs: list[NewJob], now: float, conn: Any) -> list[int]:
        q = self.sync
        if conn is not None:
            if not _is_async_connection(conn):  # a blocking connection: its own thread
                if tracing.recording():
                    return list(await self._call(q._traced_enqueue, jobs, now, conn))
                return list(await self._call(q.backend.enqueue_in, conn, jobs, now))
            backend: Any = q.backend
            if not tracing.recording():
                return list(await backend.aenqueue_in(conn, jobs, now))
            # As Queue's traced enqueue: a span around it, its context stored with the jobs in
            # the caller's transaction (a rollback leaves neither).
            with tracing.enqueue_span(jobs[0].queue, jobs[0].task, len(jobs)) as (span, traces):
                ids: list[int] = await backend.aenqueue_in(conn, jobs, now, traces)
                tracing.set_job_ids(span, ids)
                return ids
        if tracing.recording():
            with tracing.enqueue_span(jobs[0].queue, jobs[0].task, len(jobs)) as (span, traces):
                ids = (
                    await self._store("enqueue", jobs, now, traces)
                    if traces
                    else await self._store("enqueue", jobs, now)
                )
                tracing.set_job_ids(span, ids)
                return list(ids)
        return list(await self._store("enqueue", jobs, now))

    # -- reads -------------------------------------------------------------------------------
    async def get(self, job_id: int) -> Job:
        if self.store is None:
            job: Job = await self._call(self.sync.get, job_id)
            return job
        if job_id_or_none(job_id) is None:
            raise JobNotFound(job_id)
        found: Job | None = await self._store("get", job_id)
        if found is None:
            raise JobNotFound(job_id)
        return found

    async def events(self, job_id: int) -> list[Event]:
        if self.store is None:
            return list(await self._call(self.sync.events, job_id))
        if job_id_or_none(job_id) is None:
            return []
        return list(await self._store("events", job_id))

    async def list_jobs(self, where: JobFilter | None = None, page: Page | None = None) -> list[Job]:
        if self.store is None:
            return list(await self._call(self.sync.list_jobs, where, page))
        return list(await self._store("list_jobs", check_filter(where), check_page(page or Page())))

    async def list_page(self, where: JobFilter | None = None, page: Page | None = None) -> tuple[int, list[Job]]:
        """How many jobs match ``where`` and the ``page`` of them, from one read (``Queue.list_page``)."""
        if self.store is None:
            total, jobs = await self._call(self.sync.list_page, where, page)
        else:
            total, jobs = await self._store("list_page", check_filter(where), check_page(page or Page()))
        return int(total), list(jobs)

    async def count(self, where: JobFilter | None = None, *, up_to: int | None = None) -> int:
        """``Queue.count``."""
        if self.store is None:
            return int(await self._call(self.sync.count, where, up_to=up_to))
        return int(await self._store("count_jobs", check_filter(where), _count_up_to(up_to)))

    async def counts(self) -> dict[str, int]:
        if self.store is None:
            return dict(await self._call(self.sync.counts))
        return dict(await self._store("counts"))

    async def stats(self) -> QueueStats:
        if self.store is None:
            stats: QueueStats = await self._call(self.sync.stats)
            return stats
        native: QueueStats = await self._store("stats", await self._now())
        return native

    # -- operators ---------------------------------------------------------------------------
    async def _one(self, results: Sequence[ActionResult], job_id: int, action: str) -> ActionResult:
        """``Queue._one`` without blocking: the action's single result, or its one-line error."""
        result = results[0]
        if result.status is None:
            raise JobNotFound(job_id)
        if result.held_by is not None:
            raise DuplicateJob(str((await self.get(job_id)).idempotency_key), result.held_by)
        if not result.ok:
            raise InvalidTransition(job_id, action, result.status.value)
        return result

    async def resubmit(self, job_id: int, *, actor: str | None = None) -> ActionResult:
        return await self._one(await self.resubmit_many(ids=[job_id], actor=actor), job_id, "resubmit")

    async def cancel(self, job_id: int, *, actor: str | None = None) -> ActionResult:
        return await self._one(await self.cancel_many(ids=[job_id], actor=actor), job_id, "cancel")

    async def resubmit_many(
        self, *, ids: Sequence[int] | None = None, where: JobFilter | None = None, actor: str | None = None
    ) -> ActionResults:
        if self.store is None:
            results: ActionResults = await self._call(self.sync.resubmit_many, ids=ids, where=where, actor=actor)
            return results
        return await self._act("resubmit", ids, where, actor)

    async def cancel_many(
        self, *, ids: Sequence[int] | None = None, where: JobFilter | None = None, actor: str | None = None
    ) -> ActionResults:
        if self.store is None:
            results: ActionResults = await self._call(self.sync.cancel_many, ids=ids, where=where, actor=actor)
            return results
        return await self._act("cancel", ids, where, actor)

    async def move(self, job_id: int, to: str, *, actor: str | None = None) -> ActionResult:
        return await self._one(await self.move_many(to, ids=[job_id], actor=actor), job_id, "move")

    async def move_many(
        self,
        to: str,
        *,
        ids: Sequence[int] | None = None,
        where: JobFilter | None = None,
        actor: str | None = None,
    ) -> ActionResults:
        if self.store is None:
            results: ActionResults = await self._call(self.sync.move_many, to, ids=ids, where=where, actor=actor)
            return results
        return await self._act("move", ids, where, actor, check_queue_name(to, "the queue to move to"))

    async def _act(
        self, action: str, ids: Sequence[int] | None, where: JobFilter | None, actor: str | None, *args: Any
    ) -> ActionResults:
        """``Queue._act`` on the native store: ``store.action(target, *args, actor, now)``."""
        target, impossible = operator_targets(ids, where)
        if target is None:
            return ActionResults(impossible)
        who = actor_of(actor, self.settings)
        results: ActionResults = await self._store(action, target, *args, who, await self._now())
        return results + impossible

    async def purge(
        self,
        *,
        older_than: float,
        statuses: Sequence[JobStatus | str] = (JobStatus.COMPLETED,),
        limit: int | None = None,
    ) -> int:
        if self.store is None:
            return int(await self._call(self.sync.purge, older_than=older_than, statuses=statuses, limit=limit))
        wanted = purged_statuses(statuses)
        cutoff = purge_cutoff(await self._now(), older_than)
        return int(await self._store("purge", wanted, cutoff, _purge_limit(limit)))

    async def backup(self, dest: str | os.PathLike[str], *, compact: bool = False) -> QueueCopy:
        """``Queue.backup`` in a thread (SQLite copies pages with a blocking driver)."""
        copy: QueueCopy = await self._call(self.sync.backup, dest, compact=compact)
        return copy

    # -- flow control (docs/flow-control.md) --------------------------------------------------
    async def pause(self, queue: str, *, actor: str | None = None) -> QueueControl:
        control: QueueControl = await self._call(self.sync.pause, queue, actor=actor)
        return control

    async def resume(self, queue: str, *, actor: str | None = None) -> QueueControl:
        control: QueueControl = await self._call(self.sync.resume, queue, actor=actor)
        return control

    async def set_limits(self, queue: str, **limits: Any) -> QueueControl:
        control: QueueControl = await self._call(self.sync.set_limits, queue, **limits)
        return control

    async def controls(self) -> list[QueueControl]:
        return list(await self._call(self.sync.controls))

    async def clear_limits(self, queue: str, *, actor: str | None = None) -> QueueControl:
        control: QueueControl = await self._call(self.sync.clear_limits, queue, actor=actor)
        return control

    async def control_history(self, queue: str | None = None, *, limit: int = 50) -> list[ControlEvent]:
        return list(await self._call(self.sync.control_history, queue, limit=limit))

    # -- schedules (docs/schedules.md): an operator's calls, in a thread as flow control's are ----
    async def add_schedule(self, name: str, *, task: str, **options: Any) -> ScheduleInfo:
        """``Queue.add_schedule``: ``cron`` or ``every``, and ``zone``, ``queue``, ``payload``,
        ``priority``, ``catchup``, ``overlap`` as there."""
        info: ScheduleInfo = await self._call(self.sync.add_schedule, name, task=task, **options)
        return info

    async def schedules(self, *, due: bool = False) -> list[ScheduleInfo]:
        return list(await self._call(self.sync.schedules, due=due))

    async def schedule_history(
        self, name: str | None = None, *, limit: int = queue_module.SCHEDULE_HISTORY_LIMIT_DEFAULT
    ) -> list[ScheduleAction]:
        return list(await self._call(self.sync.schedule_history, name, limit=limit))

    async def pause_schedule(self, name: str, *, actor: str | None = None) -> None:
        await self._call(self.sync.pause_schedule, name, actor=actor)

    async def resume_schedule(self, name: str, *, actor: str | None = None) -> None:
        await self._call(self.sync.resume_schedule, name, actor=actor)

    async def remove_schedule(self, name: str) -> None:
        await self._call(self.sync.remove_schedule, name)

    # -- what runs: the worker registry and running jobs' progress -----------------------------
    async def workers(self, limit: int = 200) -> list[WorkerInfo]:
        return list(await self._call(self.sync.workers, limit))

    async def blockers(self) -> list[str]:
        """``Queue.blockers`` in a thread (SQLite reads /proc; PostgreSQL one read)."""
        return list(await self._call(self.sync.blockers))

    async def progress_of(self, job_ids: Sequence[int]) -> dict[int, Progress]:
        """The latest progress report of each of ``job_ids`` that has one (``Queue.progress_of``)."""
        return dict(await self._call(self.sync.progress_of, job_ids))

    # -- workers -----------------------------------------------------------------------------
    async def claim(self, worker_id: str, **kwargs: Any) -> Job | None:
        jobs = await self.claim_many(worker_id, 1, **kwargs)
        return jobs[0] if jobs else None

    async def claim_many(
        self, worker_id: str, limit: int, *, lease: float | None = None, queue: str | Sequence[str] | None = None
    ) -> list[Job]:
        q = self.sync
        if self.store is None:
            return list(await self._call(q.claim_many, worker_id, limit, lease=lease, queue=queue))
        await self._check_clock()
        return list(
            await self._store(
                "claim", check_worker_id(worker_id), q._queues(queue), check_rows(limit, 0), q._lease(lease), q.clock
            )
        )

    async def heartbeat(self, job: Job, *, lease: float | None = None) -> bool:
        result = (await self.heartbeat_many([job], lease=lease))[0]
        if not result.alive:
            raise LeaseLost(job.id, "heartbeat")
        return result.cancel_requested

    async def heartbeat_many(self, jobs: Sequence[Job], *, lease: float | None = None) -> list[HeartbeatResult]:
        q = self.sync
        if self.store is None:
            return list(await self._call(q.heartbeat_many, jobs, lease=lease))
        leases = leases_of(jobs, "heartbeat_many")
        await self._check_clock()
        return list(await self._store("heartbeat", leases, q._lease(lease), q.clock)) if leases else []

    async def complete(self, job: Job, result: Any = None, *, conn: Any = None) -> None:
        """``Queue.complete``; ``conn``: a ``psycopg.AsyncConnection`` in an open transaction, or
        what ``Queue.complete`` takes."""
        if _is_async_connection(conn):
            await complete_in(self.sync, job, result, conn)
            return
        if self.store is None or conn is not None:
            await self._call(self.sync.complete, job, result, conn=conn)
            return
        if not (await self.complete_many([(job, result)]))[0]:
            raise LeaseLost(job.id, "complete")

    async def complete_many(
        self, items: Sequence[tuple[Job, Any]], *, notes: Sequence[str | None] | None = None, repeat: bool = False
    ) -> list[bool]:
        q = self.sync
        if self.store is None:
            return list(await self._call(q.complete_many, items, notes=notes, repeat=repeat))
        completions = q._completions(items, notes, "complete_many")
        return list(await self._store("complete", completions, q.clock, repeat=repeat)) if completions else []

    async def fail(self, job: Job, error: str, *, retry: bool = True) -> JobStatus:
        q = self.sync
        if self.store is None:
            status: JobStatus = await self._call(q.fail, job, error, retry=retry)
            return status
        left: JobStatus | None = (await self._store("fail", q._failures([(job, error, retry)], None), q.clock))[0]
        if left is None:
            raise LeaseLost(job.id, "fail")
        return left

    async def release(self, job: Job, reason: str = "worker shutting down", *, repeat: bool = False) -> bool:
        q = self.sync
        if self.store is None:
            return bool(await self._call(q.release, job, reason, repeat=repeat))
        return bool((await self._store("release", [lease_of(job)], q.clock, reason, repeat=repeat))[0])

    # -- waiting -----------------------------------------------------------------------------
    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """``Queue.wait`` without a thread: woken by the finish line the loop watches
        (PostgreSQL: the ``AsyncQueue``'s LISTEN connection; SQLite: the waiter's socket)."""
        check_wait_timeout(timeout)
        job = await self.get(job_id)
        if job.status.value in TERMINAL_STATUSES:
            return job
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def pause_or_timeout(job: Job) -> float:
            pause = queue_module.WAIT_POLL_SECONDS
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} did not finish within {timeout:g} s (it is {job.status.value})")
                pause = min(pause, left)
            return pause

        if self.store is not None:
            return await self._wait_native(job_id, pause_or_timeout)
        backend = self.sync.backend
        waiter: Listener = await self._call(backend.finish_waiter, job_id)
        woken = False
        try:
            while True:
                # As Queue.wait: listening before the read; after a wake-up, read once the writer is done.
                found: Job | None = await self._call(backend.get_after_writers if woken else backend.get, job_id)
                if found is None:
                    raise JobNotFound(job_id)
                if found.status.value in TERMINAL_STATUSES:
                    return found
                woken = await _readable(waiter, pause_or_timeout(found))
        finally:
            waiter.close()

    async def _wait_native(self, job_id: int, pause_or_timeout: Any) -> Job:
        registration: int | None = None
        registered_at = float("-inf")
        try:
            while True:
                # Subscribed (the LISTEN in place) and registered (job_waiters) before the read,
                # which waits for a finish holding the row: a finish after it wakes us (Queue.wait).
                future = await self._hub.subscribe(job_id) if self._hub is not None else None
                try:
                    if future is not None and time.time() - registered_at > queue_module.WAITER_ROW_SECONDS / 2:
                        old, registered_at = registration, time.time()
                        expires = registered_at + queue_module.WAITER_ROW_SECONDS
                        registration = await self._store("register_waiter", job_id, registered_at, expires)
                        await self._store("unregister_waiter", old)
                    job: Job | None = await self._store("get_after_writers", job_id)
                    if job is None:
                        raise JobNotFound(job_id)
                    if job.status.value in TERMINAL_STATUSES:
                        return job
                    pause = pause_or_timeout(job)
                    if future is None:
                        await asyncio.sleep(pause)
                    else:
                        await asyncio.wait([future], timeout=pause)
                finally:
                    if self._hub is not None:
                        self._hub.unsubscribe(job_id, future)
        finally:
            with contextlib.suppress(Exception):  # an expiry clears it if this fails
                await self._store("unregister_waiter", registration)

    list = list_jobs  # last in the class: the name shadows the builtin for annotations below it


async def complete_in(queue: Queue, job: Job, result: Any, conn: Any) -> None:
    """Complete ``job`` in the open transaction of ``conn``, a ``psycopg.AsyncConnection``, on the
    loop (``AsyncQueue.complete(conn=)``, ``JobContext.acomplete(conn=)``). Raises LeaseLost before
    the caller commits when the lease is gone."""
    completion = Completion(lease_of(job), queue.result_text(result))
    done = await queue.backend.acomplete_in(conn, [completion], queue.clock)  # type: ignore[attr-defined]
    if not done[0]:
        raise LeaseLost(job.id, "complete", "roll your transaction back")


async def _readable(waiter: Listener, pause: float) -> bool:
    """Wait until ``waiter`` has a wake-up (then take it: True) or ``pause`` seconds passed."""
    fileno = getattr(waiter, "fileno", None)
    fd = fileno() if callable(fileno) else -1
    if fd < 0:
        await asyncio.sleep(pause)
        return False
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
        return True
    return False
