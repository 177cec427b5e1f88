"""The worker: claim -> run the handler -> record the outcome, with heartbeats, rescue and
graceful shutdown.

Concurrency is threads, not processes: most jobs (file writes, network calls) and the queue's
own work wait on I/O, threads share one database handle and one heartbeat, and a thread pool
starts instantly. CPU-bound handlers scale by running more worker processes (supervisord
``numprocs``), which the queue supports as it is. Threads cannot be killed, so cancellation and timeouts are cooperative
(``JobContext.check``); fencing makes a handler that ignores them harmless: its late
completion is refused.

Outcomes are group-committed: runner threads hand them to the main loop, which records every
outcome gathered so far in one transaction before it claims more. With short jobs and a claim
batch (``batch``), one fsync covers many jobs; with one long job at a time it is one
transaction per job, as it should be.
"""

from __future__ import annotations

import enum
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
from dataclasses import dataclass
from types import FrameType
from typing import Any

from jobq.backends.base import Listener, WorkerInfo
from jobq.errors import JobCancelled, JobqError, LeaseLost
from jobq.job import Job
from jobq.payloads import encode_json
from jobq.queue import Queue
from jobq.redact import RedactingFilter, redact_text
from jobq.worker.context import JobContext, PermanentError
from jobq.worker.heartbeat import Heartbeater
from jobq.worker.registry import Handler
from jobq.worker.rescuer import Pruner, Rescuer, process_table_id
from jobq.worker.stall import StallWatch

log = logging.getLogger("jobq.worker")

#: Wake at least this often while jobs run, to refill free slots when new work was signalled.
BUSY_POLL_SECONDS = 0.05
#: Longest sleep between checks of the stop flag (a signal does not interrupt select()).
MAX_SLEEP_SECONDS = 1.0
#: After an error in the worker loop, wait this long, doubling up to the cap while it repeats.
LOOP_ERROR_BACKOFF_SECONDS = 0.5
LOOP_ERROR_BACKOFF_CAP_SECONDS = 30.0


class Outcome(enum.Enum):
    """What a run of a handler comes to, and so which write records it."""

    COMPLETE = "complete"
    """The handler returned: COMPLETED (also when a cancel came after it had finished)."""
    FAIL = "fail"
    """It raised (or cannot run): retried after backoff while attempts are left, else FAILED."""
    CANCEL = "cancel"
    """It stopped because an operator asked: CANCELLED."""
    NONE = "none"
    """Nothing to write: the lease was lost, or the outcome was already recorded (timeout)."""


@dataclass(slots=True)
class _Outcome:
    ctx: JobContext
    kind: Outcome
    result: Any = None
    error: str = ""
    retry: bool = True
    note: str | None = None
    sent: bool = False
    """Its write was sent before and failed: it may have committed, so it is repeated as such."""


#: Which outcomes are still unwritten when the write of a kind fails (kinds are written in this order).
_KINDS_FROM = {
    Outcome.COMPLETE: (Outcome.COMPLETE, Outcome.FAIL, Outcome.CANCEL),
    Outcome.FAIL: (Outcome.FAIL, Outcome.CANCEL),
    Outcome.CANCEL: (Outcome.CANCEL,),
}
#: Longest error text put on one log line (the whole traceback is in the job's history).
LOG_LINE_MAX_CHARS = 500


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:LOG_LINE_MAX_CHARS]


def new_worker_id() -> str:
    """Unique per process start (procrastinate#1518 and oban#862 broke on reused ids)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Worker:
    """Runs handlers for the jobs of ``queues``.

    Args:
        queue: the Queue to work on (settings come from it: lease, grace, intervals).
        handlers: task name -> handler, or one handler for every task.
        queues: queue names to claim from (default: the settings' queue).
        concurrency: handler threads.
        batch: jobs claimed per transaction (default: ``concurrency``). Larger values prefetch:
            faster for short jobs, but a long job's batch-mates wait behind it.
        name: shown in ops (default: supervisord's program name, else ``worker-<pid>``).
        exit_when_idle: return from ``run()`` once nothing is due and nothing runs (tests,
            benchmarks, cron-style draining).
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
    ) -> None:
        self.queue = queue
        self.settings = queue.settings
        self.handlers: dict[str, Handler] = dict(handlers) if isinstance(handlers, Mapping) else {"": handlers}
        self.queues = list(queues or [self.settings.queue])
        self.concurrency = max(1, concurrency or self.settings.concurrency)
        self.capacity = max(self.concurrency, batch or self.concurrency)
        self.id = new_worker_id()
        self.name = name or os.environ.get("SUPERVISOR_PROCESS_NAME") or f"worker-{os.getpid()}"
        self.exit_when_idle = exit_when_idle
        self.jobs_done = 0
        self.jobs_failed = 0
        # Keyed by (job id, lease token): after a lost lease this worker may claim the same job
        # again while the old handler thread still runs; forgetting the old run must not drop
        # the new lease (it would stop being heartbeated and expire in a healthy worker).
        self._active: dict[tuple[int, str | None], JobContext] = {}
        self._active_lock = threading.Lock()
        self._work: stdqueue.Queue[JobContext | None] = stdqueue.Queue()
        self._outcomes: list[_Outcome] = []
        self._outcomes_lock = threading.Lock()
        self._outcome_ready = threading.Event()
        self._stopping = threading.Event()
        self._forced = threading.Event()
        self.healthy = True
        #: Held while outcomes are written and while heartbeats are sent, so a heartbeat never
        #: races a completion of the same job (it would be refused and look like a lost lease).
        self.write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        heartbeat = self.settings.heartbeat_seconds
        self.stalls = StallWatch(
            queue.clock, threshold=heartbeat / 2, margin=heartbeat, grace=self.settings.lease_seconds
        )
        self._listener: Listener | None = None

    # -- what the loops see ------------------------------------------------------------------
    def active(self) -> list[JobContext]:
        with self._active_lock:
            return list(self._active.values())

    def forget(self, ctx: JobContext) -> None:
        """Stop tracking a job whose outcome was already settled (lease lost, timed out)."""
        with self._active_lock:
            if self._active.get(ctx.key) is ctx:
                del self._active[ctx.key]

    # -- control -----------------------------------------------------------------------------
    def stop(self, *, force: bool = False) -> None:
        """Stop claiming and drain (the first call); ``force`` releases running jobs at once."""
        self._stopping.set()
        if force:
            self._forced.set()
        self._outcome_ready.set()

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
        period; what cannot finish is released back to PENDING at once."""
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        else:
            previous = {}
        now = time.time()
        self._listener = self.queue.backend.listener(self.id, self.queues)
        self.queue.backend.register_worker(
            WorkerInfo(
                id=self.id,
                name=self.name,
                host=socket.gethostname(),
                pid=os.getpid(),
                queues=tuple(self.queues),
                started_at=now,
                last_seen_at=now,
                wake_address=self._listener.address,
                process_table=process_table_id(),
            )
        )
        log.info("worker %s (%s) started on queues %s", self.id, self.name, ",".join(self.queues))
        loops = [
            Heartbeater(self),
            Rescuer(self.queue, self.id, self.settings.rescue_interval_seconds, self.stalls),
        ]
        if self.settings.prune_after_seconds:
            loops.append(Pruner(self.queue, self.settings.prune_after_seconds))
        self._threads = [
            threading.Thread(target=self._runner, name=f"jobq-run-{i}", daemon=True) for i in range(self.concurrency)
        ]
        # Every worker log line masks the database password, however the application set up
        # logging: a driver error may quote the URL, and supervisord keeps these logs in files.
        redacting = RedactingFilter(self.queue.url)
        log.addFilter(redacting)
        for t in self._threads:
            t.start()
        for loop in loops:
            loop.start()
        try:
            self._main_loop()
            self._drain()
        finally:
            for loop in loops:
                loop.stop()
            for _ in self._threads:
                self._work.put(None)
            try:
                self.queue.backend.worker_seen(self.id, time.time(), [], self.jobs_done, self.jobs_failed)
                self.queue.backend.worker_stopped(self.id, time.time())
            except JobqError as exc:
                log.warning("could not mark the worker stopped: %s", exc)
            self._listener.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            log.info("worker %s stopped: %d done, %d failed", self.id, self.jobs_done, self.jobs_failed)
            log.removeFilter(redacting)

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
                log.error("worker loop: %s (again in %.1f s)", _one_line(exc), pause)
                if not isinstance(exc, JobqError):
                    log.debug("worker loop error", exc_info=True)
                self._stopping.wait(pause)

    def _step(self) -> bool:
        """One pass: record finished outcomes, claim into free slots, else wait. False: idle and
        ``exit_when_idle``, so stop."""
        assert self._listener is not None
        self._flush()
        active = len(self.active())
        free = self.capacity - active
        # Refill when at least half the slots are free (or all are): fewer, larger claims.
        if self.healthy and free > 0 and (active == 0 or free * 2 >= self.capacity):
            jobs = self.queue.claim_many(self.id, free, queue=self.queues)
            if jobs:
                self._dispatch(jobs)
                return True
        if active:
            self._outcome_ready.wait(BUSY_POLL_SECONDS if free > 0 else MAX_SLEEP_SECONDS)
            self._outcome_ready.clear()
            return True
        if self.exit_when_idle and not self._pending_outcomes():
            return False
        self._listener.wait(self._idle_sleep())
        return True

    def _idle_sleep(self) -> float:
        sleep = min(self.settings.poll_interval_seconds, MAX_SLEEP_SECONDS)
        try:
            due = self.queue.backend.next_due_at(self.queues)
        except Exception:  # noqa: BLE001 - only a hint for how long to sleep
            return sleep
        if due is not None:
            sleep = min(sleep, max(0.0, due - self.queue.clock()))
        return sleep

    def _dispatch(self, jobs: list[Job]) -> None:
        for job in jobs:
            ctx = JobContext(job, self.queue, self.id)
            with self._active_lock:
                self._active[ctx.key] = ctx
            self._work.put(ctx)

    def _pending_outcomes(self) -> bool:
        with self._outcomes_lock:
            return bool(self._outcomes)

    # -- runner threads ------------------------------------------------------------------------
    def _runner(self) -> None:
        while True:
            ctx = self._work.get()
            if ctx is None:
                return
            self._record(self._execute(ctx))

    def _execute(self, ctx: JobContext) -> _Outcome:
        outcome = self._run_handler(ctx)
        if outcome.error:
            # The error is stored with the job and shown by `jobq show` and the apps: a handler
            # that touched the database may quote its URL.
            outcome.error = redact_text(outcome.error, self.queue.url)
        return outcome

    def _run_handler(self, ctx: JobContext) -> _Outcome:
        if self._forced.is_set() or ctx.lease_lost:
            return _Outcome(ctx, Outcome.NONE)
        if ctx.job.defect:
            # A row that cannot be read as a job fails that job, never the worker.
            return _Outcome(ctx, Outcome.FAIL, error=f"cannot run this job: {ctx.job.defect}", retry=False)
        handler = self.handlers.get(ctx.job.task) or self.handlers.get("")
        if handler is None:
            known = ", ".join(sorted(repr(k) for k in self.handlers)) or "none"
            error = f"no handler for task {ctx.job.task!r} (known: {known})"
            return _Outcome(ctx, Outcome.FAIL, error=error, retry=False)
        try:
            result = handler(ctx)
        except LeaseLost as exc:
            log.warning("%s", exc)
            return _Outcome(ctx, Outcome.NONE)
        except JobCancelled as exc:
            if ctx.cancel_requested:
                return _Outcome(ctx, Outcome.CANCEL)
            return _Outcome(ctx, Outcome.FAIL, error=str(exc))
        except PermanentError as exc:
            return _Outcome(ctx, Outcome.FAIL, error=str(exc), retry=False)
        except Exception:  # noqa: BLE001 - any handler error is the job's failure, with its traceback
            return _Outcome(ctx, Outcome.FAIL, error=traceback.format_exc())
        try:
            encode_json(result, "result")
        except JobqError as exc:
            return _Outcome(ctx, Outcome.FAIL, error=str(exc), retry=False)
        # The handler finished: its effect happened, so the job is COMPLETED even if a cancel
        # arrived meanwhile (recording CANCELLED would drop the result of work that was done).
        note = "a cancel was requested after the handler had finished" if ctx.cancel_requested else None
        return _Outcome(ctx, Outcome.COMPLETE, result=result, note=note)

    def _record(self, outcome: _Outcome) -> None:
        with self._outcomes_lock:
            self._outcomes.append(outcome)
        self._outcome_ready.set()

    # -- group commit --------------------------------------------------------------------------
    def _flush(self) -> None:
        """Record every gathered outcome: one transaction for completions, one for failures."""
        with self._outcomes_lock:
            batch, self._outcomes = self._outcomes, []
        if not batch:
            return
        with self.write_lock:
            self._write_outcomes(batch)

    def _write_outcomes(self, batch: list[_Outcome]) -> None:
        """One write per kind of outcome. A group whose write fails is kept for the next flush:
        every worker write is fenced by its lease and recognised when repeated after a commit
        whose reply was lost, so writing it again is safe (solid_queue#748)."""
        todo = []
        for o in batch:
            if o.kind is Outcome.NONE or o.ctx.settled or o.ctx.lease_lost:
                self.forget(o.ctx)
            else:
                todo.append(o)
        for kind, write in (
            (Outcome.COMPLETE, self._write_completions),
            (Outcome.FAIL, self._write_failures),
            (Outcome.CANCEL, self._write_cancels),
        ):
            group = [o for o in todo if o.kind is kind]
            if not group:
                continue
            try:
                write(group)
            except Exception as exc:  # noqa: BLE001 - whatever it was, keep the outcomes and retry
                for o in group:
                    o.sent = True
                left = [o for o in todo if o.kind in _KINDS_FROM[kind]]
                log.error("could not record %d outcome(s), will retry: %s", len(left), _one_line(exc))
                with self._outcomes_lock:
                    self._outcomes[:0] = left
                self._stopping.wait(MAX_SLEEP_SECONDS)
                return
            for o in group:
                self.forget(o.ctx)

    def _write_completions(self, group: list[_Outcome]) -> None:
        done = self.queue.complete_many(
            [(o.ctx.job, o.result) for o in group], notes=[o.note for o in group], repeat=any(o.sent for o in group)
        )
        for o, ok in zip(group, done, strict=True):
            if ok:
                self.jobs_done += 1
            else:
                log.warning("job %s: lease lost, completion refused", o.ctx.job.id)

    def _write_failures(self, group: list[_Outcome]) -> None:
        failed = self.queue.fail_many([(o.ctx.job, o.error, o.retry) for o in group], repeat=any(o.sent for o in group))
        for o, (status, ok) in zip(group, failed, strict=True):
            self.jobs_failed += 1
            last = o.error.strip().splitlines()[-1] if o.error.strip() else ""
            log.log(
                logging.WARNING if ok else logging.ERROR,
                "job %s failed (%s): %s",
                o.ctx.job.id,
                status if ok else "refused",
                last[:LOG_LINE_MAX_CHARS],
            )

    def _write_cancels(self, group: list[_Outcome]) -> None:
        for o in group:
            self.queue.ack_cancel(o.ctx.job, repeat=o.sent)

    # -- shutdown ------------------------------------------------------------------------------
    def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        while self.active() and not self._forced.is_set() and time.monotonic() < deadline:
            self._flush()
            self._outcome_ready.wait(0.1)
            self._outcome_ready.clear()
        self._flush()
        left = self.active()
        if not left:
            return
        log.warning("releasing %d unfinished job(s) back to the queue", len(left))
        for ctx in left:
            ctx.cancelled.set()
            ctx.settled = True
            try:
                self.queue.release(ctx.job, reason="worker shut down before the job finished")
            except JobqError as exc:
                log.warning("job %s: release failed (%s); it will be rescued when its lease expires", ctx.job.id, exc)
            self.forget(ctx)
