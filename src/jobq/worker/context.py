"""What a handler receives: the job, and the means to cooperate with leases and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from jobq.config import DURATION_MAX_SECONDS
from jobq.errors import JobCancelled, JobqError, LeaseLost
from jobq.job import Job
from jobq.queue import PROGRESS_MESSAGE_MAX_CHARS, Queue, check_progress

PROGRESS_INTERVAL_SECONDS = 0.5
"""At most two progress writes a second per run: a handler may report from a tight loop, and
each write is a transaction (on SQLite, a turn of the one write lock)."""


class PermanentError(JobqError):
    """Raise from a handler to fail the job at once, without retries (bad input, unsafe path)."""


class WorkerShutdown(JobqError):
    """Raise from a handler to give its job back at once while the worker shuts down
    (``JobContext.stopping``): the job is PENDING again for another worker, its attempt not
    counted, as if the grace period had ended. Raised while the worker is not shutting down it is
    the job's failure like any other error (retried by its policy): giving a job back uncounted
    outside a shutdown would claim and give it back for ever."""

    def __init__(self, reason: str = "the handler gave the job back: the worker is shutting down") -> None:
        super().__init__(reason)


class StopSignal(threading.Event):
    """The run's stop flag: a ``threading.Event`` that also calls one hook when set.

    Sync handlers wait on it; for an ``async def`` handler the worker's event loop registers a hook
    that cancels the handler's task (``jobq.worker.aio``), so every place that stops a run (the
    heartbeater, a timeout, shutdown) stops a coroutine too, without knowing what kind it is."""

    def __init__(self) -> None:
        super().__init__()
        self._hook: Callable[[], None] | None = None

    def on_set(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when set (at once if already set). The hook must be idempotent: a set
        racing this registration may call it twice."""
        self._hook = hook
        if self.is_set():
            hook()

    def set(self) -> None:
        super().set()
        hook = self._hook
        if hook is not None:
            hook()


#: Guards the first use of a run's stop flag (``JobContext.cancelled``), made on demand.
_STOP_MADE = threading.Lock()
#: Decides which of a run's threads stores a due progress report: one lock for every run, held
#: for a comparison (a lock per run cost every job, also the many that never report).
_PROGRESS_DUE = threading.Lock()
#: A context made outside a worker (tests, ``jobq.testing``) has no worker's write lock to share.
_NO_LOCK: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()


class JobContext:
    """Handed to every handler call.

    Sync handlers run in threads, which cannot be killed: a long handler should call ``check()``
    (or use ``sleep()``) now and then, so that an operator's cancel, a timeout or a lost lease stops
    it. An ``async def`` handler is stopped for real: the same events raise ``asyncio.CancelledError``
    at its next ``await`` (use ``await ctx.asleep()``, never ``ctx.sleep()``, in a coroutine).
    Before an external side effect that must happen once, call ``ensure_lease()`` (in a
    coroutine: ``await ctx.aensure_lease()``; likewise ``await ctx.acomplete(conn=...)``).
    """

    store_generation = 0
    """``Queue.store_generation`` when the job was claimed (set by the worker only when above 0:
    a class attribute costs a run nothing). Lower than the queue's now: the job is of a SQLite
    file replaced since, and nothing more is written for it."""

    def __init__(
        self,
        job: Job,
        queue: Queue,
        worker_id: str,
        stopping: threading.Event | None = None,
        write_lock: contextlib.AbstractContextManager[Any] = _NO_LOCK,
    ) -> None:
        self.job = job
        self.queue = queue
        self.worker_id = worker_id
        # The worker's own flag, shared by its runs (one attribute per run, no Event of its own).
        self._worker_stopping = stopping
        # The worker's lock over its lease writes (``Runs.write_lock``): a heartbeat marks the runs
        # it found lost before it lets go, so a handler's fenced write that waited for it sees the
        # mark and is not sent (a second refusal, recorded in the job's history).
        self._write_lock = write_lock
        self.key: tuple[int, str | None] = (job.id, job.lease_token)
        """Which run this is: the job and the lease it was claimed with (read three times a run:
        an attribute, not a property)."""
        # Made on first use (``cancelled``): a short job nobody stops never needs one, and an
        # Event with its Condition cost ~4 us of a batched worker's ~50 us CPU per job (issue 13).
        self._stop: StopSignal | None = None
        self.cancel_requested = False
        self.timed_out = False
        self.lease_lost = False
        self.decided = False
        """True once an outcome was recorded for this run (``Runs.record``): the first one wins."""
        self.settled = False
        """True once that outcome was written, or the run released: nothing more is written or
        heartbeated for it (its handler may still run, e.g. after a timeout)."""
        self.started = time.monotonic()
        """When the handler began (until then: when the job was handed to the runner threads)."""
        self.completed_in_transaction = False
        """True once ``complete(conn=...)`` wrote the completion into the application's
        transaction: the worker neither heartbeats this run any more nor writes its outcome."""
        self.begun = False
        """A runner thread took the run and calls (or called) its handler."""
        self.ended = False
        """Its handler returned (or was never called): the thread is free again."""
        self.withdrawn = False
        """Claimed ahead and given back before any thread began it (see ``jobq.worker.prefetch``)."""
        self.on_loop = False
        """Handed to the worker's event loop (an ``async def`` handler), not to its threads."""
        self.traced = False
        """Run in a span (an OpenTelemetry SDK was configured when the job was dispatched)."""
        self.trace_context: str | None = None
        """The traceparent stored at enqueue, read at dispatch while tracing is on."""
        # The first report is stored only once the run has lasted an interval: a short job that
        # reports costs no write at all (the jobs worth watching are the long ones).
        self._progress_at = self.started

    @property
    def cancelled(self) -> threading.Event:
        """Set when the handler should stop: cancel requested, timed out, or lease lost."""
        stop = self._stop
        if stop is None:
            # Threads may ask at once (the heartbeater sets it as the handler waits on it):
            # exactly one Event is made, under a lock taken only on this first use.
            with _STOP_MADE:
                if self._stop is None:
                    self._stop = StopSignal()
                stop = self._stop
        return stop

    def on_stop(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once the run must stop (see ``StopSignal.on_set``): the event loop
        cancels an ``async def`` handler's task this way."""
        stop = self.cancelled
        assert isinstance(stop, StopSignal)
        stop.on_set(hook)

    @property
    def stopping(self) -> bool:
        """True once the worker is shutting down (SIGTERM, ``Worker.stop()``): it claims nothing
        more and waits up to its grace period for the running jobs, then gives back those not
        finished. A long handler that can stop at a safe point may check this and ``raise
        jobq.WorkerShutdown()`` there: its job goes back to the queue at once, not at the end of
        the grace period. A handler that ignores it runs as before."""
        flag = self._worker_stopping
        return flag is not None and flag.is_set()

    @property
    def payload(self) -> Any:
        return self.job.payload

    def check(self) -> None:
        """Raise LeaseLost or JobCancelled if the job must stop now; else return."""
        if self.lease_lost:
            raise LeaseLost(self.job.id, "run", "the job was rescued or handed to another worker")
        if self.cancel_requested:
            raise JobCancelled(f"job {self.job.id}: cancelled by an operator")
        if self.timed_out:
            raise JobCancelled(f"job {self.job.id}: timed out after {self.job.timeout} s")

    def ensure_lease(self) -> None:
        """Heartbeat now, synchronously: raises LeaseLost when this worker no longer holds the job.

        Call it right before an effect that must not happen twice, under a lock that makes
        check + effect atomic with respect to other workers (see ``jobq.demo.files``). It waits
        for the worker's own lease writes in flight (a heartbeat): one that found the lease lost
        is heeded, and this check then raises without a write.
        """
        self._fenced(lambda: self.queue.heartbeat(self.job))

    async def aensure_lease(self) -> None:
        """``ensure_lease`` for ``async def`` handlers, without blocking the loop: the fenced
        heartbeat runs in a thread (the worker's store is a blocking one, and on SQLite it may
        wait for the write lock), while the loop runs the other coroutines."""
        await asyncio.to_thread(self.ensure_lease)

    async def acomplete(self, result: Any = None, *, conn: Any) -> None:
        """``complete`` for ``async def`` handlers, without blocking the loop.

        ``conn``: a ``psycopg.AsyncConnection`` in an open transaction (PostgreSQL: the completion
        runs on it natively, on the loop, like ``jobq.AsyncQueue.complete(conn=)``), or what
        ``complete`` takes (a blocking connection: used from a thread meanwhile).
        """
        if not asyncio.iscoroutinefunction(getattr(conn, "commit", None)):
            await asyncio.to_thread(self.complete, result, conn=conn)
            return
        from jobq.async_queue import complete_in  # here: async_queue imports the facade

        await self._completing(lambda: complete_in(self.queue, self.job, result, conn))

    async def _completing(self, write: Callable[[], Any]) -> None:
        """Runs the awaitable completion ``write()`` with ``complete``'s bookkeeping."""
        with self._fenced_completion():
            await write()

    @contextlib.contextmanager
    def _fenced_completion(self) -> Iterator[None]:
        """The bookkeeping of a completion in the application's transaction (``complete`` and
        ``acomplete``): refused at once when the lease is known lost; heartbeats stand aside while
        it runs; a refusal marks the lease lost and cancels the run."""
        if self.lease_lost:
            raise LeaseLost(self.job.id, "complete", "the job was rescued or handed to another worker")
        # Heartbeats stop first: one sent after this completion commits would be refused, and one
        # waiting for the application's lock meanwhile is recognised as this lease's own (ops.heartbeat).
        self.completed_in_transaction = True
        try:
            yield
        except LeaseLost:
            self.completed_in_transaction = False
            self.lease_lost = True
            self.cancelled.set()
            raise
        except BaseException:
            self.completed_in_transaction = False
            raise

    def complete(self, result: Any = None, *, conn: Any) -> None:
        """Mark the job COMPLETED inside the application's open transaction on ``conn``, with the
        handler's own writes: both commit together, or neither does (exactly-once database effects).

        Fenced by the lease like every worker write: if this worker lost the job (rescued, taken
        over, cancelled), LeaseLost is raised *before* the caller commits; let it propagate (or
        roll back), and the handler's writes go with it. After it returns, commit before the
        handler returns; the worker then records nothing more for this run (the handler's return
        value is not stored: ``result`` is). If the handler raises instead, the attempt fails as
        usual (refused, and recorded, if the completion had committed after all).

        ``conn``: a ``psycopg.Connection`` (PostgreSQL), or an ``apsw.Connection`` on the
        queue's SQLite file; see docs/transactions.md.
        """
        with self._fenced_completion():
            self.queue.complete(self.job, result, conn=conn)

    def progress(self, fraction: float | None = None, message: str | None = None, *, force: bool = False) -> bool:
        """Report how far the run has come: ``fraction`` in [0, 1] and/or a short ``message``.

        Shown by ``jobq show`` and the apps. Writes at most every ``PROGRESS_INTERVAL_SECONDS``,
        the first one after the run has lasted that long (a report in between is dropped,
        unless ``force``); each write is fenced by the lease like a heartbeat and also tells of
        a cancel. Returns True when the report was stored.
        Raises LeaseLost / JobCancelled like ``check()``.

        >>> for i, item in enumerate(items):          # doctest: +SKIP
        ...     handle(item)
        ...     ctx.progress(i / len(items), f"{i} of {len(items)}")
        """
        # The usual report (a float in [0, 1], short ASCII text) is stored as it is: check_progress
        # is called for any other, to convert it or raise. Tested here, with check()'s test below,
        # not called: the two calls were 1,700 of the 4,500 instructions of a dropped report,
        # made once per step of a handler's loop (issue 17). tests/unit/test_observability_model.py
        # holds both alike (test_the_context_refuses_and_stops_as_check_progress_and_check_do).
        if not (
            (fraction is None or (type(fraction) is float and 0.0 <= fraction <= 1.0))
            and (
                message is None
                or (type(message) is str and len(message) <= PROGRESS_MESSAGE_MAX_CHARS and message.isascii())
            )
        ):
            check_progress(fraction, message)
        if self.lease_lost or self.cancel_requested or self.timed_out:
            self.check()  # raises
        now = time.monotonic()
        if not force and now - self._progress_at < PROGRESS_INTERVAL_SECONDS:
            return False  # the common case, without the lock (decided again under it below)
        with _PROGRESS_DUE:
            if not force and now - self._progress_at < PROGRESS_INTERVAL_SECONDS:
                return False
            self._progress_at = now
        if self.decided or self.settled:
            return False  # its outcome is on the way: the lease is about to end
        self._fenced(lambda: self.queue.progress(self.job, fraction, message))
        return True

    def _fenced(self, write: Callable[[], bool]) -> None:
        """A lease-fenced write that also tells of a cancel (True): heartbeat, progress. Raises
        LeaseLost (remembered) when the lease is gone, JobCancelled/LeaseLost like ``check()``."""
        with self._write_lock:
            if self.store_generation != self.queue.store_generation:  # see Runs.drop_replaced
                self.lease_lost = True
                self.cancelled.set()
                raise LeaseLost(self.job.id, "write", "the queue's file was replaced since the job was claimed")
            if self.lease_lost:  # known already (a heartbeat was refused): refused again, and recorded
                raise LeaseLost(self.job.id, "write", "the job was rescued or handed to another worker")
            try:
                if write():
                    self.cancel_requested = True
                    self.cancelled.set()
            except LeaseLost:
                self.lease_lost = True
                self.cancelled.set()
                raise
        self.check()

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake and raise (see ``check``) as soon as the job must stop."""
        self.cancelled.wait(_sleep_seconds(seconds))
        self.check()

    async def asleep(self, seconds: float) -> None:
        """``sleep`` for ``async def`` handlers: the loop runs other jobs meanwhile. A stop while
        sleeping arrives as ``asyncio.CancelledError``; one before raises as ``check`` does."""
        self.check()
        await asyncio.sleep(_sleep_seconds(seconds))
        self.check()


def _sleep_seconds(seconds: float) -> float:
    """A handler's sleep as a wait: at most 100 years (``ctx.sleep(float("inf"))``, until the job
    must stop, raised OverflowError from the wait), none below 0, ValueError for NaN or what is no
    number."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds != seconds:
        raise ValueError(f"ctx.sleep takes a number of seconds, not {seconds!r:.40}")
    return 0.0 if seconds <= 0 else float(seconds) if seconds < DURATION_MAX_SECONDS else DURATION_MAX_SECONDS
