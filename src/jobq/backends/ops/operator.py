"""Operator actions on chosen jobs: resubmit, cancel, move, purge."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from jobq.backends.base import ActionResult, JobFilter
from jobq.backends.common import attempt_detail, attempt_from_row, plan_operator_action
from jobq.backends.ops.core import Exec, Notify, Op, _events, event_made
from jobq.backends.statements import Dialect, Params
from jobq.job import MOVABLE, Action, EventKind, JobStatus

T = TypeVar("T")

# -- operators ----------------------------------------------------------------------------------
#: One chunk of an operator action: its results, and the id after which the next chunk starts
#: (None: this was the last).
Chunk = tuple[list[ActionResult], "int | None"]


def _targets(
    d: Dialect, where: JobFilter, after: int, limit: int, seen: frozenset[int]
) -> Op[tuple[list[tuple[int, str]], int | None]]:
    """Up to ``limit`` of the jobs an operator action applies to, those of ids above ``after``
    (locked in id order where the dialect locks rows), and where the next chunk starts (None:
    none is left). Ids named in ``where.ids`` that match nothing come last, with status ""
    (not found), in the last chunk; ``seen``: the named ids earlier chunks found."""
    params: Params = {"after": after, "limit": limit}
    clause = d.where(where, params)
    clause = f"{clause} AND id > {d.param('after')}" if clause else f" WHERE id > {d.param('after')}"
    if "targets_walk" in d.sql and where.statuses and JobStatus.COMPLETED not in where.statuses:
        # Statuses read through their indexes (COMPLETED has none: ``targets`` walks the table then)
        walked = yield from _walk_targets(d, clause, params, after, limit)
        if walked is not None:
            return walked
    found = [(row[0], row[1]) for row in (yield Exec(d.stmt("targets", where=clause), params))]
    if len(found) == limit:
        return found, found[-1][0]
    if where.ids:  # name the ids that matched in no chunk, so a caller can say "not found"
        known = seen | {job_id for job_id, _ in found}
        found += [(i, "") for i in where.ids if i not in known]
    return found, None


TARGETS_SORTED_MAX = 1_000
"""SQLite: at most this many jobs left to act on, a chunk takes them through their status's index
and sorts them by id; more, and it walks the table by id instead (``_walk_targets``)."""
TARGETS_WALK_IDS = 20_000
"""SQLite: the ids one walking chunk reads (a few ms a chunk, which holds the write lock)."""


def _walk_targets(
    d: Dialect, clause: str, params: Params, after: int, limit: int
) -> Op[tuple[list[tuple[int, str]], int | None] | None]:
    """A chunk of a large action on SQLite, or None for a small one (``targets`` takes it).

    ``targets`` reads every match past the cursor through its status's index (PENDING's is in
    claim order, not by id) and sorts them, to take the first ``limit``: once per chunk, so an
    action on N jobs sorted ~N * N / ``limit`` entries (1,000,000 PENDING jobs cancelled in 4 min
    23 s, 60-90 ms a chunk; 10,000,000 would take hours). Past ``TARGETS_SORTED_MAX`` matches a
    chunk walks the table's ids instead, ``TARGETS_WALK_IDS`` of them at most, in order: the
    action then reads each row once, and a chunk stays short however many match."""
    probe: Params = {**params, "up_to": TARGETS_SORTED_MAX + 1}
    if (yield Exec(d.stmt("count_jobs_up_to", where=clause), probe))[0][0] <= TARGETS_SORTED_MAX:
        return None
    upto = after + TARGETS_WALK_IDS
    found = [(row[0], row[1]) for row in (yield Exec(d.stmt("targets_walk", where=clause), {**params, "upto": upto}))]
    if len(found) == limit:
        return found, found[-1][0]
    # Fewer than a chunk's worth among these ids: the next chunk walks on from the last one read
    # (more than TARGETS_SORTED_MAX match past the cursor, so some lie beyond).
    return found, upto


def resubmit(
    d: Dialect, where: JobFilter, actor: str, now: float, after: int, limit: int, seen: frozenset[int]
) -> Op[Chunk]:
    """A chunk's resubmits as one statement per status left and one for their events (see
    ``cancel``); a job whose 'active' key a newer job took is refused, read again on its own."""
    planned: list[ActionResult] = []
    chosen: dict[str, list[int]] = {}  # by the status they leave
    targets, following = yield from _targets(d, where, after, limit, seen)
    for job_id, status in targets:
        action, result = plan_operator_action("resubmit", job_id, status)
        if action is Action.RESUBMIT:
            chosen.setdefault(status, []).append(job_id)
        planned.append(result)
    refused: dict[int, ActionResult] = {}
    queues: set[str] = set()
    for status, ids in chosen.items():
        details: dict[int, dict[str, Any]] = {job_id: {"from": status} for job_id in ids}
        if status == JobStatus.COMPLETED.value:
            # A worker's completion is recorded by the row alone, which the resubmit resets: the
            # event carries that attempt's claim and completion (common.carried_events).
            for row in (yield Exec(d.sql["attempts_of_jobs"], {"ids": d.ids(ids)})):
                attempt = attempt_from_row(row)
                if attempt.lease_token is not None and attempt.finished_at is not None:
                    detail = details[attempt.job_id]
                    detail.update(attempt_detail(attempt.started_at, attempt.lease_owner, attempt.attempts))
                    detail["completed_at"] = attempt.finished_at
        rows = yield Exec(d.sql["resubmit_set"], {"now": now, "status": status, "ids": d.ids(ids)})
        done = {int(row[0]) for row in rows}
        queues.update(row[1] for row in rows)
        for job_id in ids:
            if job_id not in done:  # the rows are locked (or the store is): only a held key refuses it
                key = (yield Exec(d.sql["job_key"], {"id": job_id}))[0][0]
                holder = (yield Exec(d.sql["job_id_by_key"], {"key": key}))[0][0]
                message = f"job {job_id}: key {key!r} is held by job {holder}; not resubmitted"
                refused[job_id] = ActionResult(job_id, False, JobStatus(status), message, held_by=holder)
        kept = [job_id for job_id in ids if job_id in done]
        yield from _events(d, kept, now, EventKind.RESUBMITTED, actor, 0, [details[i] for i in kept])
    if queues:
        yield Notify(frozenset(queues))
    return [refused.get(r.job_id, r) for r in planned], following


def cancel(
    d: Dialect, where: JobFilter, actor: str, now: float, after: int, limit: int, seen: frozenset[int]
) -> Op[Chunk]:
    """A chunk's cancels as one statement per kind of change and one for their events: the jobs
    of each status cancelled together, the running ones asked to stop together. A statement per
    job and per event cost ~48 us a job on SQLite and ~220 us on PostgreSQL (two round trips). The
    targets' statuses hold until the chunk commits (SQLite's write lock; PostgreSQL's row locks,
    ``targets``' FOR UPDATE), and each statement also checks the status it expects."""
    out = []
    cancelled: dict[str, list[int]] = {}  # by the status they leave
    asked: list[int] = []
    targets, following = yield from _targets(d, where, after, limit, seen)
    for job_id, status in targets:
        action, result = plan_operator_action("cancel", job_id, status)
        if action is Action.CANCEL:
            cancelled.setdefault(status, []).append(job_id)
        elif action is Action.REQUEST_CANCEL:
            asked.append(job_id)
        out.append(result)
    for status, ids in cancelled.items():
        yield Exec(d.sql["cancel_set"], {"now": now, "status": status, "ids": d.ids(ids)})
        yield from _events(d, ids, now, EventKind.CANCELLED, actor, None, [{"from": status}] * len(ids))
    if asked:
        yield Exec(d.sql["request_cancel_set"], {"now": now, "ids": d.ids(asked)})
        yield from _events(d, asked, now, EventKind.CANCEL_REQUESTED, actor, None, [None] * len(asked))
    if cancelled:
        yield Notify(frozenset(), frozenset(i for ids in cancelled.values() for i in ids))
    return out, following


def move(
    d: Dialect,
    where: JobFilter,
    actor: str,
    now: float,
    after: int,
    limit: int,
    seen: frozenset[int],
    *,
    to: str,
) -> Op[Chunk]:
    """A chunk's jobs moved to queue ``to``: those of a status in ``MOVABLE`` not in it already,
    one statement per status and one for their events (``moved``, from and to). No transition:
    each keeps its status, run time, attempts and key (keys are unique across queues). A PENDING
    job moved wakes the queue's idle workers. Done twice, a move changes nothing more (a chunk
    whose COMMIT's reply was lost may run again: ``chunk_settled``)."""
    out: list[ActionResult] = []
    chosen: dict[str, list[int]] = {}
    targets, following = yield from _targets(d, where, after, limit, seen)
    movable = [job_id for job_id, status in targets if status and JobStatus(status) in MOVABLE]
    queues = dict(
        (int(row[0]), str(row[1])) for row in (yield Exec(d.sql["queues_of_jobs"], {"ids": d.ids(movable)}))
    ) if movable else {}  # fmt: skip
    for job_id, status in targets:
        if not status:
            out.append(ActionResult(job_id, False, None, f"job {job_id} not found"))
        elif JobStatus(status) not in MOVABLE:
            why = "it is running: move it once it ends" if status == JobStatus.PROCESSING else "it is COMPLETED"
            out.append(ActionResult(job_id, False, JobStatus(status), f"job {job_id} not moved: {why}"))
        elif queues.get(job_id) == to:  # nothing to write: a move is the same done twice
            out.append(ActionResult(job_id, True, JobStatus(status), f"in queue {to!r} already"))
        else:
            chosen.setdefault(status, []).append(job_id)
            out.append(ActionResult(job_id, True, JobStatus(status), f"moved to queue {to!r}"))
    for status, ids in chosen.items():
        yield Exec(d.sql["move_set"], {"now": now, "status": status, "to": d.text(to), "ids": d.ids(ids)})
        details: list[dict[str, Any] | None] = [{"from": queues[i], "to": to} for i in ids]
        yield from _events(d, ids, now, EventKind.MOVED, actor, None, details)
    if JobStatus.PENDING.value in chosen:
        yield Notify(frozenset({to}))
    return out, following


def recorded(chunk: Callable[[], Op[T]], made: list[T]) -> Op[T]:
    """``chunk`` run, its value also kept in ``made`` (the last run's alone: a transaction run again
    after a deadlock overwrites it), for ``chunk_settled`` or ``purge_settled`` to read if its
    COMMIT's reply is lost: the value is known before the COMMIT is sent."""
    value = yield from chunk()
    made[:] = [value]
    return value


def chunk_settled(d: Dialect, chunk: Callable[[], Op[Chunk]], made: list[Chunk], actor: str, now: float) -> Op[Chunk]:
    """A chunk of an operator's action whose COMMIT's reply was lost (PostgreSQL): what it did if
    it committed, else the chunk run again. Each job it acted on got an event of the action, by
    ``actor`` at ``now``, in its transaction: the first one's answers for all. Run again once
    committed, it would refuse its own work ("already cancelled"), or resubmit a job twice if a
    worker had meanwhile run the first resubmit."""
    if made:
        results, following = made[0]
        first = next((r.job_id for r in results if r.ok), None)
        if first is None:  # it changed no job: what it reported stands
            return results, following
        if (yield from event_made(d, first, now, actor)):
            return results, following
    return (yield from recorded(chunk, made))


def purge(d: Dialect, statuses: Sequence[JobStatus], finished_before: float, limit: int) -> Op[list[int]]:
    """Delete up to ``limit`` finished jobs of ``statuses`` (those that finished first) and their
    events; returns their ids (fewer than ``limit``: none is left)."""
    params: Params = {"before": finished_before, "limit": limit}
    fragment = d.any_of("status", "s", [s.value for s in statuses], params)
    gone = [int(r[0]) for r in (yield Exec(d.stmt("purge_jobs", statuses=fragment), params))]
    if gone and "purge_events_of" in d.sql:  # PostgreSQL's purge_jobs deletes their events itself
        yield Exec(d.sql["purge_events_of"], {"ids": json.dumps(gone)})
    if gone and "purge_raises_floor" in d.sql:  # SQLite: ids are never reused (a sequence on PostgreSQL)
        yield Exec(d.sql["purge_raises_floor"], {"top": max(gone)})
    return gone


def purge_settled(d: Dialect, chunk: Callable[[], Op[list[int]]], made: list[list[int]]) -> Op[list[int]]:
    """A purge's chunk whose COMMIT's reply was lost (PostgreSQL): the ids it deleted if it
    committed (the first of them is gone), else the chunk run again. A job another purge deleted
    meanwhile also reads as gone: the rows are gone either way, and the count is this chunk's."""
    if made and (not made[0] or not (yield Exec(d.sql["get_job"], {"id": made[0][0]}))):
        return made[0]  # it deleted nothing, or it committed
    return (yield from recorded(chunk, made))
