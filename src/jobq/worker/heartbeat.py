"""Keeps the leases of running jobs alive, and notices cancels, timeouts and lost leases."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from jobq.errors import JobqError
from jobq.worker.looper import Looper

if TYPE_CHECKING:
    from jobq.worker.runtime import Worker

log = logging.getLogger("jobq.worker")

#: Timeouts are checked this often even when heartbeats are rarer.
TIMEOUT_CHECK_SECONDS = 0.5


class Heartbeater(Looper):
    """One heartbeat transaction for all running jobs every ``lease/3``.

    Heartbeats that keep failing (database unreachable) make the worker stop claiming: it
    cannot promise to keep leases it cannot renew.
    """

    name = "heartbeat"

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.every = worker.settings.heartbeat_seconds
        super().__init__(min(self.every, TIMEOUT_CHECK_SECONDS), jitter=0.0)
        self._last = 0.0
        self._last_ok = time.monotonic()
        self._last_tick = time.monotonic()

    def tick(self) -> None:
        w = self.worker
        # Ticks come every `interval`: a much later one means this process was frozen, and
        # if it froze holding the database's lock, every other writer stalled with it.
        late = time.monotonic() - self._last_tick - self.interval
        self._last_tick = time.monotonic()
        w.stalls.loop_late(late)
        self._check_timeouts()
        if time.monotonic() - self._last < self.every:
            return
        self._last = time.monotonic()
        try:
            with w.stalls.write(), w.write_lock:
                # A lease already known lost is not beaten again: each beat would only be refused
                # and recorded once more.
                running = [ctx for ctx in w.active() if not ctx.settled and not ctx.lease_lost]
                results = w.queue.heartbeat_many([ctx.job for ctx in running])
                w.queue.backend.worker_seen(w.id, time.time(), [c.job.id for c in running], w.jobs_done, w.jobs_failed)
        except JobqError as exc:
            w.healthy = time.monotonic() - self._last_ok < w.settings.lease_seconds / 2
            log.error("heartbeat failed: %s%s", exc, "" if w.healthy else " (not claiming until it works)")
            return
        self._last_ok = time.monotonic()
        w.healthy = True
        for ctx, result in zip(running, results, strict=True):
            if not result.alive:
                log.warning("job %s: lease lost (rescued or taken over); stopping it", ctx.job.id)
                ctx.lease_lost = True
                ctx.cancelled.set()
            elif result.cancel_requested and not ctx.cancel_requested:
                log.info("job %s: cancel requested by an operator", ctx.job.id)
                ctx.cancel_requested = True
                ctx.cancelled.set()

    def _check_timeouts(self) -> None:
        w = self.worker
        now = time.monotonic()
        if not any(c.job.timeout is not None for c in w.active()):
            return
        with w.write_lock:
            self._fail_timed_out(now)

    def _fail_timed_out(self, now: float) -> None:
        w = self.worker
        for ctx in w.active():
            limit = ctx.job.timeout
            if limit is None or ctx.settled or now - ctx.started <= limit:
                continue
            # Fail it now (fenced), so its slot's late result is refused; the handler is told.
            ctx.timed_out = True
            ctx.settled = True
            ctx.cancelled.set()
            try:
                w.queue.fail(ctx.job, f"timed out after {limit:g} s")
                w.jobs_failed += 1
            except JobqError as exc:
                log.warning("job %s: timeout not recorded: %s", ctx.job.id, exc)
            log.warning("job %s: timed out after %g s", ctx.job.id, limit)
