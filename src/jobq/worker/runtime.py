"""The worker: claim -> run the handler -> record the outcome, with heartbeats, rescue and
graceful shutdown.

Concurrency is threads, not processes: the seed's jobs and most queue work wait on I/O, threads
share one database handle and one heartbeat, and a thread pool starts instantly. CPU-bound
handlers scale by running more worker processes (supervisord ``numprocs``), which the queue
supports as it is. Threads cannot be killed, so cancellation and timeouts are cooperative
(``JobContext.check``); fencing makes a handler that ignores them harmless: its late
completion is refused.

Outcomes are group-committed: runner threads hand them to the main loop, which records every
outcome gathered so far in one transaction before it claims more. With short jobs and a claim
batch (``batch``), one fsync covers many jobs; with one long job at a time it is one
transaction per job, as it should be.
"""

from __future__ import annotations

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
from jobq.errors import JobCancelled, JobqError, LeaseLost, StorageError
from jobq.job import Job
from jobq.queue import Queue, encode_json
from jobq.redact import RedactingFilter, redact_text
from jobq.worker.context import JobContext, PermanentError
from jobq.worker.heartbeat import Heartbeater
from jobq.worker.registry import Handler
from jobq.worker.rescuer import Pruner, Rescuer

log = logging.getLogger("jobq.worker")

#: Wake at least this often while jobs run, to refill free slots when new work was signalled.
BUSY_POLL_SECONDS = 0.05
#: Longest sleep between checks of the stop flag (a signal does not interrupt select()).
MAX_SLEEP_SECONDS = 1.0


@dataclass(slots=True)
class _Outcome:
    ctx: JobContext
    kind: str  # "complete" | "fail" | "cancel" | "none"
    result: Any = None
    error: str = ""
    retry: bool = True


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
        self._active: dict[int, JobContext] = {}
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
        self._listener: Listener | None = None

    # -- what the loops see ------------------------------------------------------------------
    def active(self) -> list[JobContext]:
        with self._active_lock:
            return list(self._active.values())

    def forget(self, ctx: JobContext) -> None:
        """Stop tracking a job whose outcome was already settled (lease lost, timed out)."""
        with self._active_lock:
            self._active.pop(ctx.job.id, None)

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
            )
        )
        log.info("worker %s (%s) started on queues %s", self.id, self.name, ",".join(self.queues))
        loops = [
            Heartbeater(self),
            Rescuer(self.queue, self.id, self.settings.rescue_interval_seconds),
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
        assert self._listener is not None
        while not self._stopping.is_set():
            self._flush()
            active = len(self.active())
            free = self.capacity - active
            # Refill when at least half the slots are free (or all are): fewer, larger claims.
            if self.healthy and free > 0 and (active == 0 or free * 2 >= self.capacity):
                try:
                    jobs = self.queue.claim_many(self.id, free, queue=self.queues)
                except StorageError as exc:
                    log.error("claim failed: %s", exc)
                    jobs = []
                    self._stopping.wait(MAX_SLEEP_SECONDS)
                if jobs:
                    self._dispatch(jobs)
                    continue
            if active:
                self._outcome_ready.wait(BUSY_POLL_SECONDS if free > 0 else MAX_SLEEP_SECONDS)
                self._outcome_ready.clear()
                continue
            if self.exit_when_idle and not self._pending_outcomes():
                return
            self._listener.wait(self._idle_sleep())

    def _idle_sleep(self) -> float:
        sleep = min(self.settings.poll_interval_seconds, MAX_SLEEP_SECONDS)
        try:
            due = self.queue.backend.next_due_at(self.queues)
        except StorageError:
            return sleep
        if due is not None:
            sleep = min(sleep, max(0.0, due - self.queue.clock()))
        return sleep

    def _dispatch(self, jobs: list[Job]) -> None:
        for job in jobs:
            ctx = JobContext(job, self.queue, self.id)
            with self._active_lock:
                self._active[job.id] = ctx
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
            return _Outcome(ctx, "none")
        handler = self.handlers.get(ctx.job.task) or self.handlers.get("")
        if handler is None:
            known = ", ".join(sorted(repr(k) for k in self.handlers)) or "none"
            return _Outcome(ctx, "fail", error=f"no handler for task {ctx.job.task!r} (known: {known})", retry=False)
        try:
            result = handler(ctx)
        except LeaseLost as exc:
            log.warning("%s", exc)
            return _Outcome(ctx, "none")
        except JobCancelled as exc:
            if ctx.cancel_requested:
                return _Outcome(ctx, "cancel")
            return _Outcome(ctx, "fail", error=str(exc))
        except PermanentError as exc:
            return _Outcome(ctx, "fail", error=str(exc), retry=False)
        except Exception:  # noqa: BLE001 - any handler error is the job's failure, with its traceback
            return _Outcome(ctx, "fail", error=traceback.format_exc())
        if ctx.cancel_requested:
            return _Outcome(ctx, "cancel")
        try:
            encode_json(result, "result")
        except JobqError as exc:
            return _Outcome(ctx, "fail", error=str(exc), retry=False)
        return _Outcome(ctx, "complete", result=result)

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
        pending = [o for o in batch if not o.ctx.settled and not o.ctx.lease_lost]
        try:
            completes = [o for o in pending if o.kind == "complete"]
            fails = [o for o in pending if o.kind == "fail"]
            if completes:
                done = self.queue.complete_many([(o.ctx.job, o.result) for o in completes])
                for o, ok in zip(completes, done, strict=True):
                    if ok:
                        self.jobs_done += 1
                    else:
                        log.warning("job %s: lease lost, completion refused", o.ctx.job.id)
            if fails:
                failed = self.queue.fail_many([(o.ctx.job, o.error, o.retry) for o in fails])
                for o, (status, ok) in zip(fails, failed, strict=True):
                    self.jobs_failed += 1
                    level = logging.WARNING if ok else logging.ERROR
                    log.log(
                        level,
                        "job %s failed (%s): %s",
                        o.ctx.job.id,
                        status if ok else "refused",
                        o.error.strip().splitlines()[-1] if o.error.strip() else "",
                    )
            for o in pending:
                if o.kind == "cancel":
                    self.queue.ack_cancel(o.ctx.job)
        except StorageError as exc:
            # Keep them: every write is fenced, so recording them later is safe (solid_queue#748).
            log.error("could not record %d outcomes, will retry: %s", len(batch), exc)
            with self._outcomes_lock:
                self._outcomes[:0] = batch
            self._stopping.wait(MAX_SLEEP_SECONDS)
            return
        for o in batch:
            self.forget(o.ctx)

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
