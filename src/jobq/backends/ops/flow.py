"""Flow control: queue controls (pause, limits), their history, and the claim of queues under control."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from typing import Any

from jobq.backends.base import Clock, ControlEvent, ControlUpdate, QueueControl
from jobq.backends.ops.core import Exec, Notify, Op, _lease_params, _sorted_jobs
from jobq.backends.statements import Dialect, Params
from jobq.flow import control_defect, next_admission, report_defect
from jobq.job import Job

# -- flow control -------------------------------------------------------------------------------
#: Due jobs a per-key claim reads beyond what it may take: jobs of one key that may run only once
#: more are passed over, and the next keys' jobs are taken instead (no head-of-line blocking).
PER_KEY_CANDIDATES_EXTRA = 64
#: The lock-free claim's flag (``claim``'s second value): no limited queue with room remains
#: (falsy), some do (the general ``claim_controlled``), or the one queue asked for is limited by
#: its concurrency alone.
CONTROLLED_NONE, CONTROLLED, CONTROLLED_BY_CONCURRENCY = 0, 1, 2


def _running_by_key(d: Dialect, queue: str) -> Op[dict[str, int]]:
    return {str(k): int(n) for k, n in (yield Exec(d.sql["running_by_key"], {"queue": queue}))}


def _keys_at_limit(d: Dialect, running: dict[str, int], per_key: int | None, params: Params, *, held: bool) -> str:
    """The jobs whose key is at its limit (``held``) or not: a fragment for ``{blocked}``/``{unblocked}``."""
    keys = sorted(k for k, n in running.items() if per_key is not None and n >= per_key)
    if not keys:
        return "FALSE" if held else "TRUE"
    at_limit = d.any_of("concurrency_key", "blocked", keys, params)
    if held:
        return f"(concurrency_key IS NOT NULL AND {at_limit})"
    return f"(concurrency_key IS NULL OR NOT ({at_limit}))"


def _pick(d: Dialect, queue: str, per_key: int | None, room: int, now: float) -> Op[list[int]]:
    """The ids of at most ``room`` due jobs of ``queue``, in claim order, within the per-key limit."""
    params: Params = {"queue": queue, "now": now, "limit": room}
    if per_key is None:
        return [int(r[0]) for r in (yield Exec(d.stmt("candidates", unblocked="TRUE"), params))]
    running = yield from _running_by_key(d, queue)
    params["limit"] = room + PER_KEY_CANDIDATES_EXTRA
    rows = yield Exec(d.stmt("candidates", unblocked=_keys_at_limit(d, running, per_key, params, held=False)), params)
    ids: list[int] = []
    for job_id, key in rows:
        if len(ids) >= room:
            break
        if key is not None:
            if running.get(key, 0) >= per_key:
                continue  # this claim took its last free slot already
            running[key] = running.get(key, 0) + 1
        ids.append(int(job_id))
    return ids


def claim_controlled(
    d: Dialect,
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    lease_seconds: float,
    clock: Clock,
    nonce: str,
    hint: int = CONTROLLED,
) -> Op[list[Job]]:
    """Claim from the paused or limited ``queues`` (docs/flow-control.md): their control rows are
    locked before their jobs are counted and claimed (PostgreSQL: FOR UPDATE; SQLite holds its
    write lock), so what runs is counted by one claim at a time and every limit holds across
    workers and hosts. A paused queue gives nothing; a concurrency limit gives at most its free
    slots; a per-key limit passes over jobs of keys at their limit; a rate limit admits one job
    when its next admission time has come and moves that time on by window/count (GCRA with no
    burst: at most ``count`` admissions in any ``window``).

    ``hint``: the lock-free claim's flag (``CONTROLLED_*``). When it says the one queue asked
    for is limited by its concurrency alone, a dialect that has ``claim_concurrency_locked``
    locks, counts and claims in one round trip (the statement checks the row again under the lock)."""
    if hint == CONTROLLED_BY_CONCURRENCY and len(queues) == 1 and "claim_concurrency_locked" in d.sql:
        now = clock()
        locked = _lease_params(d, worker_id, nonce, now, lease_seconds)
        locked.update(queue=queues[0], room=limit, alone=True)
        return _sorted_jobs((yield Exec(d.sql["claim_concurrency_locked"], locked, alone=True, several=True)))
    params: Params = {}
    # PostgreSQL locks the rows here (FOR UPDATE, in queue order); SQLite holds its write lock
    # already and reads them.
    name = "lock_controls" if "lock_controls" in d.sql else "controls_active"
    rows = list((yield Exec(d.stmt(name, queues=d.any_of("queue", "q", queues, params)), params)))
    # In a random order: taken in name order, the first queues' jobs filled every claim and the
    # last queue starved (seen: a rate-limited queue admitted nothing behind two busy ones).
    random.shuffle(rows)
    now = clock()  # after the lock: a lease runs from when granted, and the rate's time is now
    jobs: list[Job] = []
    for queue, paused, concurrency, per_key, rate_count, rate_window, tat in rows:
        room = limit - len(jobs)
        if paused or room <= 0:
            continue
        defect = control_defect(concurrency, per_key, rate_count, rate_window, tat)
        if defect is not None:
            # A row written by hand that cannot be enforced: hold the queue back (its jobs stay
            # PENDING, nothing is lost) rather than guess, and let the other queues go on.
            report_defect(queue, defect)
            continue
        if rate_count is not None:
            admit_at = next_admission(tat, rate_count, rate_window, now)
            if admit_at is not None and admit_at != tat:  # written by a clock set back since
                yield Exec(d.sql["set_rate_tat"], {"queue": queue, "tat": admit_at})
            if admit_at is not None and admit_at > now:
                continue
            room = min(room, 1)
        lease = _lease_params(d, worker_id, nonce, now, lease_seconds)
        if per_key is None and "claim_limited" in d.sql:
            # One statement counts what runs, picks and leases the jobs.
            params = {**lease, "queue": queue, "room": room, "alone": False}
            got = _sorted_jobs((yield Exec(d.sql["claim_limited"], params)))
        else:
            if concurrency is not None:
                running = int((yield Exec(d.sql["running_count"], {"queue": queue}))[0][0])
                room = min(room, int(concurrency) - running)
            if room <= 0:
                continue
            ids = yield from _pick(d, queue, per_key, room, now)
            if not ids:
                continue
            got = _sorted_jobs((yield Exec(d.stmt("claim_ids", ids=d.any_of("id", "ids", ids, lease)), lease)))
        if rate_count is not None and got:
            start = now if tat is None else max(float(tat), now)
            step = float(rate_window) / int(rate_count)
            yield Exec(d.sql["set_rate_tat"], {"queue": queue, "tat": start + step * len(got)})
        jobs += got
    return jobs  # no events: claims are derived from the job row, as in ``claim``


def _control_from_row(row: Sequence[Any]) -> QueueControl:
    return QueueControl(
        str(row[0]), bool(row[1]), row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10]
    )


def _limits_detail(c: QueueControl) -> dict[str, Any]:
    rate = None if c.rate_count is None else {"count": c.rate_count, "window_seconds": c.rate_window}
    return {"paused": c.paused, "concurrency": c.concurrency, "per_key": c.per_key, "rate": rate}


def update_control(d: Dialect, queue: str, update: ControlUpdate, actor: str, now: float) -> Op[QueueControl]:
    """Pause, resume or change limits, in one transaction with its history row; wakes the queue's
    idle workers (a resumed or loosened queue has work for them at once)."""
    yield Exec(d.sql["ensure_control"], {"queue": queue, "now": now})
    old = _control_from_row((yield Exec(d.sql["control_for_update"], {"queue": queue}))[0])
    new = old
    actions = []
    if update.paused is not None and update.paused != old.paused:
        new = dataclasses.replace(new, paused=update.paused, paused_by=actor, paused_at=now)
        actions.append("pause" if update.paused else "resume")
    if update.limits:
        changes: dict[str, Any] = {}
        for name in ("concurrency", "per_key", "rate_count", "rate_window"):
            if name in update.limits:
                changes[name] = getattr(update, name)
        rate = (changes.get("rate_count", old.rate_count), changes.get("rate_window", old.rate_window))
        if rate != (old.rate_count, old.rate_window):
            changes["next_admit_at"] = None  # a new rate starts afresh
        new = dataclasses.replace(new, **changes)
        if (new.concurrency, new.per_key, new.rate_count, new.rate_window) != (
            old.concurrency,
            old.per_key,
            old.rate_count,
            old.rate_window,
        ):
            actions.append("limits")
    if not actions:
        return old
    new = dataclasses.replace(new, updated_by=actor, updated_at=now)
    yield Exec(
        d.sql["write_control"],
        {
            "queue": queue,
            "paused": new.paused,
            "paused_by": d.text(new.paused_by),
            "paused_at": new.paused_at,
            "concurrency": new.concurrency,
            "per_key": new.per_key,
            "rate_count": new.rate_count,
            "rate_window": new.rate_window,
            "rate_tat": new.next_admit_at,
            "actor": d.text(actor),
            "now": now,
        },
    )
    detail = d.text(json.dumps(_limits_detail(new)))
    for action in actions:
        params = {"queue": queue, "now": now, "actor": d.text(actor), "action": action, "detail": detail}
        yield Exec(d.sql["insert_control_event"], params)
    yield Notify(frozenset({queue}))
    return new


def controls(d: Dialect) -> Op[list[QueueControl]]:
    return [_control_from_row(r) for r in (yield Exec(d.sql["list_controls"]))]


def control_history(d: Dialect, queue: str | None, limit: int) -> Op[list[ControlEvent]]:
    params: Params = {"limit": limit}
    where = "" if queue is None else " WHERE " + d.any_of("queue", "q", [queue], params)
    rows = yield Exec(d.stmt("control_history", where=where), params)
    return [ControlEvent(int(r[0]), str(r[1]), float(r[2]), r[3], str(r[4]), r[5]) for r in rows]


def _waiting_on_limit(d: Dialect, c: QueueControl, due: int, running: int, now: float) -> Op[int]:
    """How many of a controlled queue's ``due`` jobs a claim could not take now."""
    if c.paused or control_defect(c.concurrency, c.per_key, c.rate_count, c.rate_window, c.next_admit_at):
        return due  # a bad row holds the whole queue back (claim_controlled)
    room = due
    if c.concurrency is not None:
        room = min(room, max(0, c.concurrency - running))
    if c.rate_count is not None and c.rate_window is not None:
        admit_at = next_admission(c.next_admit_at, c.rate_count, c.rate_window, now)
        room = min(room, 0 if admit_at is not None and admit_at > now else 1)
    held = 0
    if c.per_key is not None:
        keyed = yield from _running_by_key(d, c.queue)
        params: Params = {"queue": c.queue, "now": now}
        fragment = _keys_at_limit(d, keyed, c.per_key, params, held=True)
        if fragment != "FALSE":
            held = int((yield Exec(d.stmt("due_count", blocked=fragment), params))[0][0])
    return max(held, due - room)
