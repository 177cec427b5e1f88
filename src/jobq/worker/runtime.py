"""The worker: claim -> run the handler -> record the outcome, with heartbeats, rescue and
graceful shutdown.

Concurrency is threads, not processes: most jobs (file writes, network calls) and the queue's
own work wait on I/O, threads share one database handle and one heartbeat, and a thread pool
starts instantly. CPU-bound handlers scale by running more worker processes (supervisord
``numprocs``), which the queue supports as it is. Threads cannot be killed, so cancellation and timeouts are cooperative
(``JobContext.check``); fencing makes a handler that ignores them harmless: its late
completion is refused.

A worker is small services around one main loop, each given only what it needs:

- the main loop (this module) claims into free slots, hands jobs to runner threads and flushes
  outcomes through the one write path (``jobq.worker.runs``: ``Runs`` + ``OutcomeWriter``);
- ``Heartbeater`` (queue, worker id, ``Runs``, ``StallWatch``, ``WorkerStatus``);
- ``Rescuer`` (queue, worker id, ``StallWatch``) and ``Pruner`` (queue);

all three on one start/stop protocol (``jobq.worker.looper.Looper``). ``run()`` sets up in
order (log redaction, signal handlers, wake-up listener, registry row, runner threads, loops)
and registers each undo step as soon as its set-up step succeeded, so a failure part-way
(the database refusing the registration, a thread that cannot start) undoes exactly what was
done, in reverse, and the exception propagates. The storage is reached only through the
``Queue`` facade.

Limits: a Worker runs once (``run()`` a second time raises). Signal handlers are installed only
when ``run()`` is called on the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import queue as stdqueue
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from types import FrameType

from jobq.backends.base import Listener, WorkerInfo
from jobq.config import ASYNC_CONCURRENCY_MAX, CONCURRENCY_MAX, DURATION_MAX_SECONDS, INT32_MAX, seconds_or
from jobq.errors import JobCancelled, JobqError, LeaseLost
from jobq.job import Job
from jobq.observability import logs, tracing
from jobq.queue import Queue, check_queue_names, check_rows
from jobq.redact import RedactingFilter, redact_text
from jobq.retry import on_failure, with_task_defaults
from jobq.worker.aio import AsyncRunner, is_async_handler
from jobq.worker.context import JobContext, PermanentError, WorkerShutdown
from jobq.worker.heartbeat import Heartbeater
from jobq.worker.looper import Looper
from jobq.worker.prefetch import GIVE_BACK_AFTER_SECONDS, Prefetch
from jobq.worker.registry import Handler
from jobq.worker.rescuer import Pruner, Rescuer, process_table_id
from jobq.worker.runs import Outcome, OutcomeWriter, RunOutcome, Runs, WorkerStatus, one_line
from jobq.worker.scheduler import Scheduler
from jobq.worker.stall import StallWatch

__all__ = ["Outcome", "Worker", "new_worker_id"]

log = logging.getLogger("jobq.worker")

#: Wake at least this often while jobs run, to refill free slots when new work was signalled.
BUSY_POLL_SECONDS = 0.05
#: Longest sleep between checks of the stop flag (a signal does not interrupt select()).
MAX_SLEEP_SECONDS = 1.0
#: After an error in the worker loop, wait this long, doubling up to the cap while it repeats.
LOOP_ERROR_BACKOFF_SECONDS = 0.5
LOOP_ERROR_BACKOFF_CAP_SECONDS = 30.0
#: The reasons the ``released`` events of jobs claimed ahead and given back unstarted carry.
GAVE_BACK_WAITED = "claimed ahead, but waited behind a longer job"
GAVE_BACK_AT_STOP = "worker shut down before the job started"
#: The signals that stop a worker run on the main thread: the first drains, the second forces.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def new_worker_id() -> str:
    """Unique per process start (procrastinate#1518 and oban#862 broke on reused ids)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


#: How a run's outcome is named on its trace span.
_OUTCOME_NAMES = {Outcome.COMPLETE: "completed", Outcome.FAIL: "failed", Outcome.CANCEL: "cancelled"}


def _count_or_none(value: int | None, what: str, most: int) -> int | None:
    """A Worker's count option: None (the settings') or a whole number from 1 to ``most``."""
    return None if value is None else check_rows(value, 1, what, most)


def _handlers(handlers: Mapping[str, Handler] | Handler) -> dict[str, Handler]:
    """Task name -> handler, each callable under a task name (ValueError: a handler that could
    not be called failed each job it was given, one by one)."""
    table: dict[str, Handler] = dict(handlers) if isinstance(handlers, Mapping) else {"": handlers}
    for task, handler in table.items():
        if not isinstance(task, str) or not callable(handler):
            raise ValueError(f"handlers: a task name and a function to call, not {task!r:.40}: {handler!r:.40}")
    return table


class Worker:
    """Runs handlers for the jobs of ``queues``.

    Args:
        queue: the Queue to work on (settings come from it: lease, grace, intervals).
        handlers: task name -> handler, or one handler for every task.
        queues: queue names to claim from (default: the settings' queue).
        concurrency: handler threads (for sync handlers).
        async_concurrency: coroutines of ``async def`` handlers run at once on the worker's event
            loop (default: the settings' ``async_concurrency``). The loop starts only if some
            handler is ``async def``; the claims fill both kinds of slot.
        batch: jobs claimed per transaction, fixed. Larger values prefetch: faster for short jobs,
            but a long job's batch-mates wait behind it. Default: one per free thread, plus jobs
            claimed ahead while recent jobs were short and many are due (``jobq.worker.prefetch``).
        prefetch_wait: the longest planned wait of a job claimed ahead, in seconds (default: the
            settings' ``prefetch_wait_seconds``; 0 claims one job per free thread). Ignored with ``batch``.
        name: shown in ops (default: supervisord's program name, else ``worker-<pid>``).
        exit_when_idle: return from ``run()`` once nothing is due and nothing runs (tests,
            benchmarks, cron-style draining).

    >>> worker = Worker(Queue("sqlite:///data/queue.db"), {"resize": resize})  # doctest: +SKIP
    >>> threading.Thread(target=worker.run).start()                           # doctest: +SKIP
    >>> worker.started.wait(30)                                                # doctest: +SKIP
    True
    >>> worker.stop()  # drains running jobs within the grace period           # doctest: +SKIP
    """

    def __init__(
        self,
        queue: Queue,
        handlers: Mapping[str, Handler] | Handler,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        batch: int | None = None,
        name: str | None = None,
        exit_when_idle: bool = False,
        prefetch_wait: float | None = None,
        async_concurrency: int | None = None,
    ) -> None:
        self.queue = queue
        self.settings = queue.settings
        self.handlers = _handlers(handlers)
        # One name given as a string is that queue (queues="mail" was ["m", "a", "i", "l"]).
        self.queues = check_queue_names([queues] if isinstance(queues, str) else (queues or [self.settings.queue]))
        # Each checked (Worker(concurrency="4") raised TypeError deep inside, batch=-3 passed).
        concurrency = _count_or_none(concurrency, "concurrency", CONCURRENCY_MAX)
        batch = _count_or_none(batch, "batch", INT32_MAX)
        async_concurrency = _count_or_none(async_concurrency, "async_concurrency", ASYNC_CONCURRENCY_MAX)
        if prefetch_wait is not None and not 0 <= seconds_or(prefetch_wait, -1.0) <= DURATION_MAX_SECONDS:
            raise ValueError(f"prefetch_wait must be seconds from 0 to 100 years, not {prefetch_wait!r:.40}")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"a worker's name must be text, not {name!r:.40}")
        self.concurrency = concurrency or self.settings.concurrency
        # Which handlers run on the event loop is known up front: a job's task decides where it
        # runs, and the claims count both kinds of slot (simple: free threads + free coroutines;
        # a sync job beyond the free threads waits and is given back like one claimed ahead).
        self._async_tasks = {name for name, h in self.handlers.items() if is_async_handler(h)}
        has_sync = len(self._async_tasks) < len(self.handlers) or not self.handlers
        self.async_concurrency = (async_concurrency or self.settings.async_concurrency) if self._async_tasks else 0
        sync_slots = max(self.concurrency, batch or self.concurrency) if has_sync else 0
        self.capacity = sync_slots + self.async_concurrency
        self._aio = (
            AsyncRunner(self.async_concurrency, self._run_async, self._async_not_run) if self._async_tasks else None
        )
        wait = self.settings.prefetch_wait_seconds if prefetch_wait is None else prefetch_wait
        self.prefetch = Prefetch(0.0 if batch is not None else wait, self.concurrency)
        # An explicit batch makes its batch-mates wait behind a long job (as documented above):
        # they are given back at shutdown only. Given back after GIVE_BACK_AFTER_SECONDS, a
        # batch of 100 was released and claimed again and again under load (issue 13).
        self._gives_back_waiting = batch is None
        self.id = new_worker_id()
        self.name = name or os.environ.get("SUPERVISOR_PROCESS_NAME") or f"worker-{os.getpid()}"
        self.exit_when_idle = exit_when_idle
        self.status = WorkerStatus()
        self.runs = Runs()
        # SimpleQueue: put and get in C (queue.Queue's Condition ran ~10 Python calls per job
        # handed to a runner thread); nothing here needs its task_done/join or a size limit.
        self._work: stdqueue.SimpleQueue[JobContext | None] = stdqueue.SimpleQueue()
        self._stopping = threading.Event()
        self._forced = threading.Event()
        self.started = threading.Event()
        """Set once ``run()`` has set everything up: registered, listening, threads and loops running."""
        self._ran = False
        self._ran_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.loops: list[Looper] = []
        heartbeat = self.settings.heartbeat_seconds
        self.stalls = StallWatch(
            queue.clock,
            threshold=heartbeat / 2,
            margin=heartbeat,
            grace=self.settings.lease_seconds,
            steps=queue.default_clock,
        )
        self._writer = OutcomeWriter(queue, self.runs, self.status, self._stopping, self.id, self.queues)
        self._listener: Listener | None = None
        self._started_at = 0.0  # queue.wall_time() at start, kept in the registry row
        # None: claim when a slot is free. Else the last look found nothing: from this monotonic
        # time a read says whether a job is due before any claim, and before it only a wake-up
        # brings a claim (``_worth_claiming``).
        self._look_at: float | None = None
        self._due: tuple[float | None] | None = None  # next_due_at read in this pass, if any

    # -- what others read ----------------------------------------------------------------------
    @property
    def jobs_done(self) -> int:
        return self.status.jobs_done

    @property
    def jobs_failed(self) -> int:
        return self.status.jobs_failed

    @property
    def healthy(self) -> bool:
        """False while heartbeats keep failing: the worker does not claim then."""
        return self.status.healthy

    def active(self) -> list[JobContext]:
        """The runs holding a slot (see ``Runs.active``)."""
        return self.runs.active()

    # -- control -----------------------------------------------------------------------------
    def stop(self, *, force: bool = False) -> None:
        """Stop claiming and drain (the first call); ``force`` releases running jobs at once.
        Safe at any time, also before ``run()`` (which then returns at once)."""
        self._stopping.set()
        if force:
            self._forced.set()
        self.runs.ready.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping.is_set():
            log.warning("second signal: releasing running jobs and exiting")
            self.stop(force=True)
        else:
            log.info(
                "signal %s: no more claims; draining for up to %.0f s", signum, self.settings.shutdown_grace_seconds
            )
            self.stop()

    def run(self) -> None:
        """Work until stopped (SIGTERM/SIGINT when run on the main thread) or, with
        ``exit_when_idle``, until no job is due. Running jobs are drained within the grace
        period; what cannot finish is released back to PENDING at once.

        Raises what set-up raised (e.g. StorageError when the worker cannot register), after
        undoing what was set up; RuntimeError when this Worker ran before.
        """
        with self._ran_lock:
            if self._ran:
                raise RuntimeError(f"worker {self.id} already ran; make a new Worker")
            self._ran = True
        with contextlib.ExitStack() as undo:
            self._set_up(undo)
            self._main_loop()
            self._drain()

    # -- set-up, each step with its undo -------------------------------------------------------
    def _set_up(self, undo: contextlib.ExitStack) -> None:
        # Every worker log line masks the database password, however the application set up
        # logging: a driver error may quote the URL, and supervisord keeps these logs in files.
        # First on, last off: set-up and teardown errors are masked too.
        redacting = RedactingFilter(self.queue.url)
        log.addFilter(redacting)
        undo.callback(log.removeFilter, redacting)
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                previous = signal.signal(s, self._on_signal)
                # None: a handler installed outside Python, which cannot be put back; the default
                # is closer to it than ours (which would swallow the signal once the worker ended).
                undo.callback(signal.signal, s, signal.SIG_DFL if previous is None else previous)
        self._listener = self.queue.listener(self.id, self.queues)
        undo.callback(self._listener.close)
        self._started_at = self.queue.wall_time()
        self._register()
        undo.callback(self._mark_stopped)
        log.info("worker %s (%s) started on queues %s", self.id, self.name, ",".join(self.queues))
        undo.callback(self._stop_runners)
        if self._aio is not None:
            undo.callback(self._aio.stop)
            self._aio.start()
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._runner, name=f"jobq-run-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.loops = [
            Heartbeater(self.queue, self.id, self.runs, self.stalls, self.status, self._register),
            Rescuer(self.queue, self.id, self.settings.rescue_interval_seconds, self.stalls),
            Scheduler(self.queue),
        ]
        if self.settings.prune_after_seconds:
            self.loops.append(Pruner(self.queue, self.settings.prune_after_seconds))
        for loop in self.loops:
            # Registered before start(): stop() is safe on a loop that never started, and a
            # start() that raised half-way must not leave a thread running.
            undo.callback(loop.stop)
            loop.start()
        self.started.set()

    def _stop_runners(self) -> None:
        # A runner takes the None after its current job: one that still runs a handler past
        # the grace period (threads cannot be killed) is left behind as a daemon thread.
        for _ in self._threads:
            self._work.put(None)

    def _register(self) -> None:
        """Writes this worker's registry row (at start, and again when a heartbeat finds none)."""
        assert self._listener is not None
        self.queue.register_worker(
            WorkerInfo(
                id=self.id,
                name=self.name,
                host=socket.gethostname(),
                pid=os.getpid(),
                queues=tuple(self.queues),
                started_at=self._started_at,
                last_seen_at=self.queue.wall_time(),
                wake_address=self._listener.address,
                process_table=process_table_id(),
                jobs_done=self.status.jobs_done,
                jobs_failed=self.status.jobs_failed,
                clock_skew=self.queue.clock_skew,
                clock_base=self.queue.clock_base(),
            )
        )

    def _mark_stopped(self) -> None:
        try:
            self.queue.worker_seen(self.id, [], self.status.jobs_done, self.status.jobs_failed)
            self.queue.worker_stopped(self.id)
        except JobqError as exc:
            log.warning("could not mark the worker stopped: %s", exc)
        log.info("worker %s stopped: %d done, %d failed", self.id, self.status.jobs_done, self.status.jobs_failed)

    # -- the main loop -------------------------------------------------------------------------
    def _main_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self._step():
                    return
                failures = 0
            except Exception as exc:
                # A StorageError (database away) or anything else (a bug of ours, a driver's
                # surprise): log it, back off, go on. The same error every time must not become
                # a crash loop under supervisord while the queue grows (see jobq.payloads).
                failures += 1
                pause = min(LOOP_ERROR_BACKOFF_CAP_SECONDS, LOOP_ERROR_BACKOFF_SECONDS * 2 ** min(failures - 1, 10))
                log.error("worker loop: %s (again in %.1f s)", one_line(exc), pause)
                if not isinstance(exc, JobqError):
                    log.debug("worker loop error", exc_info=True)
                self._stopping.wait(pause)

    def _step(self) -> bool:
        """One pass: record finished outcomes, claim into free slots, else wait. False: idle and
        ``exit_when_idle``, so stop."""
        assert self._listener is not None
        # Completions first; the claim into the slots they free rides in their transaction.
        claimed = self._writer.flush(claim=self._claim_size)
        if self._gives_back_waiting:
            self._give_back(GIVE_BACK_AFTER_SECONDS, GAVE_BACK_WAITED)
        self._due = None
        if claimed is None and (free := self._claim_size(0)) and self._worth_claiming():
            claimed = (free, self.queue.claim_many(self.id, free, queue=self.queues))
        if claimed is not None:
            asked, jobs = claimed
            self.prefetch.claimed(asked, len(jobs))
            if jobs:
                self._look_at = None
                self._dispatch(jobs)
                return True
        active = len(self.active())
        free = self.capacity - active
        if active:
            if claimed is not None or self._due is not None:
                # This pass claimed or read and found nothing: free slots wait for a wake-up, or
                # the poll interval, instead of a claim every BUSY_POLL_SECONDS (each a write
                # transaction on SQLite: 20 a second from a worker with a free slot).
                self._look_at = time.monotonic() + self.settings.poll_interval_seconds
            pause = BUSY_POLL_SECONDS if free > 0 else MAX_SLEEP_SECONDS
            if (
                active > self.concurrency + self.async_concurrency
            ):  # jobs wait for a thread: check on them as often as promised
                pause = min(pause, GIVE_BACK_AFTER_SECONDS / 2)
            self.runs.ready.wait(pause)
            self.runs.ready.clear()
            return True
        if self.exit_when_idle and not self.runs.pending():
            if claimed is None and self._due is None and self._claim_size(0):
                # This pass neither claimed nor read: a wait for a wake-up (set while a job ran)
                # skipped the claim. That job may just have failed with a retry due now, so
                # claim once before saying nothing is due. (Not while the worker may not claim,
                # unhealthy: the next pass would skip the claim again, and so on without a pause.)
                self._look_at = None
                return True
            return False
        # The sleep ends at a wake-up or when the next job is due. Woken, the next pass claims at
        # once; after a timeout it reads first.
        self._look_at = None if self._listener.wait(self._idle_sleep()) else time.monotonic()
        return True

    def _worth_claiming(self) -> bool:
        """Whether to claim now. After an idle sleep a read (``next_due_at``, which the sleep needs
        anyway) says whether any job is due: on SQLite a claim takes the one write lock even when
        it finds nothing, and an idle worker polling once a second made a ``sqlite3`` shell's
        UPDATE (which waits for no lock) fail with "database is locked" now and then. On
        PostgreSQL it saves the empty claim's statement. The read weighs pauses and limits as the
        claim does (a queue at its concurrency limit is due once a slot frees), and a failed
        read errs towards claiming. While jobs run, after a claim or read that found nothing, only
        a wake-up or the poll interval's end brings the next look."""
        if self._look_at is None:
            return True
        if time.monotonic() < self._look_at:
            assert self._listener is not None
            if not self._listener.wait(0):
                return False
            self._look_at = None  # woken: work may be there, claim at once
            return True
        due = self._next_due()
        if due is None:  # the read failed: claim, and let the claim say what is wrong
            return True
        return due[0] is not None and due[0] <= self.queue.clock()

    def _next_due(self) -> tuple[float | None] | None:
        """``(next_due_at,)``, read at most once per pass; None when the read failed."""
        if self._due is None:
            try:
                self._due = (self.queue.next_due_at(self.queues),)
            except Exception:  # noqa: BLE001 - only a hint (when to claim, how long to sleep)
                return None
        return self._due

    def _claim_size(self, ending: int) -> int:
        """How many jobs to claim once ``ending`` runs end (0: none now). Refill when at least
        half the slots are free (or all are): fewer, larger claims. But the default worker fills
        a free slot at once beside a handler that has run ``GIVE_BACK_AFTER_SECONDS`` (a job is
        not left waiting in a worker longer than that behind a long one, as ``_give_back`` has
        it): its slots are its threads and async slots, and the one freed would idle for the long
        job's length while jobs are due (4 threads, 3 long jobs: 5 short jobs due waited them out;
        1,000 async jobs: the 343 given back waited for the first second of sleeps to end). An
        explicit ``batch`` keeps the rule: its slots past its threads are jobs waiting behind."""
        if not self.healthy:
            return 0
        active = len(self.active()) - ending
        longest = self.runs.longest_running()
        capacity = self.capacity + self.prefetch.ahead(longest)
        free = capacity - active
        if free <= 0:
            return 0
        if active == 0 or free * 2 >= capacity:
            return free
        return free if self._gives_back_waiting and longest >= GIVE_BACK_AFTER_SECONDS else 0

    def _idle_sleep(self) -> float:
        sleep = min(self.settings.poll_interval_seconds, MAX_SLEEP_SECONDS)
        due = self._next_due()
        if due is not None and due[0] is not None:
            sleep = min(sleep, max(0.0, due[0] - self.queue.clock()))
        return sleep

    def _dispatch(self, jobs: list[Job]) -> None:
        # Each job as it runs here: its enqueue's max_attempts/timeout, else its task's registered
        # in this process (a producer may not have imported the task), else the stored default.
        lock = self.runs.write_lock
        contexts = [JobContext(with_task_defaults(job), self.queue, self.id, self._stopping, lock) for job in jobs]
        if tracing.recording():  # once per claimed batch
            # One read per claimed batch, only while an OpenTelemetry SDK is configured.
            try:
                stored = self.queue.trace_contexts([job.id for job in jobs])
            except JobqError as exc:  # a trace is not worth a job: run it unparented
                log.warning("could not read trace contexts: %s", one_line(exc))
                stored = {}
            for ctx in contexts:
                ctx.traced = True
                ctx.trace_context = stored.get(ctx.job.id)
        generation = self.queue.store_generation  # read after the claim: see Runs.drop_replaced
        for ctx in contexts:
            if generation:
                ctx.store_generation = generation
            self.runs.add(ctx)
            self._submit(ctx)

    def _submit(self, ctx: JobContext) -> None:
        """To the event loop if the job's handler is ``async def``, else to the runner threads."""
        task = ctx.job.task if ctx.job.task in self.handlers else ""
        if self._aio is not None and task in self._async_tasks and not ctx.job.defect:
            ctx.on_loop = True
            self._aio.submit(ctx)
        else:
            self._work.put(ctx)

    # -- runner threads ------------------------------------------------------------------------
    def _give_back(self, waited: float, reason: str) -> None:
        """Release the jobs claimed ahead that no thread has begun, if the oldest waited at least
        ``waited`` seconds: another worker may be idle. A failed release leaves them to run here."""
        withdrawn = self.runs.withdraw(waited, self.async_concurrency)
        if not withdrawn:
            return
        with self.runs.write_lock:
            # Runs whose lease was lost (their jobs rescued while this worker was frozen or cut
            # off) and runs of a file replaced since (drop_replaced marks them lost) are not this
            # worker's to give back: a release would be refused and recorded as a stale write.
            self.runs.drop_replaced(self.queue.store_generation)
            for ctx in withdrawn:
                if ctx.lease_lost:
                    ctx.settled = True
                    self.runs.forget(ctx)
            withdrawn = [c for c in withdrawn if not c.lease_lost]
            if not withdrawn:
                return
            try:
                self.queue.release_many([ctx.job for ctx in withdrawn], reason=reason)
            except JobqError as exc:
                log.warning("could not give back %d job(s) claimed ahead: %s", len(withdrawn), one_line(exc))
                self.runs.restore(withdrawn)
                for ctx in withdrawn:  # a runner may have skipped it meanwhile; a second entry is ignored
                    self._submit(ctx)
                return
            for ctx in withdrawn:
                ctx.settled = True
                self.runs.forget(ctx)
        log.debug("gave back %d job(s) claimed ahead (%s)", len(withdrawn), reason)

    def _runner(self) -> None:
        while True:
            ctx = self._work.get()
            if ctx is None:
                return
            # Once stopping, a job no thread has begun is given back rather than run (``_drain``).
            if self._stopping.is_set() or not self.runs.begin(ctx):
                continue
            began = time.monotonic()
            # Every line logged during the run (by jobq or the handler) carries the run's fields.
            token = logs.enter_run(ctx.job, self.id)
            try:
                outcome = self._traced(ctx) if ctx.traced else self._execute(ctx)
            finally:
                logs.leave_run(token)
            ctx.ended = True
            self.prefetch.observe(time.monotonic() - began)
            self.runs.record(outcome)

    def _traced(self, ctx: JobContext) -> RunOutcome:
        """The run in a span, the child of its enqueue's span when one was stored."""
        job = ctx.job
        with tracing.run_span(ctx.trace_context, job.id, job.queue, job.task, job.attempts, self.id) as span:
            outcome = self._execute(ctx)
            tracing.record_outcome(span, _OUTCOME_NAMES.get(outcome.kind, "none"), outcome.error)
            return outcome

    async def _run_async(self, ctx: JobContext) -> None:
        """The event loop's runner: one ``async def`` handler run to its recorded outcome."""
        if self._stopping.is_set() or not self.runs.begin(ctx):
            return
        began = time.monotonic()
        # The run's log fields: a context variable, and each asyncio task runs in a copy of the
        # context, so concurrent coroutines keep their own.
        token = logs.enter_run(ctx.job, self.id)
        try:
            if ctx.traced:  # the attempt's span, as _traced makes it for a sync run
                job = ctx.job
                with tracing.run_span(ctx.trace_context, job.id, job.queue, job.task, job.attempts, self.id) as span:
                    outcome = await self._run_coroutine(ctx)
                    tracing.record_outcome(span, _OUTCOME_NAMES.get(outcome.kind, "none"), outcome.error)
            else:
                outcome = await self._run_coroutine(ctx)
        finally:
            logs.leave_run(token)
        if outcome.error:
            outcome.error = redact_text(outcome.error, self.queue.url)
        ctx.ended = True
        self.prefetch.observe(time.monotonic() - began)
        self.runs.record(outcome)

    def _async_not_run(self, ctx: JobContext) -> None:
        """A coroutine stopped before it began: an operator's cancel is its outcome (as a sync
        handler's first ``check()`` would make it); a lost lease or shutdown leaves nothing to write."""
        if not self.runs.begin(ctx):
            return  # withdrawn: the give-back settles it
        ctx.ended = True
        self.runs.record(RunOutcome(ctx, Outcome.CANCEL if ctx.cancel_requested else Outcome.NONE))

    async def _run_coroutine(self, ctx: JobContext) -> RunOutcome:
        early = self._refuse(ctx)
        if early is not None:
            return early
        handler = self.handlers.get(ctx.job.task) or self.handlers[""]
        try:
            result = await handler(ctx)
        except asyncio.CancelledError:
            # The stop flag cancelled the task (jobq.worker.aio): an operator's cancel is the
            # job's outcome; a timeout was recorded when it passed; a lost lease or a shutdown
            # leaves nothing to write (the job is someone else's, or released by the drain).
            if ctx.cancel_requested and not ctx.timed_out:
                return RunOutcome(ctx, Outcome.CANCEL)
            if ctx.lease_lost:
                # As a sync handler's LeaseLost is logged: the cancel may have overtaken the
                # LeaseLost the handler itself raised (ctx.complete(conn=...) refused).
                log.warning("job %s: lease lost (rescued or taken over); its coroutine was cancelled", ctx.job.id)
            return RunOutcome(ctx, Outcome.NONE)
        except BaseException as exc:  # noqa: BLE001 - mapped exactly as for sync handlers
            return self._raised(ctx, exc)
        return self._returned(ctx, result)

    def _execute(self, ctx: JobContext) -> RunOutcome:
        outcome = self._run_handler(ctx)
        if outcome.error:
            # The error is stored with the job and shown by `jobq show` and the apps: a handler
            # that touched the database may quote its URL.
            outcome.error = redact_text(outcome.error, self.queue.url)
        return outcome

    def _run_handler(self, ctx: JobContext) -> RunOutcome:
        early = self._refuse(ctx)
        if early is not None:
            return early
        handler = self.handlers.get(ctx.job.task) or self.handlers[""]
        try:
            result = handler(ctx)
        except BaseException as exc:  # noqa: BLE001 - any handler error is the job's failure
            # BaseException too: a handler's SystemExit or KeyboardInterrupt (raised in this
            # thread, not a signal to the worker) ended the runner, and its job stayed
            # PROCESSING under a lease the live worker kept renewing.
            return self._raised(ctx, exc)
        if result is not None and inspect.iscoroutine(result):  # not asyncio's: it counts generators
            # An async handler this worker could not tell apart (a lambda returning a coroutine):
            # fail it clearly rather than store "not JSON-serialisable: coroutine".
            result.close()
            error = "the handler returned a coroutine: declare it `async def` so the worker awaits it"
            return RunOutcome(ctx, Outcome.FAIL, error=error, retry=False)
        return self._returned(ctx, result)

    def _refuse(self, ctx: JobContext) -> RunOutcome | None:
        """The outcome of a run whose handler must not be called; None: call it."""
        if self._forced.is_set() or ctx.lease_lost:
            return RunOutcome(ctx, Outcome.NONE)
        if ctx.job.defect:
            # A row that cannot be read as a job fails that job, never the worker.
            return RunOutcome(ctx, Outcome.FAIL, error=f"cannot run this job: {ctx.job.defect}", retry=False)
        handler = self.handlers.get(ctx.job.task) or self.handlers.get("")
        if handler is None:
            known = ", ".join(sorted(repr(k) for k in self.handlers)) or "none"
            error = f"no handler for task {ctx.job.task!r} (known: {known})"
            return RunOutcome(ctx, Outcome.FAIL, error=error, retry=False)
        return None

    def _raised(self, ctx: JobContext, exc: BaseException) -> RunOutcome:
        """The outcome of a handler that raised ``exc`` (sync or async alike)."""
        if isinstance(exc, LeaseLost):
            log.warning("%s", exc)
            return RunOutcome(ctx, Outcome.NONE)
        if isinstance(exc, JobCancelled):
            if ctx.cancel_requested:
                return RunOutcome(ctx, Outcome.CANCEL)
            return RunOutcome(ctx, Outcome.FAIL, error=str(exc))
        if isinstance(exc, PermanentError):
            return RunOutcome(ctx, Outcome.FAIL, error=str(exc), retry=False)
        if isinstance(exc, WorkerShutdown) and self._stopping.is_set():
            # Given back at once, uncounted; outside a shutdown it is a failure like any other.
            return RunOutcome(ctx, Outcome.RELEASE, error=str(exc))
        # Any other handler error is the job's failure, with its traceback; the retry policy
        # (the enqueue's ``retry_on``/``backoff``, else the task's) decides whether and when it
        # runs again.
        trace = "".join(traceback.format_exception(exc))
        retried, delay = on_failure(ctx.job, exc)
        if not retried:
            error = f"{trace}not retried: {type(exc).__name__} is not in the job's retry_on"
            return RunOutcome(ctx, Outcome.FAIL, error=error, retry=False)
        return RunOutcome(ctx, Outcome.FAIL, error=trace, retry_delay=delay)

    def _returned(self, ctx: JobContext, result: object) -> RunOutcome:
        """The outcome of a handler that returned ``result`` (sync or async alike)."""
        if ctx.completed_in_transaction:
            # ctx.complete(conn=...) wrote the completion in the handler's own transaction: there
            # is nothing left to write (another write with this lease would only be refused).
            return RunOutcome(ctx, Outcome.NONE)
        if result is not None:  # None is stored as SQL NULL: nothing to check (most handlers)
            try:
                self.queue.result_text(result)  # what complete will store: JSON, within the limit
            except JobqError as exc:
                return RunOutcome(ctx, Outcome.FAIL, error=str(exc), retry=False)
        # The handler finished: its effect happened, so the job is COMPLETED even if a cancel
        # arrived meanwhile (recording CANCELLED would drop the result of work that was done).
        note = "a cancel was requested after the handler had finished" if ctx.cancel_requested else None
        return RunOutcome(ctx, Outcome.COMPLETE, result=result, note=note)

    # -- shutdown ------------------------------------------------------------------------------
    def _drain(self) -> None:
        # Jobs claimed ahead are not started once stopping: given back at once, for other workers.
        self._give_back(0.0, GAVE_BACK_AT_STOP)
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        while self.active() and not self._forced.is_set() and time.monotonic() < deadline:
            self._writer.flush()
            self.runs.ready.wait(0.1)
            self.runs.ready.clear()
        self._writer.flush()
        left = self.active()
        if not left:
            return
        with self.runs.write_lock:
            old = self.runs.drop_replaced(self.queue.store_generation)
        # Not given back: a run of a file replaced since (its release would reach another job)
        # and a run whose lease was lost (its job rescued, perhaps running elsewhere: its release
        # would only be refused, and recorded a second time).
        given = [ctx for ctx in left if ctx not in old and not ctx.lease_lost]
        if given:
            log.warning("releasing %d unfinished job(s) back to the queue", len(given))
        for ctx in left:
            ctx.cancelled.set()
            ctx.settled = True
            if ctx not in given:
                self.runs.forget(ctx)
                continue
            try:
                self.queue.release(ctx.job, reason="worker shut down before the job finished")
            except JobqError as exc:
                log.warning("job %s: release failed (%s); it will be rescued when its lease expires", ctx.job.id, exc)
            self.runs.forget(ctx)
