"""The scheduler: the worker's loop that enqueues the jobs of due schedules (``jobq.schedules``).

Every worker runs one; none is elected. Each tick reads the due schedules and, for each, takes
its due slots by moving the schedule's row off the slot it read, guarded by that slot, in the
transaction that enqueues the jobs (``Queue.fire_schedule``). Of the workers that read the same
row one moves it; the others write nothing. A worker that dies mid-tick leaves the row where it
was (the transaction rolls back), and the next tick of any worker takes the slot: no slot is
lost with a process, and none is taken twice.

After downtime every slot from the stored next run up to now is due; the schedule's catch-up
policy picks which run (``latest``, the default: the latest once; ``all``; ``none``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from jobq.errors import JobqError, StorageError
from jobq.queue import Queue
from jobq.schedules import SCHEDULES, Schedule, schedule_of
from jobq.worker.looper import Looper

log = logging.getLogger("jobq.worker")

SCHEDULER_INTERVAL_SECONDS_DEFAULT = 1.0
"""How often a worker looks for due schedules: a slot's job is enqueued at most this late
(plus the tick's jitter) while a worker runs. One indexed read per tick when nothing is due."""


class Scheduler(Looper):
    """Enqueues due slots; on start, stores the schedules declared in code (``@jobq.periodic``)."""

    name = "scheduler"

    def __init__(
        self,
        queue: Queue,
        interval: float = SCHEDULER_INTERVAL_SECONDS_DEFAULT,
        declared: Mapping[str, Schedule] | None = None,
    ) -> None:
        super().__init__(interval)
        self.queue = queue
        self.declared = dict(SCHEDULES if declared is None else declared)
        self._saved = False
        self._failing: dict[str, str] = {}  # schedule name: the error last logged for it

    def save_declared(self) -> None:
        """Store the schedules this process declares (each worker does; the last definition wins)."""
        for spec in self.declared.values():
            self.queue.save_schedule(spec, origin="code")
        self._saved = True

    def tick(self) -> None:
        self.run_due()

    def run_due(self) -> dict[str, list[int]]:
        """Enqueue every due slot this process takes; returns the job ids by schedule name."""
        if not self._saved:
            self.save_declared()
        fired: dict[str, list[int]] = {}
        for info in self.queue.schedules(due=True):
            try:
                spec = schedule_of(info)
                slots, next_run_at = spec.due(info.next_run_at, self.queue.clock())
                ids = self.queue.fire_schedule(info, slots, next_run_at)
            except (JobqError, ValueError, OverflowError) as exc:
                # One schedule that cannot fire (a row written by hand or by an older jobq: a
                # payload over the limit, a bad cron) must not stop the others: before, its error
                # ended every tick, and no schedule fired. Logged once per error, not every tick.
                if isinstance(exc, StorageError):
                    raise  # the database, not this schedule: the loop's own retry handles it
                if self._failing.get(info.name) != str(exc):
                    log.error("schedule %s cannot fire, skipped until it is fixed: %s", info.name, exc)
                self._failing[info.name] = str(exc)
                continue
            if self._failing.pop(info.name, None) is not None:
                log.info("schedule %s fires again", info.name)
            if ids is None:
                continue  # another worker took these slots first
            fired[info.name] = ids
            if len(slots) > 1 or not slots:
                log.info(
                    "schedule %s: %d slot(s) enqueued after downtime (catchup=%s)", info.name, len(slots), spec.catchup
                )
        return fired
