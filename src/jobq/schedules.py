"""Periodic jobs: what a schedule is, and which slots (UNIX times) it has. No I/O here.

A schedule is a cron expression in an IANA time zone (``"*/5 * * * *"``, ``zone="Europe/Paris"``)
or an interval (``every="30s"``). Its slots are the times a job is due. Cron slots are wall-clock
times in the zone: a slot that does not exist (the hour skipped when clocks go forward) is
skipped, and a slot that exists twice (the hour repeated when clocks go back) runs once, at its
first occurrence. Interval slots are multiples of the interval since the UNIX epoch, so every
process computes the same slots without agreeing on a start.

Which process enqueues a slot's job is decided in the database (``jobq.worker.scheduler``): the
schedule's row moves from one slot to the next in the transaction that inserts the job, guarded
by the slot it expected, so a slot makes exactly one job however many workers run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from jobq.backends.base import ScheduleInfo
from jobq.config import DURATION_MAX_SECONDS, parse_duration
from jobq.errors import ConfigError
from jobq.payloads import is_printable, loads

CATCHUP_CHOICES = ("latest", "all", "none")
"""After downtime: run the latest missed slot once (default), every missed slot, or none."""
CATCHUP_ALL_MAX = 1000
"""Most missed slots ``catchup="all"`` enqueues at once (older ones are skipped, and logged)."""
SLOT_GRACE_SECONDS_DEFAULT = 60.0
"""``catchup="none"``: a slot this late still runs (it is due, not missed)."""
SLOTS_SCANNED_MAX = 1_000_000
"""Most slots looked at in one catch-up (a 1-second schedule down for 11 days); beyond it the
missed slots are skipped whatever the catch-up policy, and the schedule goes on from now."""
SCHEDULE_KEY_PREFIX = "jobq-schedule:"
"""Jobs of schedules carry keys with this prefix (see ``Schedule.job_key``)."""


def _zone(name: str) -> ZoneInfo:
    # A region's folder ('Europe') raised IsADirectoryError, a 300-character name OSError, a
    # number TypeError: each a traceback at the CLI.
    if not isinstance(name, str):
        raise ConfigError(f"a time zone is an IANA name such as 'Europe/Paris', not {name!r:.60}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"unknown time zone {name!r:.80} (an IANA name such as 'Europe/Paris')") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """A periodic job: which task runs, when, and what happens after downtime.

    ``cron`` or ``every`` (seconds; ``periodic`` and ``Queue.add_schedule`` also take a duration
    such as ``"30s"``, ``"5m"``), not both.
    ``overlap=False``: a slot whose previous job still waits or runs makes no job (the slot is
    skipped): the jobs share one key held while active.
    """

    name: str
    task: str
    cron: str | None = None
    every: float | None = None
    zone: str = "UTC"
    queue: str = "default"
    payload: Any = None
    priority: int = 0
    catchup: str = "latest"
    overlap: bool = True

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not self.name.strip()
            or len(self.name) > 200
            or not is_printable(self.name)
        ):  # a newline or an escape sequence in a name was printed raw by `jobq schedules`
            raise ConfigError("a schedule needs a name of 1 to 200 printable characters")
        if (self.cron is None) == (self.every is None):
            raise ConfigError(f"schedule {self.name!r}: give a cron expression or every=, not both or neither")
        if self.cron is not None and not isinstance(self.cron, str):
            raise ConfigError(f"schedule {self.name!r}: a cron expression is text such as '*/5 * * * *'")
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime(2000, 1, 1))
            except CronSimError as exc:
                raise ConfigError(f"schedule {self.name!r}: bad cron expression {self.cron!r}: {exc}") from None
        else:
            # True was 1 s; 1e300 s was stored, then every listing of the schedules failed
            # (a next run past what a datetime holds).
            if (
                isinstance(self.every, bool)
                or not isinstance(self.every, int | float)
                or not 1 <= self.every <= DURATION_MAX_SECONDS
            ):
                raise ConfigError(f"schedule {self.name!r}: every= must be from 1 second to 100 years")
            object.__setattr__(self, "every", float(self.every))
        _zone(self.zone)
        if self.catchup not in CATCHUP_CHOICES:
            raise ConfigError(f"schedule {self.name!r}: catchup must be one of {', '.join(CATCHUP_CHOICES)}")
        if not isinstance(self.overlap, bool):
            raise ConfigError(f"schedule {self.name!r}: overlap must be True or False, not {self.overlap!r:.20}")
        # Its jobs' priority (checked again with the rest of a job by Queue.save_schedule).
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ConfigError(f"schedule {self.name!r}: priority must be an integer, not {self.priority!r:.20}")

    @property
    def expression(self) -> str:
        """How the schedule is shown and stored: the cron text, or ``every 30s``."""
        return expression_of(self.cron, self.every)

    def slots(self, after: float) -> Iterator[float]:
        """The slots strictly after UNIX time ``after``, in order (without end)."""
        if self.every is not None:
            n = math.floor(after / self.every) + 1
            while True:
                yield n * self.every
                n += 1
        assert self.cron is not None
        zone = _zone(self.zone)
        # Walk wall-clock times in the zone (naive), then place each: a wall time that does not
        # exist does not survive the round trip through UTC (skipped); fold=0 takes the first of
        # a repeated one, and the second is before a later start or equal to a slot already had.
        start = datetime.fromtimestamp(after, zone).replace(tzinfo=None)
        last = after
        for wall in CronSim(self.cron, start.replace(microsecond=0)):
            placed = wall.replace(tzinfo=zone, fold=0)
            if placed.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
                continue  # the skipped hour: no such time here
            at = placed.timestamp()
            if at > last:
                last = at
                yield at

    def next_slot(self, after: float) -> float:
        return next(iter(self.slots(after)))

    def due(self, next_run_at: float, now: float) -> tuple[list[float], float]:
        """The slots to enqueue now, by the catch-up policy, and the next slot after ``now``.

        ``next_run_at`` is the first slot not yet handled; every slot from it up to ``now`` is due.
        """
        due: list[float] = []
        slots = self.slots(next_run_at - 1e-6)
        slot = next(slots)
        scanned = 0
        while slot <= now:
            due.append(slot)
            if len(due) > CATCHUP_ALL_MAX:
                del due[0]
            scanned += 1
            if scanned >= SLOTS_SCANNED_MAX:  # too long down to walk every slot: none is run
                due, slot = [], self.next_slot(now)
                break
            slot = next(slots)
        if self.catchup == "latest":
            due = due[-1:]
        elif self.catchup == "none":
            due = [s for s in due[-1:] if now - s <= SLOT_GRACE_SECONDS_DEFAULT]
        return due, slot

    def job_key(self, slot: float) -> tuple[str, str]:
        """The key and key scope of the slot's job: unique per slot, or, without overlap, one
        key held while a job of the schedule is active."""
        if not self.overlap:
            return f"{SCHEDULE_KEY_PREFIX}{self.name}", "active"
        return f"{SCHEDULE_KEY_PREFIX}{self.name}@{slot:.3f}", "all"

    def job_payload(self, slot: float) -> Any:
        return self.payload if self.payload is not None else {"schedule": self.name, "slot": slot}


def expression_of(cron: object, every: object) -> str:
    """A stored schedule's timing as shown: its cron text, or ``every 30s``. A value of the wrong
    type (written by hand: every = 'often') is shown as it is: `jobq schedules` failed on it."""
    if cron is not None:
        return str(cron)
    if isinstance(every, int | float) and not isinstance(every, bool):
        return f"every {every:g}s"
    return f"every {every!r}"


def schedule_of(info: ScheduleInfo) -> Schedule:
    """The definition of a stored schedule."""
    return Schedule(
        name=info.name,
        task=info.task,
        cron=info.cron,
        every=info.every,
        zone=info.zone,
        queue=info.queue,
        payload=None if info.payload_json is None else loads(info.payload_json),
        priority=info.priority,
        catchup=info.catchup,
        overlap=info.overlap,
    )


#: Schedules declared in code (``@jobq.periodic``) in this process; a worker stores them on start.
SCHEDULES: dict[str, Schedule] = {}


def periodic(
    cron: str | None = None,
    *,
    every: float | str | None = None,
    name: str | None = None,
    zone: str = "UTC",
    queue: str = "default",
    payload: Any = None,
    priority: int = 0,
    catchup: str = "latest",
    overlap: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the decorated handler on a schedule: a cron expression, or ``every=`` an interval.

    The handler is registered as a task (named ``name``, default the function's name) unless
    ``@jobq.task`` registered it already; the schedule has the task's name. Workers that import
    the module store the schedule and enqueue its slots.

    >>> @periodic("*/5 * * * *", zone="Europe/Paris")
    ... def refresh(ctx): ...
    >>> @periodic(every="30s", overlap=False)
    ... def poll(ctx): ...
    """
    from jobq.worker.registry import REGISTRY, task  # the worker package imports this module

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        task_name = next((n for n, f in REGISTRY.items() if f is func), None) or name or func.__name__
        if task_name not in REGISTRY:
            task(task_name)(func)
        SCHEDULES[name or task_name] = Schedule(
            name=name or task_name,
            task=task_name,
            cron=cron,
            every=parse_duration(every) if isinstance(every, str) else every,
            zone=zone,
            queue=queue,
            payload=payload,
            priority=priority,
            catchup=catchup,
            overlap=overlap,
        )
        return func

    return register
