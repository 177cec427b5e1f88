"""The Backend protocol implemented once, over the operations in ``ops`` and a dialect's SQL.

A concrete backend (``sqlite``, ``postgres``) adds only what is really its own: how it connects,
how it runs one operation in one transaction (locking, busy and deadlock retries, connection loss,
commits whose outcome is unknown) and how idle workers are woken.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

from jobq.backends import base, ops
from jobq.backends.base import (
    STATS_FINISHED_WINDOW,
    ActionResults,
    Bucket,
    Clock,
    Completion,
    CompletionTotals,
    ControlEvent,
    ControlUpdate,
    DueHistory,
    EventTotals,
    Failure,
    HeartbeatResult,
    HistogramBounds,
    JobFilter,
    Lease,
    Listener,
    MetricEvent,
    NewJob,
    Page,
    Progress,
    QueueControl,
    QueueGauges,
    QueueStats,
    RescueResult,
    ScheduleAction,
    ScheduleInfo,
    WorkerEnd,
    WorkerInfo,
)
from jobq.backends.statements import Dialect
from jobq.errors import ConfigError, OutcomeUnknown, StorageError
from jobq.job import Event, Job, JobStatus

T = TypeVar("T")
#: Builds a fresh operation: a transaction that is retried runs the operation again from its start.
MakeOp = Callable[[], ops.Op[T]]

TOKEN_NONCE_BYTES = 12
"""Random bytes of a claim's nonce, the first part of each lease token it hands out."""


def _nonce() -> str:
    """A claim's nonce: ``secrets.token_hex(TOKEN_NONCE_BYTES)`` without its three Python calls
    (the same source, the kernel's CSPRNG; the per-job claim makes one per job)."""
    return os.urandom(TOKEN_NONCE_BYTES).hex()


def _after_chunks(exc: StorageError, done: int, verb: str) -> StorageError:
    """A long write's error, saying what its committed chunks did (an operator acting on 50,000
    jobs learns that the first 40,000 were done, and that the same action again does the rest)."""
    if not done:
        return exc
    jobs = "1 job was" if done == 1 else f"{done:,} jobs were"
    # Of the same class: an OutcomeUnknown stays one.
    return type(exc)(f"{exc} ({jobs} {verb} in the chunks before, which committed: run it again for the rest)")


#: One transaction of a store method: the operation ``make()`` builds, whether it writes, and what
#: settles an unknown outcome (``SqlStore._transaction``'s arguments). A plain tuple: the hot path
#: builds one per call, and a NamedTuple costs several times as much to make.
Txn = tuple[MakeOp[T], bool, "MakeOp[T] | None"]

#: A store method as data: a generator that yields the transactions it runs, one at a time, is sent
#: each one's result (a transaction's StorageError is thrown into it, at the ``yield``: a plan of
#: several commits may say what it had done), and returns the method's. The blocking driver
#: (``SqlStore._run_plan``) and the asyncio one (``AsyncPostgresStore._run_plan``) run the same
#: plan, so a method that needs two transactions, or looks at a result before it returns, is
#: written once (the ``ops`` generators do the same one level down, for the statements of one
#: transaction).
Plan = Generator[Txn[Any], Any, T]
#: What a method hands its driver: a plan, or its one transaction as it is (most methods: no
#: generator to step through on the hot path).
Work = Plan[T] | Txn[T]


def _one(make: MakeOp[T], *, write: bool, on_unknown: MakeOp[T] | None = None) -> Plan[T]:
    """One transaction as a step of a longer plan: ``result = yield from _one(...)``."""
    result: T = yield (make, write, on_unknown)
    return result


def _probed(
    probe: MakeOp[bool],
    write: MakeOp[list[T]],
    *,
    harmless_twice: bool = False,
    settle: MakeOp[list[T]] | None = None,
) -> Plan[list[T]]:
    """The write transaction ``write`` only if the read ``probe`` finds something to do: the loops
    every live worker runs every few seconds (rescues, lost workers) mostly find nothing, and a
    write transaction that changes nothing still takes SQLite's one write lock (an operator's
    ``sqlite3`` shell, which waits for no lock, was refused on it). A commit whose reply was lost
    is settled by ``settle``, or with ``harmless_twice`` by writing again
    (``_write_again_if_unknown``)."""
    if not (yield from _one(probe, write=False)):
        return []
    return (yield from _one(write, write=True, on_unknown=write if harmless_twice else settle))


def _sent_once(make: MakeOp[None]) -> Plan[None]:
    """A write not sent again after a lost reply, nor reported: what it did, if anything, is left
    as it is (an unregistration, whose row expires: see ``waiters.sql``)."""
    with contextlib.suppress(OutcomeUnknown):
        yield from _one(make, write=True)


def _any(plan: Plan[list[T]]) -> Plan[bool]:
    """Whether ``plan`` returned anything."""
    return bool((yield from plan))


def _value(value: T) -> Plan[T]:
    """The plan of a call that needs no transaction (an empty batch): its answer, and no yield
    reached, so even then the asyncio store returns an awaitable, as for any other call."""
    return value
    yield  # a generator: never reached


def _flagged(op: ops.Op[ops.Claimed]) -> ops.Op[tuple[ops.Claimed, int]]:
    """A claim's read-back after an unknown outcome, as ``ops.claim`` returns it: controlled
    queues may remain (the general claim that follows finds out, under the lock)."""
    jobs = yield from op
    return jobs, ops.CONTROLLED


def _flagged_too(op: ops.Op[tuple[list[bool], ops.Claimed]]) -> ops.Op[tuple[list[bool], ops.Claimed, int]]:
    """``_flagged`` for ``complete_and_claim``'s read-back after an unknown outcome."""
    done, jobs = yield from op
    return done, jobs, ops.CONTROLLED


class SqlStore:
    """Every Backend operation on top of ``_transaction``: each method returns ``_run_plan(plan)``
    as it is, its plan (``Plan``) naming its transactions, so that a driver other than the blocking
    one (``AsyncPostgresStore``'s: a coroutine) runs every method unchanged. A method therefore never
    looks at a transaction's result itself: what depends on one goes into its plan
    (tests/unit/test_store_plans.py checks every Protocol method)."""

    url: str
    single_host: bool
    dialect: Dialect

    # -- what a backend provides ---------------------------------------------------------
    def _transaction(self, make: MakeOp[T], *, write: bool, on_unknown: MakeOp[T] | None = None) -> T:
        """Run the operation ``make()`` in one transaction and return its result.

        ``on_unknown``: if the connection is lost after COMMIT was sent (the outcome unknown),
        run this one instead, in a new transaction, to find out (see ``ops``)."""
        raise NotImplementedError

    def _in_caller_transaction(self, conn: object, make: MakeOp[T]) -> T:
        """Run the operation ``make()`` on the application's open connection ``conn``, inside its
        current transaction: never begun, committed or rolled back here, and never retried (the
        transaction is the caller's). Raises ConfigError for a connection of the wrong kind or on
        another database, StorageError for a closed one or a failed transaction."""
        raise NotImplementedError

    async def _in_async_caller_transaction(self, conn: object, make: MakeOp[T]) -> T:
        """``_in_caller_transaction`` on an asyncio connection (``jobq.AsyncQueue``'s ``conn=``)."""
        raise ConfigError(f"conn=: {type(self).__name__} takes no asyncio connection; pass a blocking one")

    def listener(self, worker_id: str, queues: Sequence[str]) -> Listener:
        raise NotImplementedError

    def finish_waiter(self, job_id: int) -> Listener:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _run_plan(self, work: Work[T]) -> T:
        """Run a method's transactions one after the other, each sent its result; return the
        plan's. The blocking driver; the asyncio store's returns a coroutine doing the same."""
        if isinstance(work, tuple):
            make, write, on_unknown = work
            return self._transaction(make, write=write, on_unknown=on_unknown)
        try:
            make, write, on_unknown = next(work)
            while True:
                try:
                    done = self._transaction(make, write=write, on_unknown=on_unknown)
                except StorageError as exc:
                    make, write, on_unknown = work.throw(exc)
                else:
                    make, write, on_unknown = work.send(done)
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _read(self, make: MakeOp[T]) -> T:
        return self._run_plan((make, False, None))

    def _write(self, make: MakeOp[T], *, on_unknown: MakeOp[T] | None = None) -> T:
        return self._run_plan((make, True, on_unknown))

    def _write_again_if_unknown(self, make: MakeOp[T]) -> T:
        """A write that does no harm done twice (an upsert, an update or delete of one row by its
        key; a waiter's registration, see there): a commit whose reply was lost is settled by
        writing it again."""
        return self._run_plan((make, True, make))

    # -- producers -------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()) -> list[int]:
        if not jobs:
            return self._run_plan(_value([]))
        d = self.dialect
        settle: MakeOp[list[int]] | None = None
        if jobs[0].idempotency_key is not None and all(j.idempotency_key is not None for j in jobs):
            # Keyed jobs are recognised by their keys: an enqueue whose commit reply was lost is
            # settled by sending it again (without keys it cannot be, and the caller is told).
            settle = lambda: ops.enqueued_by_key(d, jobs, now, traces)  # noqa: E731
        return self._write(lambda: ops.enqueue(d, jobs, now, traces), on_unknown=settle)

    def enqueue_in(
        self, conn: object, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()
    ) -> list[int]:
        return self._in_caller_transaction(conn, lambda: ops.enqueue(self.dialect, jobs, now, traces))

    # -- workers ---------------------------------------------------------------------------
    def claim(self, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, clock: Clock) -> list[Job]:
        return self._run_plan(self._claim_plan(worker_id, queues, limit, lease_seconds, clock))

    def _claim_plan(
        self, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, clock: Clock
    ) -> Plan[list[Job]]:
        nonce = _nonce()
        d = self.dialect
        # The transaction yielded as it is, not through ``_one``: a generator fewer on every claim.
        claimed: tuple[ops.Claimed, int] = yield (
            lambda: ops.claim(d, worker_id, queues, limit, lease_seconds, clock, nonce),
            True,
            self._claimed_back(worker_id, nonce),
        )
        if claimed[0].unread:
            claimed[0].rows = yield from _one(lambda: ops.claimed_rows(d, claimed[0]), write=False)
        jobs, controlled = claimed[0].build(), claimed[1]  # after the commit: outside SQLite's lock
        if not controlled or len(jobs) >= limit:  # the usual claim: no generator more
            return jobs
        return (
            yield from self._claim_controlled_too(
                jobs, controlled, worker_id, queues, limit, lease_seconds, clock, nonce
            )
        )

    def _claimed_back(self, worker_id: str, nonce: str) -> MakeOp[tuple[ops.Claimed, int]]:
        """A claim's settle when its commit's outcome is unknown: what it handed out, read back
        by its nonce (``ops.claimed_by_nonce``)."""
        return lambda: _flagged(ops.claimed_by_nonce(self.dialect, worker_id, nonce))

    def _completed_again(self, items: Sequence[Completion], clock: Clock) -> MakeOp[list[bool]]:
        """A completion's settle when its commit's outcome is unknown: the same completion
        repeated, which a lease it already applied to reports done and does not refuse."""
        return lambda: ops.complete(self.dialect, items, clock, True)

    def _claim_controlled_too(
        self,
        jobs: list[Job],
        controlled: int,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        clock: Clock,
        nonce: str,
    ) -> Plan[list[Job]]:
        """``jobs`` and, when a one-statement claim said paused or limited queues remain among
        ``queues`` (``controlled``) and it got fewer than ``limit``, theirs: their claim locks
        their control rows, in a transaction of its own."""
        if not controlled or len(jobs) >= limit:
            return jobs
        d, more = self.dialect, limit - len(jobs)
        return jobs + (
            yield from _one(
                lambda: ops.claim_controlled(d, worker_id, queues, more, lease_seconds, clock, nonce, controlled),
                write=True,
                on_unknown=lambda: ops.claimed_also(d, worker_id, nonce, jobs),
            )
        )

    def heartbeat(self, leases: Sequence[Lease], lease_seconds: float, clock: Clock) -> list[HeartbeatResult]:
        if not leases:
            return self._run_plan(_value([]))

        # Extending a lease again is harmless; a refusal, though, was recorded by the lost commit
        # already, and the repeat does not record it again.
        return self._write(
            lambda: ops.heartbeat(self.dialect, leases, lease_seconds, clock),
            on_unknown=lambda: ops.heartbeat(self.dialect, leases, lease_seconds, clock, repeat=True),
        )

    def complete(self, items: Sequence[Completion], clock: Clock, *, repeat: bool = False) -> list[bool]:
        return self._write(
            lambda: ops.complete(self.dialect, items, clock, repeat),
            on_unknown=self._completed_again(items, clock),
        )

    async def aenqueue_in(
        self, conn: object, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()
    ) -> list[int]:
        return await self._in_async_caller_transaction(conn, lambda: ops.enqueue(self.dialect, jobs, now, traces))

    async def acomplete_in(self, conn: object, items: Sequence[Completion], clock: Clock) -> list[bool]:
        return await self._in_async_caller_transaction(conn, lambda: ops.complete(self.dialect, items, clock, False))

    def complete_in(self, conn: object, items: Sequence[Completion], clock: Clock) -> list[bool]:
        return self._in_caller_transaction(conn, lambda: ops.complete(self.dialect, items, clock, False))

    def complete_and_claim(
        self,
        items: Sequence[Completion],
        clock: Clock,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        repeat: bool = False,
    ) -> tuple[list[bool], list[Job]]:
        nonce = _nonce()
        d = self.dialect

        def plan() -> Plan[tuple[list[bool], list[Job]]]:
            done, claimed, controlled = yield from _one(
                lambda: ops.complete_and_claim(d, items, clock, repeat, worker_id, queues, limit, lease_seconds, nonce),
                write=True,
                on_unknown=lambda: _flagged_too(ops.completed_and_claimed(d, items, clock, worker_id, nonce)),
            )
            if claimed.unread:
                claimed.rows = yield from _one(lambda: ops.claimed_rows(d, claimed), write=False)
            jobs = claimed.build()  # after the commit: outside SQLite's lock
            more = self._claim_controlled_too(jobs, controlled, worker_id, queues, limit, lease_seconds, clock, nonce)
            return done, (yield from more)

        return self._run_plan(plan())

    def fail(self, items: Sequence[Failure], clock: Clock, *, repeat: bool = False) -> list[JobStatus | None]:
        return self._write(
            lambda: ops.fail(self.dialect, items, clock, repeat),
            on_unknown=lambda: ops.fail(self.dialect, items, clock, True),
        )

    def release(self, leases: Sequence[Lease], clock: Clock, reason: str, *, repeat: bool = False) -> list[bool]:
        return self._write(
            lambda: ops.release(self.dialect, leases, clock, reason, repeat),
            on_unknown=lambda: ops.release(self.dialect, leases, clock, reason, True),
        )

    def ack_cancel(self, leases: Sequence[Lease], clock: Clock, *, repeat: bool = False) -> list[bool]:
        return self._write(
            lambda: ops.ack_cancel(self.dialect, leases, clock, repeat),
            on_unknown=lambda: ops.ack_cancel(self.dialect, leases, clock, True),
        )

    def rescue_expired(
        self,
        clock: Clock,
        backoff: Callable[[int], float],
        actor: str,
        gone_owners: Sequence[str] = (),
        cutoff: Callable[[float], float] | None = None,
        attempts_limit: Callable[[str, str | None, int], int] | None = None,
    ) -> list[RescueResult]:
        return self._run_plan(self._rescue_plan(clock, backoff, actor, gone_owners, cutoff, attempts_limit))

    def _rescue_plan(
        self,
        clock: Clock,
        backoff: Callable[[int], float],
        actor: str,
        gone_owners: Sequence[str],
        cutoff: Callable[[float], float] | None,
        attempts_limit: Callable[[str, str | None, int], int] | None,
    ) -> Plan[list[RescueResult]]:
        d = self.dialect
        made: list[tuple[list[RescueResult], float]] = []  # what the rescue's last run did

        def write() -> ops.Op[list[RescueResult]]:
            return ops.rescue(d, clock, backoff, actor, gone_owners, cutoff, attempts_limit, made)

        return (
            yield from _probed(
                lambda: ops.rescue_probe(d, clock(), gone_owners),
                write,
                settle=lambda: ops.rescue_settled(d, write, made, actor),
            )
        )

    def next_due_at(self, queues: Sequence[str], now: float) -> float | None:
        return self._read(lambda: ops.next_due_at(self.dialect, queues, now))

    def newest_write(self) -> float | None:
        return self._read(lambda: ops.newest_write(self.dialect))

    def restamp_ahead(self, now: float, step: float, ahead: float, actor: str) -> list[int]:
        # Made again, a restamp that committed finds its rows no longer ahead: nothing more moves.
        return self._write_again_if_unknown(lambda: ops.restamp_ahead(self.dialect, now, step, ahead, actor))

    # -- flow control ----------------------------------------------------------------------
    def update_control(self, queue: str, update: ControlUpdate, actor: str, now: float) -> QueueControl:
        # Made again, a change that committed finds itself made: no second history row, and the
        # controls come back as they are (an operator's `jobq pause` then says what it did).
        return self._write_again_if_unknown(lambda: ops.update_control(self.dialect, queue, update, actor, now))

    def controls(self) -> list[QueueControl]:
        return self._read(lambda: ops.controls(self.dialect))

    def control_history(self, queue: str | None, limit: int) -> list[ControlEvent]:
        return self._read(lambda: ops.control_history(self.dialect, queue, limit))

    # -- operators -------------------------------------------------------------------------
    def resubmit(self, where: JobFilter, actor: str, now: float) -> ActionResults:
        return self._run_plan(self._chunked(ops.resubmit, where, actor, now))

    def cancel(self, where: JobFilter, actor: str, now: float) -> ActionResults:
        return self._run_plan(self._chunked(ops.cancel, where, actor, now))

    def move(self, where: JobFilter, to: str, actor: str, now: float) -> ActionResults:
        return self._run_plan(self._chunked(functools.partial(ops.move, to=to), where, actor, now))

    def _chunked(
        self, action: Callable[..., ops.Op[ops.Chunk]], where: JobFilter, actor: str, now: float
    ) -> Plan[ActionResults]:
        """An operator's action, ``OPERATOR_CHUNK_JOBS`` jobs a transaction in id order until none
        is left, pausing after each as a purge does (SQLite's writers take the lock in between).
        The results are gathered compactly (``ActionResults``): an action may touch millions. A
        chunk whose COMMIT's reply is lost is settled (``ops.chunk_settled``), not run blindly again."""
        d, after = self.dialect, 0
        out = ActionResults()
        named, seen = set(where.ids), frozenset[int]()
        while True:
            began = time.monotonic()
            chunk = functools.partial(action, d, where, actor, now, after, base.OPERATOR_CHUNK_JOBS, seen)
            made: list[ops.Chunk] = []  # what the chunk's last run did, for a lost COMMIT reply
            settle = functools.partial(ops.chunk_settled, d, chunk, made, actor, now)
            try:
                results, following = yield (functools.partial(ops.recorded, chunk, made), True, settle)
            except StorageError as exc:
                raise _after_chunks(exc, sum(r.ok for r in out), "acted on") from None
            out.extend(results)
            if following is None:
                return out
            after = following
            if named:  # the last chunk reports the named ids no chunk found
                seen = seen | {r.job_id for r in results if r.job_id in named}
            self._pause(began)

    def purge(self, statuses: Sequence[JobStatus], finished_before: float, limit: int | None = None) -> int:
        if not statuses or limit == 0:
            return self._run_plan(_value(0))
        return self._run_plan(self._purge_plan(statuses, finished_before, limit))

    def _purge_plan(self, statuses: Sequence[JobStatus], finished_before: float, limit: int | None) -> Plan[int]:
        """One transaction per ``PURGE_CHUNK_JOBS`` jobs, until a chunk comes back short or
        ``limit`` are gone, with a pause after each on SQLite (``Dialect.chunk_pause_share``), so
        that other writers (every worker) take the lock in between."""
        d, total = self.dialect, 0
        while True:
            chunk = base.PURGE_CHUNK_JOBS if limit is None else min(base.PURGE_CHUNK_JOBS, limit - total)
            began = time.monotonic()
            run = functools.partial(ops.purge, d, statuses, finished_before, chunk)
            made: list[list[int]] = []  # the ids the chunk's last run deleted, for a lost COMMIT reply
            settle = functools.partial(ops.purge_settled, d, run, made)
            try:
                ids: list[int] = yield (functools.partial(ops.recorded, run, made), True, settle)
            except StorageError as exc:
                raise _after_chunks(exc, total, "purged") from None
            gone = len(ids)
            total += gone
            if gone < chunk or total == limit:
                return total
            self._pause(began)

    def _pause(self, began: float) -> None:
        """Between the chunks of a long write (a purge, an operator's action), on SQLite: a pause
        as long a share of the chunk's time (``Dialect.chunk_pause_share``; 0 on PostgreSQL, whose
        row locks keep nobody waiting). Only the blocking driver runs SQLite: no event loop."""
        if self.dialect.chunk_pause_share:
            time.sleep((time.monotonic() - began) * self.dialect.chunk_pause_share)

    # -- reads -----------------------------------------------------------------------------
    def get(self, job_id: int) -> Job | None:
        return self._read(lambda: ops.get(self.dialect, job_id))

    def get_after_writers(self, job_id: int) -> Job | None:
        return self._read(lambda: ops.get_locked(self.dialect, job_id))

    def register_waiter(self, job_id: int, now: float, expires: float) -> int | None:
        if "register_waiter" not in self.dialect.sql:
            return self._run_plan(_value(None))  # this dialect wakes waiters without being told who waits
        # A registration whose COMMIT's reply was lost is made again: the first row, if it
        # committed, only wakes this waiter once more, and expires (Queue.wait raised instead).
        return self._write_again_if_unknown(lambda: ops.register_waiter(self.dialect, job_id, now, expires))

    def unregister_waiter(self, waiter: int | None) -> None:
        if waiter is None:
            return self._run_plan(_value(None))
        return self._run_plan(_sent_once(lambda: ops.unregister_waiter(self.dialect, waiter)))

    def settle_waiters(self, now: float) -> bool:
        if "waiters_settle" not in self.dialect.sql:
            return self._run_plan(_value(False))  # no count of waiters to settle in this dialect
        d = self.dialect
        # Done again after a lost reply, it finds nothing more to do, or does the same.
        plan = _probed(
            lambda: ops.settle_waiters_probe(d, now), lambda: ops.settle_waiters(d, now), harmless_twice=True
        )
        return self._run_plan(_any(plan))

    def events(self, job_id: int) -> list[Event]:
        return self._read(lambda: ops.events(self.dialect, job_id))

    def recent_events(self, limit: int, kinds: Sequence[str] = ()) -> list[Event]:
        return self._read(lambda: ops.recent_events(self.dialect, limit, kinds))

    def list_jobs(self, where: JobFilter, page: Page) -> list[Job]:
        return self._read(lambda: ops.list_jobs(self.dialect, where, page))

    def count_jobs(self, where: JobFilter, up_to: int | None = None) -> int:
        return self._read(lambda: ops.count_jobs(self.dialect, where, up_to))

    def list_page(self, where: JobFilter, page: Page) -> tuple[int, list[Job]]:
        return self._read(lambda: ops.list_page(self.dialect, where, page))

    def counts(self) -> dict[str, int]:
        return self._read(lambda: ops.counts(self.dialect))

    def stats(self, now: float, *, finished_window: int = STATS_FINISHED_WINDOW) -> QueueStats:
        return self._read(lambda: ops.stats(self.dialect, now, finished_window))

    def latest_jobs(self, status: JobStatus | None, limit: int) -> list[Job]:
        return self._read(lambda: ops.latest_jobs(self.dialect, status, limit))

    def history(self, since: float, bucket_seconds: float, now: float) -> list[Bucket]:
        return self._read(lambda: ops.history(self.dialect, since, bucket_seconds, now))

    def due_history(self, since: float, bucket_seconds: float, now: float, limit: int) -> DueHistory:
        return self._read(lambda: ops.due_history(self.dialect, since, bucket_seconds, now, limit))

    # -- observability ---------------------------------------------------------------------
    def progress(self, lease: Lease, fraction: float | None, message: str | None, clock: Clock) -> HeartbeatResult:
        # Writing the same progress again is harmless; a refusal is not recorded twice (heartbeat).
        return self._write(
            lambda: ops.progress(self.dialect, lease, fraction, message, clock),
            on_unknown=lambda: ops.progress(self.dialect, lease, fraction, message, clock, repeat=True),
        )

    def progress_of(self, job_ids: Sequence[int]) -> dict[int, Progress]:
        if not job_ids:
            return self._run_plan(_value({}))
        return self._read(lambda: ops.progress_of(self.dialect, job_ids))

    def trace_contexts(self, job_ids: Sequence[int]) -> dict[int, str]:
        if not job_ids:
            return self._run_plan(_value({}))
        return self._read(lambda: ops.trace_contexts(self.dialect, job_ids))

    def queue_gauges(self, now: float, backlog: bool = True) -> dict[str, QueueGauges]:
        return self._read(lambda: ops.queue_gauges(self.dialect, now, backlog))

    def last_event_id(self, before: float | None = None) -> int:
        return self._read(lambda: ops.last_event_id(self.dialect, before))

    def events_after(self, after_id: int, limit: int) -> list[MetricEvent]:
        return self._read(lambda: ops.events_after(self.dialect, after_id, limit))

    def last_job_id(self, before: float | None = None) -> int:
        return self._read(lambda: ops.last_job_id(self.dialect, before))

    def enqueue_totals(self, after_id: int, until: float, limit: int) -> tuple[int, dict[str, int], bool]:
        return self._read(lambda: ops.enqueue_totals(self.dialect, after_id, until, limit))

    def completion_cursor(self, now: float) -> tuple[float, int]:
        return self._read(lambda: ops.completion_cursor(self.dialect, now))

    def completions_after(self, after: tuple[float, int], until: float, limit: int) -> list[MetricEvent]:
        return self._read(lambda: ops.completions_after(self.dialect, after, until, limit))

    def event_totals(self, after_id: int, until: float, limit: int, counted: Sequence[str]) -> EventTotals:
        return self._read(lambda: ops.event_totals(self.dialect, after_id, until, limit, counted))

    def completion_totals(
        self, after: tuple[float, int], until: float, limit: int, bounds: HistogramBounds
    ) -> tuple[tuple[float, int], dict[str, CompletionTotals]]:
        return self._read(lambda: ops.completion_totals(self.dialect, after, until, limit, bounds))

    # -- worker registry -------------------------------------------------------------------
    # The registry's writes are an upsert and plain updates of the worker's own row: the same
    # write again settles a commit whose reply was lost. (A worker whose first registration's
    # reply was lost raised at start, and left a row "alive" for a process that had exited.)
    def register_worker(self, info: WorkerInfo) -> None:
        return self._write_again_if_unknown(lambda: ops.register_worker(self.dialect, info))

    def worker_seen(
        self,
        worker_id: str,
        now: float,
        current_jobs: Sequence[int],
        done: int,
        failed: int,
        clock_skew: float | None = None,
        clock_base: float | None = None,
    ) -> bool:
        d = self.dialect
        return self._write_again_if_unknown(
            lambda: ops.worker_seen(d, worker_id, now, current_jobs, done, failed, clock_skew, clock_base)
        )

    def worker_stopped(self, worker_id: str, now: float, reason: WorkerEnd = WorkerEnd.STOPPED) -> None:
        return self._write_again_if_unknown(lambda: ops.worker_stopped(self.dialect, worker_id, now, reason))

    def mark_lost_workers(self, seen_before: float, now: float) -> list[str]:
        return self._run_plan(self._mark_lost_plan(seen_before, now))

    def _mark_lost_plan(self, seen_before: float, now: float) -> Plan[list[str]]:
        d = self.dialect
        return (
            yield from _probed(
                lambda: ops.lost_workers_probe(d, seen_before),
                lambda: ops.mark_lost_workers(d, seen_before, now),
                settle=lambda: ops.mark_lost_workers_again(d, seen_before, now),
            )
        )

    def prune_workers(self, stopped_before: float) -> list[str]:
        d = self.dialect
        return self._run_plan(
            _probed(
                lambda: ops.prune_workers_probe(d, stopped_before),
                lambda: ops.prune_workers(d, stopped_before),
                harmless_twice=True,  # a delete by a cutoff: done again, it deletes nothing more
            )
        )

    def list_workers(self, limit: int = 200) -> list[WorkerInfo]:
        return self._read(lambda: ops.list_workers(self.dialect, limit))

    def store_time(self) -> float:
        return self._read(lambda: ops.store_time(self.dialect))

    # -- schedules -------------------------------------------------------------------------
    def save_schedule(self, info: ScheduleInfo, now: float) -> None:
        # An upsert by name that keeps the schedule's state when its timing is unchanged: made again,
        # one that committed changes nothing more.
        return self._write_again_if_unknown(lambda: ops.save_schedule(self.dialect, info, now))

    def list_schedules(self, due_by: float | None = None) -> list[ScheduleInfo]:
        return self._read(lambda: ops.list_schedules(self.dialect, due_by))

    def fire_schedule(
        self,
        name: str,
        expected: float,
        next_run_at: float,
        last_slot: float | None,
        jobs: Sequence[NewJob],
        now: float,
    ) -> list[int] | None:
        d = self.dialect
        return self._write(lambda: ops.fire_schedule(d, name, expected, next_run_at, last_slot, jobs, now))

    def pause_schedule(self, name: str, paused: bool, actor: str, now: float, next_run_at: float | None) -> bool:
        d = self.dialect
        return self._write(
            lambda: ops.pause_schedule(d, name, paused, actor, now, next_run_at),
            on_unknown=lambda: ops.pause_schedule_settled(d, name, paused, actor, now, next_run_at),
        )

    def delete_schedule(self, name: str) -> bool:
        d = self.dialect
        return self._write(
            lambda: ops.delete_schedule(d, name), on_unknown=lambda: ops.delete_schedule_settled(d, name)
        )

    def schedule_actions(self, name: str | None, limit: int) -> list[ScheduleAction]:
        return self._read(lambda: ops.schedule_actions(self.dialect, name, limit))
