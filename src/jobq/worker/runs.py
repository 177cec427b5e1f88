"""The runs a worker holds, and the one path by which their outcomes reach the database.

Every outcome, whoever decides it, goes through ``Runs.record``: a runner thread when its
handler returns (complete, fail, cancel) and the heartbeater when a run passes its timeout
(fail). The first outcome recorded for a run wins; a later one only ends the run. Then
``OutcomeWriter.flush`` (called by the worker's main loop only) writes what was recorded.

Outcomes are group-committed: everything recorded since the last flush is written in one
transaction per kind before the worker claims more. With short jobs and a claim batch, one
fsync covers many jobs; with one job at a time it is one transaction per job, which also claims the
next job (``flush(claim=...)``: completing and claiming share the commit).

Limits: a run that timed out keeps its slot (and its runner thread) until its handler returns:
threads cannot be killed, and a slot freed early would let the worker claim more jobs than it
has threads to run them.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from jobq.job import Job
from jobq.observability.logs import fields_of
from jobq.queue import Queue
from jobq.worker.context import JobContext

log = logging.getLogger("jobq.worker")

ClaimPlan = Callable[[int], int]
"""Given how many runs the completions being written will end, how many jobs to claim (0: none)."""
Claimed = tuple[int, list[Job]]
"""A claim made with the completions: how many jobs it asked for, and the jobs it got."""

#: After a failed outcome write, wait this long (or until the worker stops) before the next try.
WRITE_RETRY_SECONDS = 1.0
#: Longest error text put on one log line (the whole traceback is in the job's history).
LOG_LINE_MAX_CHARS = 500


class Outcome(enum.Enum):
    """What a run of a handler comes to, and so which write records it."""

    COMPLETE = "complete"
    """The handler returned: COMPLETED (also when a cancel came after it had finished)."""
    FAIL = "fail"
    """It raised, cannot run, or passed its timeout: retried after backoff while attempts are
    left, else FAILED."""
    CANCEL = "cancel"
    """It stopped because an operator asked: CANCELLED."""
    RELEASE = "release"
    """It gave its job back while the worker shuts down (``WorkerShutdown``): PENDING again at
    once, its attempt not counted."""
    NONE = "none"
    """Nothing to write: the lease was lost, the run already had its outcome (timeout), or the
    handler completed the job in its own transaction (``JobContext.complete(conn=...)``)."""


@dataclasses.dataclass(slots=True)
class RunOutcome:
    """One outcome of one run, on its way to the database."""

    ctx: JobContext
    kind: Outcome
    result: Any = None
    error: str = ""
    retry: bool = True
    retry_delay: float | None = None
    """Seconds before the retry, from the task's policy (None: the queue's backoff)."""
    note: str | None = None
    ends_run: bool = True
    """The handler returned: once written, the run gives its slot back. False for a timeout,
    decided while the handler still runs."""
    sent: bool = False
    """Its write was sent before and failed: it may have committed, so it is repeated as such."""


#: Which outcomes are still unwritten when the write of a kind fails (kinds are written in this order).
_KINDS_FROM = {
    Outcome.COMPLETE: (Outcome.COMPLETE, Outcome.FAIL, Outcome.CANCEL, Outcome.RELEASE),
    Outcome.FAIL: (Outcome.FAIL, Outcome.CANCEL, Outcome.RELEASE),
    Outcome.CANCEL: (Outcome.CANCEL, Outcome.RELEASE),
    Outcome.RELEASE: (Outcome.RELEASE,),
}


def _fields(ctx: JobContext) -> dict[str, Any]:
    """The run's fields for a line logged outside its thread (structured logs)."""
    job = ctx.job
    return fields_of(job.id, job.queue, job.task, job.attempts, ctx.worker_id)


def one_line(exc: BaseException) -> str:
    """An exception as one log line of at most ``LOG_LINE_MAX_CHARS``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:LOG_LINE_MAX_CHARS]


@dataclasses.dataclass
class WorkerStatus:
    """What the worker's registry row reports, and whether it may claim.

    The heartbeater sets ``healthy``; the outcome writer counts. Each field has one writer thread.
    """

    healthy: bool = True
    """False while heartbeats keep failing: a worker that cannot renew leases must not claim."""
    jobs_done: int = 0
    jobs_failed: int = 0


class Runs:
    """The runs this worker holds, keyed by (job id, lease token), and their recorded outcomes."""

    def __init__(self) -> None:
        # Keyed by (job id, lease token): after a lost lease this worker may claim the same job
        # again while the old handler thread still runs; forgetting the old run must not drop
        # the new lease (it would stop being heartbeated and expire in a healthy worker).
        self._active: dict[tuple[int, str | None], JobContext] = {}
        self._active_lock = threading.Lock()
        self._outcomes: list[RunOutcome] = []
        self._outcomes_lock = threading.Lock()
        self.ready = threading.Event()
        """Set when an outcome was recorded (or the worker is stopping): the main loop wakes."""
        self.write_lock = threading.Lock()
        """Held while outcomes are written and while heartbeats are sent, so a heartbeat never
        races a completion of the same job (it would be refused and look like a lost lease)."""

    def add(self, ctx: JobContext) -> None:
        with self._active_lock:
            self._active[ctx.key] = ctx

    def active(self) -> list[JobContext]:
        """The runs holding a slot: claimed and not yet ended (their handler may still run)."""
        with self._active_lock:
            return list(self._active.values())

    def drop_replaced(self, generation: int) -> list[JobContext]:
        """The runs claimed from a SQLite file that has been replaced under the worker since
        (their ``store_generation`` is older than ``generation``, ``Queue.store_generation``):
        each is taken as a lost lease (its handler is told to stop), and nothing more is written
        for it. Written, its heartbeat or outcome would reach the new file's job of the same id:
        refused there by the lease, but recorded as that job's stale write. Called with
        ``write_lock`` held, before a heartbeat, an outcome write or a give-back. Returns the runs
        of an older file (dropped now or before); none without a look while the file was never
        replaced (generation 0, always on PostgreSQL)."""
        if not generation:
            return []
        old = [ctx for ctx in self.active() if ctx.store_generation != generation]
        for ctx in old:
            if not ctx.lease_lost and not ctx.settled:
                ctx.lease_lost = True
                ctx.cancelled.set()
                log.warning(
                    "job %s: claimed from the queue's file before it was replaced; its run is dropped",
                    ctx.job.id,
                    extra=_fields(ctx),
                )
        return old

    def begin(self, ctx: JobContext) -> bool:
        """A runner thread takes the run: False when it was withdrawn (given back) before."""
        with self._active_lock:
            if ctx.withdrawn or ctx.begun:  # given back, or a second entry of a restored run
                return False
            ctx.begun = True
            # A timeout counts from here: a job claimed ahead did not run while it waited.
            ctx.started = time.monotonic()
            return True

    def withdraw(self, waited: float = 0.0, async_slots: int = 0) -> list[JobContext]:
        """Take back the runs no thread has begun, if the oldest of them has waited at least
        ``waited`` seconds behind a handler that has run at least as long (else none): their jobs
        are to be given back. ``waited`` 0 (shutdown) takes back every run no thread has begun.
        They keep their slot (and their heartbeat) until the give-back is written or ``restore``
        puts them back. ``async_slots``: the worker's event loop runs that many handlers at once."""
        now = time.monotonic()
        with self._active_lock:
            waiting = [c for c in self._active.values() if not (c.begun or c.withdrawn or c.settled or c.decided)]
            if waited > 0 and any(c.on_loop for c in waiting):
                # Runs on the event loop not begun while it has a free slot wait for the loop to
                # reach them, not behind a long job (1,000 coroutines handed over at once: the
                # last ones began after 50 ms, and a third of them were given back, then waited
                # for the first second of sleeps to end before they were claimed again).
                on_loop = sum(1 for c in self._active.values() if c.on_loop and c.begun and not c.ended)
                if on_loop < async_slots:
                    waiting = [c for c in waiting if not c.on_loop]
            if not waiting or now - min(c.started for c in waiting) < waited:
                return []
            # Jobs that waited while no handler ran that long waited for a runner thread to be
            # scheduled, not behind a long job: another worker would not run them sooner. On a
            # loaded machine a claimed batch of 100 reached its first handler after more than
            # 50 ms, and was given back whole (200 statements on PostgreSQL), claimed again,
            # given back again (issue 13: Worker(batch=100) x4 at 1,350-4,656 jobs/s).
            running = (now - c.started for c in self._active.values() if c.begun and not c.ended)
            if waited > 0 and max(running, default=0.0) < waited:
                return []
            for ctx in waiting:
                ctx.withdrawn = True
            return waiting

    def restore(self, withdrawn: list[JobContext]) -> None:
        """Withdrawn runs whose give-back failed: they may run after all."""
        with self._active_lock:
            for ctx in withdrawn:
                ctx.withdrawn = False

    def longest_running(self) -> float:
        """Seconds the longest-running begun handler has run (0 when none runs)."""
        now = time.monotonic()
        with self._active_lock:
            return max((now - c.started for c in self._active.values() if c.begun and not c.ended), default=0.0)

    def forget(self, ctx: JobContext) -> None:
        """Give the run's slot back (its handler returned, or it was released)."""
        with self._active_lock:
            if self._active.get(ctx.key) is ctx:
                del self._active[ctx.key]

    def record(self, outcome: RunOutcome) -> bool:
        """Hand an outcome to the writer: the one door for every outcome of every run.

        Returns False when the run already had one (then this one is written as NONE: it only
        ends the run). Deciding here, under one lock, settles the race of a handler that
        returns just as its timeout passes: whichever is recorded first is the outcome.
        """
        ctx = outcome.ctx
        with self._outcomes_lock:
            first = outcome.kind is not Outcome.NONE and not ctx.decided and not ctx.settled
            if first:
                ctx.decided = True
            elif outcome.kind is not Outcome.NONE:
                outcome = dataclasses.replace(outcome, kind=Outcome.NONE)
            self._outcomes.append(outcome)
        # Set only when not set yet: a batch's outcomes mostly arrive before the main loop woke for
        # the first, and Event.set is six Python calls (issue 13). No wake-up is lost: the outcome
        # is appended before the flag is read, and the main loop clears the flag before it takes
        # the outcomes (``Worker._step``, ``_drain``), so a flag seen set means a take to come.
        if not self.ready.is_set():
            self.ready.set()
        return first

    def time_out(self, ctx: JobContext) -> bool:
        """Record a FAIL for a run past its timeout, and tell its handler to stop.

        The failure is written at once (fenced), so the handler's late result is refused if it
        ever comes; the handler keeps its slot until it returns. False if the run already had
        an outcome.
        """
        limit = ctx.job.timeout
        if limit is None:
            return False
        outcome = RunOutcome(ctx, Outcome.FAIL, error=f"timed out after {limit:g} s", ends_run=False)
        if not self.record(outcome):
            return False
        ctx.timed_out = True
        ctx.cancelled.set()
        log.warning("job %s: timed out after %g s", ctx.job.id, limit, extra=_fields(ctx))
        return True

    def take(self) -> list[RunOutcome]:
        """Every outcome recorded so far, oldest first (they are no longer pending)."""
        with self._outcomes_lock:
            batch, self._outcomes = self._outcomes, []
        return batch

    def put_back(self, outcomes: list[RunOutcome]) -> None:
        """Outcomes whose write failed: first in line for the next flush."""
        with self._outcomes_lock:
            self._outcomes[:0] = outcomes

    def pending(self) -> bool:
        """True while some recorded outcome is not written yet."""
        with self._outcomes_lock:
            return bool(self._outcomes)


class OutcomeWriter:
    """Writes recorded outcomes: one transaction per kind, each write fenced by its lease.

    Args:
        queue: the facade every write goes through.
        runs: where outcomes are recorded, and the lock shared with the heartbeater.
        status: counts what was written.
        stopping: set when the worker stops; a retry waits on it, so stopping is not delayed.
        worker_id, queues: whose claims ride along with completions (``flush(claim=...)``).
    """

    def __init__(
        self,
        queue: Queue,
        runs: Runs,
        status: WorkerStatus,
        stopping: threading.Event,
        worker_id: str = "",
        queues: Sequence[str] = (),
    ) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self.queues = list(queues)
        self.runs = runs
        self.status = status
        self.stopping = stopping

    def flush(self, claim: ClaimPlan | None = None) -> Claimed | None:
        """Write every outcome recorded so far.

        ``claim``: how many jobs to claim once the runs being completed end; that claim rides in
        the completions' transaction (``Queue.complete_many_and_claim``: one commit, not two).
        Returns (asked, jobs) when it did, None when no claim was made here."""
        batch = self.runs.take()
        if not batch:
            return None
        with self.runs.write_lock:
            return self._write(batch, claim)

    def _write(self, batch: list[RunOutcome], claim: ClaimPlan | None = None) -> Claimed | None:
        """One write per kind of outcome. A group whose write fails is kept for the next flush:
        every worker write is fenced by its lease and recognised when repeated after a commit
        whose reply was lost, so writing it again is safe (solid_queue#748)."""
        claimed: Claimed | None = None
        self.runs.drop_replaced(self.queue.store_generation)  # outcomes of a replaced file: none written
        todo = []
        for o in batch:
            if o.kind is Outcome.NONE or o.ctx.settled or o.ctx.lease_lost:
                if o.kind is Outcome.NONE and o.ctx.completed_in_transaction and not o.ctx.settled:
                    o.ctx.settled = True
                    self.status.jobs_done += 1  # completed in the handler's transaction
                self._done(o)
            else:
                todo.append(o)
        for kind, write in (
            (Outcome.COMPLETE, self._write_completions),
            (Outcome.FAIL, self._write_failures),
            (Outcome.CANCEL, self._write_cancels),
            (Outcome.RELEASE, self._write_releases),
        ):
            group = [o for o in todo if o.kind is kind]
            if not group:
                continue
            try:
                if kind is Outcome.COMPLETE and claim is not None:
                    ask = claim(sum(1 for o in group if o.ends_run))
                    if ask > 0:
                        claimed = (ask, self._write_completions(group, claim=ask))
                    else:
                        write(group)
                else:
                    write(group)
            except Exception as exc:  # noqa: BLE001 - whatever it was, keep the outcomes and retry
                for o in group:
                    o.sent = True
                left = [o for o in todo if o.kind in _KINDS_FROM[kind]]
                log.error("could not record %d outcome(s), will retry: %s", len(left), one_line(exc))
                self.runs.put_back(left)
                self.stopping.wait(WRITE_RETRY_SECONDS)
                return claimed
            for o in group:
                o.ctx.settled = True
                self._done(o)
        return claimed

    def _done(self, o: RunOutcome) -> None:
        if o.ends_run:
            self.runs.forget(o.ctx)

    def _write_completions(self, group: list[RunOutcome], claim: int = 0) -> list[Job]:
        items = [(o.ctx.job, o.result) for o in group]
        notes, repeat = [o.note for o in group], any(o.sent for o in group)
        jobs: list[Job] = []
        if claim > 0:
            done, jobs = self.queue.complete_many_and_claim(
                items, self.worker_id, claim, notes=notes, repeat=repeat, queue=self.queues
            )
        else:
            done = self.queue.complete_many(items, notes=notes, repeat=repeat)
        for o, ok in zip(group, done, strict=True):
            if ok:
                self.status.jobs_done += 1
            else:
                log.warning("job %s: lease lost, completion refused", o.ctx.job.id, extra=_fields(o.ctx))
        return jobs

    def _write_failures(self, group: list[RunOutcome]) -> None:
        failed = self.queue.fail_many(
            [(o.ctx.job, o.error, o.retry) for o in group],
            repeat=any(o.sent for o in group),
            delays=[o.retry_delay for o in group],
        )
        for o, (status, ok) in zip(group, failed, strict=True):
            self.status.jobs_failed += 1
            last = o.error.strip().splitlines()[-1] if o.error.strip() else ""
            log.log(
                logging.WARNING if ok else logging.ERROR,
                "job %s failed (%s): %s",
                o.ctx.job.id,
                status if ok else "refused",
                last[:LOG_LINE_MAX_CHARS],
                extra=_fields(o.ctx),
            )

    def _write_releases(self, group: list[RunOutcome]) -> None:
        # One reason per call: the handlers' own (WorkerShutdown's text) differ only if they chose to.
        for reason in dict.fromkeys(o.error for o in group):
            same = [o for o in group if o.error == reason]
            given = self.queue.release_many([o.ctx.job for o in same], reason, repeat=any(o.sent for o in same))
            for o, ok in zip(same, given, strict=True):
                if ok:
                    log.info("job %s: its handler gave it back at shutdown", o.ctx.job.id, extra=_fields(o.ctx))
                else:
                    log.warning("job %s: lease lost, release refused", o.ctx.job.id, extra=_fields(o.ctx))

    def _write_cancels(self, group: list[RunOutcome]) -> None:
        for o in group:
            self.queue.ack_cancel(o.ctx.job, repeat=o.sent)
