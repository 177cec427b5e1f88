"""The event loop that runs a worker's ``async def`` handlers, beside its handler threads.

One loop per worker process, on a thread of its own, runs up to ``async_concurrency`` coroutines
at once. Everything else stays as for sync handlers: the main loop claims and dispatches, the
heartbeater keeps every lease alive, and each coroutine's outcome goes through the one door
(``Runs.record``) to the ``OutcomeWriter``.

Stopping is real here, unlike for threads: a run's stop flag (``JobContext.cancelled``, a
``StopSignal``) cancels its task with ``loop.call_soon_threadsafe(task.cancel)``, so an operator's
cancel, a timeout, a lost lease or shutdown after the grace period raises ``asyncio.CancelledError``
at the handler's next ``await``, as soon as the heartbeater (or the timeout check, or the drain)
notices it.

A coroutine that never awaits (``time.sleep``, CPU work, a blocking driver) stalls every other
coroutine of the loop. A watchdog thread pings the loop; when a ping waits longer than
``LOOP_BLOCKED_SECONDS`` it finds the job whose handler is on the loop thread's stack and logs it.

Limits: a coroutine that swallows ``CancelledError`` and goes on cannot be stopped (fencing
refuses its late writes, as for threads); at worker exit it is abandoned with the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType

from jobq.worker.context import JobContext

log = logging.getLogger("jobq.worker")

#: A loop that answers no ping for this long is blocked by a handler that does not await.
LOOP_BLOCKED_SECONDS = 0.5
#: How often the watchdog pings the loop while it answers.
LOOP_PING_INTERVAL_SECONDS = 0.25
#: At exit, how long coroutines still running get to end after being cancelled.
LOOP_EXIT_SECONDS = 2.0

RunOne = Callable[[JobContext], Awaitable[None]]
"""Runs one job's handler to its recorded outcome (the worker's ``_run_async``)."""


def is_async_handler(handler: object) -> bool:
    """True for an ``async def`` function (also behind ``functools.partial``) or an object whose
    ``__call__`` is one: the worker runs those on its event loop."""
    if asyncio.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - a class instance's async __call__
    return call is not None and asyncio.iscoroutinefunction(call)


class AsyncRunner:
    """One event loop on its own thread, running at most ``concurrency`` handler coroutines.

    ``submit`` is called from the main loop's thread; ``run_one`` runs on the event loop and
    must record the run's outcome (or decide not to run it); ``not_run`` settles a run whose task
    was cancelled before ``run_one`` began it (stopped while it waited for a slot)."""

    def __init__(self, concurrency: int, run_one: RunOne, not_run: Callable[[JobContext], None]) -> None:
        self.concurrency = concurrency
        self._run_one = run_one
        self._not_run = not_run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the loop's thread and its watchdog; returns once the loop runs."""
        if self._thread is not None:
            return
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def serve() -> None:
            asyncio.set_event_loop(loop)
            self._slots = asyncio.Semaphore(self.concurrency)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="jobq-async", daemon=True)
        self._thread.start()
        ready.wait()
        self._watchdog = threading.Thread(target=self._watch, name="jobq-async-watchdog", daemon=True)
        self._watchdog.start()

    def submit(self, ctx: JobContext) -> None:
        """Run ``ctx``'s handler on the loop (from any thread)."""
        assert self._loop is not None, "AsyncRunner.start() first"
        self._loop.call_soon_threadsafe(self._spawn, ctx)

    def _spawn(self, ctx: JobContext) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._guarded(ctx), name=f"jobq-job-{ctx.job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        loop = self._loop
        cancelled = False

        def cancel() -> None:  # called from whichever thread sets the stop flag
            nonlocal cancelled
            if cancelled:
                return
            cancelled = True
            with contextlib.suppress(RuntimeError):  # a closed loop runs nothing any more
                loop.call_soon_threadsafe(task.cancel)

        ctx.on_stop(cancel)

    async def _guarded(self, ctx: JobContext) -> None:
        assert self._slots is not None
        entered = False
        try:
            async with self._slots:
                entered = True
                await self._run_one(ctx)
        except asyncio.CancelledError:
            # Stopped before it began (cancel, lost lease, shutdown while it waited for a slot):
            # run_one never ran, so the run must still be settled. Once entered, run_one records
            # the outcome itself (its handler's CancelledError included).
            if not entered:
                self._not_run(ctx)
        except Exception:  # a bug of ours must not kill the loop
            log.exception("job %s: async run failed", ctx.job.id)

    # -- the watchdog ----------------------------------------------------------------------------
    def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        while not self._closing.is_set():
            pong = threading.Event()
            began = time.monotonic()
            try:
                loop.call_soon_threadsafe(pong.set)
            except RuntimeError:  # loop closed
                return
            if pong.wait(LOOP_BLOCKED_SECONDS):
                self._closing.wait(LOOP_PING_INTERVAL_SECONDS)
                continue
            ctx = self._blocking_job()
            job = f"job {ctx.job.id} (task {ctx.job.task!r})" if ctx is not None else "a callback"
            log.warning(
                "%s blocks the event loop of async handlers: no await for over %.1f s; every other "
                "coroutine waits (use await, e.g. await ctx.asleep(), or make it a sync handler)",
                job,
                LOOP_BLOCKED_SECONDS,
            )
            while not pong.wait(LOOP_PING_INTERVAL_SECONDS):
                if self._closing.is_set():
                    return
            log.info("event loop free again after %.1f s (%s)", time.monotonic() - began, job)

    def _blocking_job(self) -> JobContext | None:
        """The job whose handler runs on the loop thread right now, from that thread's stack."""
        thread = self._thread
        frame: FrameType | None = sys._current_frames().get(thread.ident) if thread and thread.ident else None
        code = self._guarded.__code__
        while frame is not None:
            if frame.f_code is code:
                ctx = frame.f_locals.get("ctx")
                return ctx if isinstance(ctx, JobContext) else None
            frame = frame.f_back
        return None

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel what still runs, give it ``LOOP_EXIT_SECONDS`` to end, stop the loop. Safe twice
        and before ``start``."""
        self._closing.set()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def finish() -> None:
            tasks = [t for t in self._tasks if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=LOOP_EXIT_SECONDS)
                if pending:
                    log.warning("%d async handler(s) ignored cancellation; abandoned at exit", len(pending))
            loop.stop()

        try:
            asyncio.run_coroutine_threadsafe(finish(), loop)
        except RuntimeError:
            return
        thread.join(LOOP_EXIT_SECONDS + 1.0)
