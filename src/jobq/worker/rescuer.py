"""Maintenance loops every worker runs: the rescuer (expired leases) and the optional pruner.

Both need only the queue facade (and the rescuer this worker's id and its ``StallWatch``). Every
worker runs a rescuer: rescue needs only *some* live worker, and each rescue is conditional, so
many rescuers are safe. Limit: the early rescue of gone workers (pid checks) works only on a
single-host store (SQLite) and where ``/proc`` tells process tables apart; elsewhere leases decide.
"""

from __future__ import annotations

import functools
import logging
import os
import time

from jobq.backends.base import WorkerEnd, WorkerInfo
from jobq.job import JobStatus
from jobq.queue import Queue
from jobq.worker.looper import Looper
from jobq.worker.stall import StallWatch

log = logging.getLogger("jobq.worker")

PRUNE_INTERVAL_SECONDS = 600.0
PRUNE_CALL_JOBS = 20_000
"""Jobs one of the pruner's purge calls deletes at most; between calls it stops if its worker is
stopping. A first prune of a long history takes minutes (on SQLite the purge pauses after each
chunk for the workers' writes), longer than a worker's stop waits for its loops."""
LOST_AFTER_LEASES = 2.0
"""A worker not heard from for this many leases (of the rescuer's settings) is recorded ``lost``:
every job it held was rescued a lease ago. Two rather than one, so a worker whose own lease is a
little longer is not judged lost while it is only between heartbeats (and if it is, its next
heartbeat makes it alive again)."""
WORKER_ROWS_KEPT_SECONDS = 7 * 86_400.0
"""How long the registry keeps an ended worker's row (stopped, crashed, lost: the ops app's record
of who ended and when). Every start writes a row, and a consumer restarted in a loop writes
thousands a day: the rescuer deletes the older ones, at most once a ``PRUNE_INTERVAL_SECONDS`` (the
job pruner's interval)."""
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
PID_NAMESPACE_PATH = "/proc/self/ns/pid"


@functools.cache
def process_table_id() -> str | None:
    """Which process table this process's pid belongs to: ``<boot id>/pid:[<PID namespace inode>]``.

    A pid names a process only within one PID namespace of one running kernel. The host name
    does not say that: two containers of one pod, or ``docker --network host``, share the host
    name (and a data volume holding the SQLite file) but each has its own PID namespace, so a
    worker that checked the other's pid with ``kill(pid, 0)`` took a live worker for dead and ran
    its job again. This is the same confusion of identities as procrastinate#1518 (a restarted
    worker reusing an id) and oban#862 (reused node names): a name that looks unique is not.
    The boot id is new at every boot (and differs between machines); the namespace inode is
    unique among live namespaces, and when one is reused the namespace that had it, with every
    process in it, is gone, so a pid check there can only find a dead worker dead or an unrelated
    process alive (then the lease decides). The rescuer checks pids only for workers whose
    identity equals its own.

    Returns None where either is unreadable (no ``/proc``, e.g. macOS): the pid check then never
    applies, and only leases decide. Cached: both are fixed for the life of the process (a child
    forked after ``unshare(CLONE_NEWPID)`` would differ, hence the cache is cleared in every child).

    >>> process_table_id()  # doctest: +SKIP
    'bb8f8c89-7713-4ef5-8f5d-92c39ad02495/pid:[4026531836]'
    """
    try:
        with open(BOOT_ID_PATH) as f:
            boot_id = f.read().strip()
        namespace = os.stat(PID_NAMESPACE_PATH).st_ino
    except OSError:
        return None
    return f"{boot_id}/pid:[{namespace}]" if boot_id else None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=process_table_id.cache_clear)


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

    On a single-host store (SQLite) it also notices registered workers of its own process table
    (``process_table_id()``: same boot of the same kernel, same PID namespace) whose process is
    gone (``kill -9``, a crash): their jobs are rescued at once instead of after the lease, and
    their registry rows are marked ``crashed``. Liveness, not time: a slow live worker is never
    touched. A worker of another process table (another container sharing the host name and the
    database file, or a row of unknown identity written by an older jobq) is never pid-checked:
    its pid means nothing here, so only its lease decides.
    A lease that expired only because no one could write (a stall this process saw, see
    ``jobq.worker.stall``) is not taken as a dead worker either; its first tick also looks for a
    jump of the host's clock before this process started, in its peers' registry rows.

    Any store: a worker not heard from for ``LOST_AFTER_LEASES`` leases (measured from before a
    stall this process saw) is marked ``lost``, so a worker killed on another host does not stay
    "running" in the registry forever.
    """

    name = "rescuer"

    def __init__(self, queue: Queue, worker_id: str, interval: float, stalls: StallWatch | None = None) -> None:
        super().__init__(interval, jitter=0.3)
        self.queue = queue
        self.worker_id = worker_id
        self.stalls = stalls
        self._first = True
        self._workers_pruned_at: float | None = None  # monotonic; None: not yet in this process

    def peers(self) -> list[WorkerInfo]:
        """The other unstopped workers of this process table (none off a single-host store)."""
        if not self.queue.single_host:
            return []
        mine = process_table_id()
        if mine is None:
            return []
        # The host name plays no part: equal names may be different process tables (containers),
        # and an equal process table is the same one whatever the names say.
        return [
            w
            for w in self.queue.workers()
            if w.stopped_at is None and w.process_table == mine and w.id != self.worker_id
        ]

    def gone_workers(self, peers: list[WorkerInfo] | None = None) -> list[str]:
        """Ids of unstopped workers of this process table whose pid is no longer alive."""
        return [w.id for w in (self.peers() if peers is None else peers) if not pid_alive(w.pid)]

    def tick(self) -> None:
        peers = self.peers()
        gone = self.gone_workers(peers)
        if self._first and self.stalls and (here := self.queue.clock_base()) is not None:
            # Once, before this process's first rescue: a step of the clock it did not run through.
            bases = [(w.clock_base, w.last_seen_at) for w in peers if w.clock_base is not None and w.id not in gone]
            self.stalls.stepped_before_start(here, bases)
            if self.queue.single_host and (written := self.queue.newest_write()) is not None:
                self.stalls.written_ahead(written)
        self._first = False
        cutoff = self.stalls.rescue_cutoff() if self.stalls else None
        for r in self.queue.rescue_expired(actor=self.worker_id, gone_owners=gone, cutoff=cutoff):
            log.warning("job %s: worker %s is gone or its lease expired -> %s", r.job_id, r.previous_owner, r.outcome)
        for worker_id in gone:
            log.warning("worker %s exited without stopping; marked crashed", worker_id)
            self.queue.worker_stopped(worker_id, WorkerEnd.CRASHED)
        # The registry keeps wall-clock times (Queue.worker_seen), so this does too.
        now = self.queue.wall_time()
        heard_since = self.stalls.rescue_cutoff()(now) if self.stalls else now
        for worker_id in self.queue.mark_lost_workers(
            heard_since - LOST_AFTER_LEASES * self.queue.settings.lease_seconds
        ):
            log.warning("worker %s not heard from for %g leases; marked lost", worker_id, LOST_AFTER_LEASES)
        self.prune_workers()
        # Last: the looks at the clock above (rescue_cutoff) note a step back, and a failed restamp
        # (the lock held too long) holds up none of the above; the next tick tries it again.
        if self.stalls and self.queue.single_host and (back := self.stalls.stepped_back()):
            self.restamp(self.stalls, back)

    def prune_workers(self) -> None:
        """Ended workers' rows older than ``WORKER_ROWS_KEPT_SECONDS`` go, once an interval: a
        read finds nothing to do most times (``Backend.prune_workers`` takes no write lock then).
        At the same pace, crashed waiters' expired registrations (``Queue.settle_waiters``)."""
        mono = time.monotonic()
        if self._workers_pruned_at is not None and mono - self._workers_pruned_at < PRUNE_INTERVAL_SECONDS:
            return
        self._workers_pruned_at = mono
        if n := self.queue.prune_workers(WORKER_ROWS_KEPT_SECONDS):
            log.info("forgot %d workers that ended more than %g days ago", n, WORKER_ROWS_KEPT_SECONDS / 86_400)
        if self.queue.settle_waiters():
            log.info("no one waits for a job any more: completions stop looking for waiters")

    def restamp(self, stalls: StallWatch, back: float) -> None:
        """This host's clock was set back by ``back`` seconds (SQLite, where every writer reads
        it): the jobs waiting since before the step are stamped that far ahead, and a job due at
        once would wait until the clock caught up. Each is made as if written now. PostgreSQL
        stamps by the server's clock (``Queue.clock_offset``), which a host's step does not move."""
        moved = self.queue.restamp_ahead(back, stalls.threshold, actor=self.worker_id)
        stalls.restamped(back)
        log.warning(
            "this host's clock was set back %.1f s: %d waiting job(s) written before the step made due "
            "as if written now%s",
            back,
            len(moved),
            f" ({', '.join(map(str, moved[:10]))}{', ...' if len(moved) > 10 else ''})" if moved else "",
        )


class Pruner(Looper):
    """Deletes COMPLETED and CANCELLED jobs older than ``prune_after`` seconds (off by default)."""

    name = "pruner"

    def __init__(self, queue: Queue, prune_after: float) -> None:
        super().__init__(PRUNE_INTERVAL_SECONDS, jitter=0.3)
        self.queue = queue
        self.prune_after = prune_after

    def tick(self) -> None:
        total = 0
        while True:
            n = self.queue.purge(
                older_than=self.prune_after, statuses=[JobStatus.COMPLETED, JobStatus.CANCELLED], limit=PRUNE_CALL_JOBS
            )
            total += n
            if n < PRUNE_CALL_JOBS or self.stopping:
                break
        if total:
            log.info("pruned %d finished jobs", total)
