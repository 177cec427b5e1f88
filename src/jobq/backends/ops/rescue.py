"""Rescue: finding expired leases and jobs whose workers are gone, and retrying or failing them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from jobq.backends.base import Clock, RescueResult
from jobq.backends.common import attempt_detail, cancel_asked, plan_rescue
from jobq.backends.ops.core import TERMINAL_STATUSES, Exec, Notify, Op, _event, _events, event_made
from jobq.backends.statements import Dialect, Params
from jobq.job import EventKind


def _expired(d: Dialect, statement: str, cutoff: float, gone_owners: Sequence[str]) -> Exec:
    params: Params = {"cutoff": cutoff}
    gone = d.any_of("lease_owner", "gone", gone_owners, params) if gone_owners else "FALSE"
    return Exec(d.stmt(statement, gone=gone), params)


AttemptsLimit = Callable[[str, str | None, int], int]
"""A job's max_attempts from its task, its stored policy (JSON) and its stored max_attempts: the
rescuer in a worker applies the tasks registered there (``jobq.retry.max_attempts_for``)."""


def rescue_probe(d: Dialect, now: float, gone_owners: Sequence[str]) -> Op[bool]:
    """Is anything to rescue? A read, so that an idle queue sees no writes from the rescuers that
    every live worker runs every few seconds (a ``sqlite3`` shell has no busy timeout: an operator's
    UPDATE would fail on the lock at once)."""
    return bool((yield _expired(d, "rescue_probe", now, gone_owners)))


def rescue(
    d: Dialect,
    clock: Clock,
    backoff: Callable[[int], float],
    actor: str,
    gone_owners: Sequence[str],
    cutoff: Callable[[float], float] | None,
    attempts_limit: AttemptsLimit | None = None,
    made: list[tuple[list[RescueResult], float]] | None = None,
) -> Op[list[RescueResult]]:
    """Rescue what ``expired`` finds, each job fenced by the lease it read. ``made``: where its
    results and time go before COMMIT is sent, for ``rescue_settled`` if the reply is lost."""
    now = clock()
    gone = set(gone_owners)
    out = []
    finished: set[int] = set()
    for job_id, owner, token, attempts, max_attempts, cancel_requested, claimed_at, task, policy in (
        yield _expired(d, "expired", cutoff(now) if cutoff else now, gone_owners)
    ):
        if attempts_limit is not None:
            max_attempts = attempts_limit(task, policy, max_attempts)
        plan = plan_rescue(owner, attempts, max_attempts, cancel_asked(cancel_requested), now, backoff, owner in gone)
        args = {"status": plan.status, "now": now, "run_at": plan.run_at, "error": plan.error, "id": job_id}
        if (yield Exec(d.sql["rescue"], {**args, "token": token})):  # still the lease it read
            detail = {"previous_owner": owner, "run_at": plan.run_at, **attempt_detail(claimed_at, owner)}
            yield Exec(d.sql["insert_event"], _event(d, job_id, now, plan.kind, actor, attempts, detail))
            out.append(RescueResult(job_id, plan.outcome, owner))
            if plan.status in TERMINAL_STATUSES:
                finished.add(job_id)
    if finished:  # failed or cancelled here: wake whoever waits for them (Queue.wait)
        yield Notify(frozenset(), frozenset(finished))
    if made is not None:
        made[:] = [(out, now)]  # the last run's alone (a transaction run again overwrites it)
    return out


def rescue_settled(
    d: Dialect, again: Callable[[], Op[list[RescueResult]]], made: list[tuple[list[RescueResult], float]], actor: str
) -> Op[list[RescueResult]]:
    """A rescue whose COMMIT's reply was lost (PostgreSQL): what it did, if it committed (its
    first job has its event, by ``actor`` at its time), else the rescue run again. Run again once
    committed, it would find nothing left and report no job rescued (it raised OutcomeUnknown
    in the rescuer's tick before, and the tick ended there)."""
    if made:
        results, now = made[0]
        if not results:  # it changed nothing: what it found stands
            return results
        if (yield from event_made(d, results[0].job_id, now, actor)):
            return results
    return (yield from again())


def restamp_ahead(d: Dialect, now: float, step: float, ahead: float, actor: str) -> Op[list[int]]:
    """The waiting jobs written more than ``ahead`` seconds and at most ``step`` (plus ``ahead``)
    ahead of ``now``, made as if written now (their due time moved back as far), each with a
    ``restamped`` event by ``actor``; their ids."""
    params: Params = {"now": now, "ahead": now + ahead, "limit": now + step + ahead, "inf": math.inf}
    rows = yield Exec(d.sql["restamp_ahead"], params)
    moved = sorted(int(r[0]) for r in rows)
    if moved:
        detail = {"clock_set_back": round(step, 3)}
        yield from _events(d, moved, now, EventKind.RESTAMPED, actor, None, [detail] * len(moved))
        yield Notify(frozenset(str(r[1]) for r in rows))  # due now: idle workers need not wait to poll
    return moved


def newest_write(d: Dialect) -> Op[float | None]:
    """The newest job's ``updated_at``; None when there is none, or it is no finite number (text
    or a blob on SQLite, an infinity or NaN: written by hand; a whole number is a time)."""
    rows = yield Exec(d.sql["newest_write"])
    value = rows[0][0] if rows else None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
