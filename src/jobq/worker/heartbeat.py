"""Keeps the leases of running jobs alive, and notices cancels, timeouts and lost leases.

The heartbeater writes only heartbeats and the worker's registry row. A run past its timeout is
handed to the worker's one outcome path (``Runs.time_out``), like every other outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from jobq.errors import JobqError
from jobq.queue import Queue
from jobq.worker.looper import Looper
from jobq.worker.runs import Runs, WorkerStatus
from jobq.worker.stall import StallWatch

log = logging.getLogger("jobq.worker")

#: Timeouts are checked this often even when heartbeats are rarer.
TIMEOUT_CHECK_SECONDS = 0.5


class Heartbeater(Looper):
    """One heartbeat transaction for all running jobs every ``heartbeat_seconds`` (lease/3).

    Heartbeats that keep failing (database unreachable) make the worker stop claiming: it
    cannot promise to keep leases it cannot renew.

    Args:
        queue: the facade (settings, heartbeats, the registry row).
        worker_id: whose registry row to keep fresh.
        runs: the runs to heartbeat and check for timeouts, and the lock shared with the
            outcome writer.
        stalls: told how long each heartbeat write took and how late each tick came.
        status: where health is reported; its counters go into the registry row.
        register: writes the worker's registry row anew, when a heartbeat finds none (deleted
            by hand, or the database file replaced under the worker): without it the worker
            would run unlisted, and no wake-up would reach it.
    """

    name = "heartbeat"

    def __init__(
        self,
        queue: Queue,
        worker_id: str,
        runs: Runs,
        stalls: StallWatch,
        status: WorkerStatus,
        register: Callable[[], None],
    ) -> None:
        self.queue = queue
        self.register = register
        self.worker_id = worker_id
        self.runs = runs
        self.stalls = stalls
        self.status = status
        self.every = queue.settings.heartbeat_seconds
        self.lease_seconds = queue.settings.lease_seconds
        super().__init__(min(self.every, TIMEOUT_CHECK_SECONDS), jitter=0.0)
        self._last = 0.0
        self._last_ok = time.monotonic()
        self._last_tick = time.monotonic()

    def tick(self) -> None:
        # Ticks come every `interval`: a much later one means this process was frozen, and
        # if it froze holding the database's lock, every other writer stalled with it.
        late = time.monotonic() - self._last_tick - self.interval
        self._last_tick = time.monotonic()
        self.stalls.loop_late(late)
        self._check_timeouts()
        if time.monotonic() - self._last < self.every:
            return
        self._last = time.monotonic()
        self.beat()

    def beat(self) -> None:
        """Heartbeat every running job and the registry row, in one go; act on the answers."""
        try:
            with self.stalls.write(), self.runs.write_lock:
                self.runs.drop_replaced(self.queue.store_generation)  # runs of a replaced file: not beaten
                # A lease already known lost is not beaten again: each beat would only be refused
                # and recorded once more. A run whose outcome is recorded but not yet written is
                # beaten: its lease must hold until that write lands.
                # A run completed in its application's transaction needs no lease any more.
                running = [
                    ctx
                    for ctx in self.runs.active()
                    if not ctx.settled and not ctx.lease_lost and not ctx.completed_in_transaction
                ]
                results = self.queue.heartbeat_many([ctx.job for ctx in running])
                # Marked before the lock is let go: a give-back or an outcome written between this
                # beat's refusal and the marking was refused too, and recorded a second time.
                lost = [
                    ctx
                    for ctx, result in zip(running, results, strict=True)
                    if not result.alive and not ctx.completed_in_transaction
                ]
                for ctx in lost:
                    ctx.lease_lost = True
                listed = self.queue.worker_seen(
                    self.worker_id, [c.job.id for c in running], self.status.jobs_done, self.status.jobs_failed
                )
                if not listed:
                    log.warning(
                        "worker %s was not in the registry (its row deleted, or the database file "
                        "replaced): registering again",
                        self.worker_id,
                    )
                    self.register()
        except JobqError as exc:
            healthy = time.monotonic() - self._last_ok < self.lease_seconds / 2
            self.status.healthy = healthy
            log.error("heartbeat failed: %s%s", exc, "" if healthy else " (not claiming until it works)")
            return
        self._last_ok = time.monotonic()
        self.status.healthy = True
        for ctx, result in zip(running, results, strict=True):
            if ctx in lost:
                log.warning("job %s: lease lost (rescued or taken over); stopping it", ctx.job.id)
                ctx.cancelled.set()
            elif ctx.completed_in_transaction:
                continue  # completed meanwhile (its beat waited for the application's commit)
            elif result.cancel_requested and not ctx.cancel_requested:
                log.info("job %s: cancel requested by an operator", ctx.job.id)
                ctx.cancel_requested = True
                ctx.cancelled.set()

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for ctx in self.runs.active():
            limit = ctx.job.timeout
            if limit is None or not ctx.begun or ctx.decided or ctx.settled or now - ctx.started <= limit:
                continue
            self.runs.time_out(ctx)
