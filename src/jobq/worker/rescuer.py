"""Maintenance loops every worker runs: the rescuer (expired leases) and the optional pruner."""

from __future__ import annotations

import logging
import os
import socket
import time

from jobq.job import JobStatus
from jobq.queue import Queue
from jobq.worker.looper import Looper
from jobq.worker.stall import StallWatch

log = logging.getLogger("jobq.worker")

PRUNE_INTERVAL_SECONDS = 600.0


def pid_alive(pid: int) -> bool:
    """True unless no process with this pid exists here (a pid reused by another process counts
    as alive: the job then waits for its lease, which is always safe)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Rescuer(Looper):
    """Returns jobs whose lease expired to PENDING (or FAILED when out of attempts).

    Every worker runs one: rescue only needs *some* live worker. Each rescue is a conditional
    UPDATE on the status and token it read, so concurrent rescuers never double-move a job and
    never overwrite a completion that landed meanwhile (river#1302).

    On a single-host store (SQLite) it also notices registered workers of this host whose process
    is gone (``kill -9``, a crash): their jobs are rescued at once instead of after the lease, and
    their registry rows are marked stopped. Liveness, not time: a slow live worker is never touched.
    A lease that expired only because no one could write (a stall this process saw, see
    ``jobq.worker.stall``) is not taken as a dead worker either.
    """

    name = "rescuer"

    def __init__(self, queue: Queue, worker_id: str, interval: float, stalls: StallWatch | None = None) -> None:
        super().__init__(interval, jitter=0.3)
        self.queue = queue
        self.worker_id = worker_id
        self.stalls = stalls

    def gone_workers(self) -> list[str]:
        if not getattr(self.queue.backend, "single_host", False):
            return []
        host = socket.gethostname()
        return [
            w.id
            for w in self.queue.workers()
            if w.stopped_at is None and w.host == host and w.id != self.worker_id and not pid_alive(w.pid)
        ]

    def tick(self) -> None:
        gone = self.gone_workers()
        cutoff = self.stalls.rescue_cutoff() if self.stalls else None
        for r in self.queue.rescue_expired(actor=self.worker_id, gone_owners=gone, cutoff=cutoff):
            log.warning("job %s: worker %s is gone or its lease expired -> %s", r.job_id, r.previous_owner, r.outcome)
        for worker_id in gone:
            log.warning("worker %s exited without stopping; marked stopped", worker_id)
            self.queue.backend.worker_stopped(worker_id, time.time())


class Pruner(Looper):
    """Deletes COMPLETED and CANCELLED jobs older than ``prune_after`` seconds (off by default)."""

    name = "pruner"

    def __init__(self, queue: Queue, prune_after: float) -> None:
        super().__init__(PRUNE_INTERVAL_SECONDS, jitter=0.3)
        self.queue = queue
        self.prune_after = prune_after

    def tick(self) -> None:
        n = self.queue.purge(older_than=self.prune_after, statuses=[JobStatus.COMPLETED, JobStatus.CANCELLED])
        if n:
            log.info("pruned %d finished jobs", n)
