"""Maintenance loops every worker runs: the rescuer (expired leases) and the optional pruner."""

from __future__ import annotations

import logging

from jobq.job import JobStatus
from jobq.queue import Queue
from jobq.worker.looper import Looper

log = logging.getLogger("jobq.worker")

PRUNE_INTERVAL_SECONDS = 600.0


class Rescuer(Looper):
    """Returns jobs whose lease expired to PENDING (or FAILED when out of attempts).

    Every worker runs one: rescue only needs *some* live worker. Each rescue is a conditional
    UPDATE on the status and token it read, so concurrent rescuers never double-move a job and
    never overwrite a completion that landed meanwhile (river#1302).
    """

    name = "rescuer"

    def __init__(self, queue: Queue, worker_id: str, interval: float) -> None:
        super().__init__(interval, jitter=0.3)
        self.queue = queue
        self.worker_id = worker_id

    def tick(self) -> None:
        for r in self.queue.rescue_expired(actor=self.worker_id):
            log.warning("job %s: lease of %s expired -> %s", r.job_id, r.previous_owner, r.outcome)


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
