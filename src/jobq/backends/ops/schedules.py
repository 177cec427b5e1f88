"""Schedules: save, list, fire, pause, delete, and their history of actions."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from jobq.backends.base import NewJob, ScheduleAction, ScheduleInfo
from jobq.backends.ops.core import Exec, Op
from jobq.backends.ops.enqueue import enqueue
from jobq.backends.statements import Dialect

# -- schedules ----------------------------------------------------------------------------------
_SCHEDULE_FIELDS = [f.name for f in dataclasses.fields(ScheduleInfo)]


def _schedule_from_row(row: Sequence[Any]) -> ScheduleInfo:
    info = ScheduleInfo(*row)
    # SQLite has no boolean type: 0/1 come back as integers.
    return dataclasses.replace(info, overlap=bool(info.overlap), paused=bool(info.paused))


def save_schedule(d: Dialect, info: ScheduleInfo, now: float) -> Op[None]:
    yield Exec(d.sql["save_schedule"], {**dataclasses.asdict(info), "now": now})


def list_schedules(d: Dialect, due_by: float | None) -> Op[list[ScheduleInfo]]:
    if due_by is None:
        rows = yield Exec(d.sql["list_schedules"])
    else:
        rows = yield Exec(d.sql["due_schedules"], {"now": due_by})
    return [_schedule_from_row(r) for r in rows]


def fire_schedule(
    d: Dialect,
    name: str,
    expected: float,
    next_run_at: float,
    last_slot: float | None,
    jobs: Sequence[NewJob],
    now: float,
) -> Op[list[int] | None]:
    """The slot is taken by moving the schedule's row off it, guarded by the slot this process
    read: of the processes that read the same row, one moves it (the others see zero rows: the
    row lock re-checks the guard on PostgreSQL; SQLite runs one writer at a time)."""
    params = {"name": name, "expected": expected, "next": next_run_at, "last": last_slot, "now": now}
    if not (yield Exec(d.sql["advance_schedule"], params)):
        return None
    ids = (yield from enqueue(d, jobs, now)) if jobs else []
    if ids:
        yield Exec(d.sql["schedule_last_job"], {"name": name, "job": ids[-1]})
    return ids


def schedule_actions(d: Dialect, name: str | None, limit: int) -> Op[list[ScheduleAction]]:
    rows = yield Exec(d.sql["schedule_actions"], {"name": name, "limit": limit})
    return [ScheduleAction(*row) for row in rows]


def pause_schedule(d: Dialect, name: str, paused: bool, actor: str, now: float, next_run_at: float | None) -> Op[bool]:
    params = {"name": name, "paused": paused, "actor": actor, "now": now, "next": next_run_at}
    if not (yield Exec(d.sql["pause_schedule"], params)):
        return False
    yield Exec(d.sql["insert_schedule_action"], _action_row(name, paused, actor, now))
    return True


def _action_row(name: str, paused: bool, actor: str, now: float) -> dict[str, Any]:
    """The parameters of a pause's or resume's history row (``schedule_actions``)."""
    return {"name": name, "action": "pause" if paused else "resume", "actor": actor, "now": now}


def pause_schedule_settled(
    d: Dialect, name: str, paused: bool, actor: str, now: float, next_run_at: float | None
) -> Op[bool]:
    """A pause or resume whose COMMIT's reply was lost (PostgreSQL): done if its history row (this
    actor's, at this time) is there, else made again. Made again blindly, it would record it twice."""
    if (yield Exec(d.sql["schedule_action_at"], _action_row(name, paused, actor, now))):
        return True
    return (yield from pause_schedule(d, name, paused, actor, now, next_run_at))


def delete_schedule(d: Dialect, name: str) -> Op[bool]:
    return bool((yield Exec(d.sql["delete_schedule"], {"name": name})))


def delete_schedule_settled(d: Dialect, name: str) -> Op[bool]:
    """A removal whose COMMIT's reply was lost: made again, and reported done, as the schedule is
    gone either way (a name that never was one is then reported removed, not "not found": the reply
    that would have said so is the one lost)."""
    yield Exec(d.sql["delete_schedule"], {"name": name})
    return True
