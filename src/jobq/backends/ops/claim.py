"""The worker's hot path: claim, heartbeat, complete, fail, release, ack_cancel, progress, next_due_at."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from jobq.backends.base import Clock, Completion, Failure, HeartbeatResult, Lease
from jobq.backends.common import attempt_detail, cancel_asked, clip, number_or_none
from jobq.backends.ops.core import (
    Claimed,
    Exec,
    ExecMany,
    Notify,
    Op,
    Rows,
    _by_job_id,
    _event,
    _lease_params,
    _one_write,
    _refusal_detail,
    _refused,
    _refused_unless_applied,
    _within,
)
from jobq.backends.ops.flow import CONTROLLED_NONE, _keys_at_limit, _running_by_key, claim_controlled
from jobq.backends.statements import STATIC_FRAGMENTS, Dialect, Params
from jobq.flow import RATE_ADMISSION_SLACK_SECONDS, control_defect, next_admission
from jobq.job import EventKind, Job, JobStatus

#: The batch of a set-based completion as compact JSON (results are JSON text already checked to
#: be valid Unicode, so they pass through unescaped).
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_RATE_SLACK = repr(RATE_ADMISSION_SLACK_SECONDS)  # PostgreSQL's claim flag: see claim_flag
_JOB_COLUMNS = STATIC_FRAGMENTS["job_columns"]


# -- workers ------------------------------------------------------------------------------------
def claim(
    d: Dialect, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, clock: Clock, nonce: str
) -> Op[tuple[Claimed, int]]:
    """Each lease token is the claim's ``nonce`` plus the job id: unique per lease, and a claim
    whose COMMIT reply was lost can read back what it handed out (``claimed_by_nonce``).

    Returns the jobs (``Claimed``: the plan builds them after the commit) and whether queues
    under flow control remain for ``claim_controlled`` (a dialect whose claim is one statement
    sent alone, PostgreSQL, passes over paused and limited queues and says so, one of
    ``flow.CONTROLLED_*``; the caller then runs ``claim_controlled``, in a transaction of its
    own, with ``controlled`` as its hint).

    No event is written: the row records the attempt (started_at, lease_owner, attempts), and a
    job's history derives its ``claimed`` entry from there (``common.history_of``; issue 13: the
    event row and its two indexes were half the pages a claim wrote)."""
    now = clock()  # under the lock (SQLite) / in the transaction: a lease runs from when granted
    if "claim_flagged" in d.sql:  # the claim and whether controlled queues remain, one statement
        rows = yield Exec(*claim_flagged_statement(d, worker_id, queues, limit, lease_seconds, now, nonce), alone=True)
        return claim_flagged_rows(rows)
    statement, params, unread = claim_statement(d, worker_id, queues, limit, lease_seconds, now, nonce)
    rows = yield Exec(statement, params)
    claimed = Claimed(rows, unread=unread)
    if len(rows) < limit:
        claimed.jobs += yield from claim_passed_over(
            d, worker_id, queues, limit - len(rows), lease_seconds, clock, nonce
        )
    return claimed, CONTROLLED_NONE


def claim_flagged_statement(
    d: Dialect, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, now: float, nonce: str
) -> tuple[str, Params]:
    """``claim``'s one statement where it is one (PostgreSQL: ``claim_flagged``, sent alone),
    and its parameters. One queue: whether it is paused or limited is one look-up before the
    scan (the planner runs an uncorrelated subquery once and skips the scan when it says so);
    asked per pending row instead, a claim of a limited queue walked its whole backlog to find
    nothing (68 ms a claim with 20,000 due jobs, bench/flow_rows.py)."""
    params = _lease_params(d, worker_id, nonce, now, lease_seconds)
    params["limit"] = limit
    uncontrolled = _uncontrolled(d, queues)
    statement = d.stmt_for_queues(
        "claim_flagged", queues, params, uncontrolled=uncontrolled, freed="0", rate_slack=_RATE_SLACK
    )
    return statement, params


def claim_flagged_rows(rows: Rows) -> tuple[Claimed, int]:
    """What ``claim_flagged_statement``'s rows say: the jobs, and whether controlled queues remain."""
    controlled = int(rows[0][0]) if rows else CONTROLLED_NONE
    return Claimed([row[1:] for row in rows if row[1] is not None]), controlled


def claim_statement(
    d: Dialect, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, now: float, nonce: str
) -> tuple[str, Params, str | None]:
    """The claim's one statement, its parameters and ``Claimed.unread``, where the write lock is
    held while it runs (SQLite's BEGIN IMMEDIATE, before ``now`` is read): what it and
    ``claim_passed_over`` after it see of the controls stays true until commit. It passes over
    paused and limited queues itself ({uncontrolled}), so a claim that gets all it asked for is
    one statement: the controls are read only when it got fewer (issue 13: that read was a quarter
    of a claim's statements). A dialect may have a cheaper statement for one job (SQLite: a scalar
    subquery, no IN list). A claim of ``Dialect.claim_reads_after`` jobs or more returns their ids
    only: ``unread`` is then its nonce, and ``claimed_rows`` reads the rows after the commit."""
    params = _lease_params(d, worker_id, nonce, now, lease_seconds)
    params["limit"] = limit
    name = "claim_one" if limit == 1 and "claim_one" in d.sql else "claim"
    unread = nonce if 0 < d.claim_reads_after <= limit else None
    returned = "id" if unread else _JOB_COLUMNS
    statement = d.stmt_for_queues(name, queues, params, uncontrolled=_uncontrolled(d, queues), returned=returned)
    return statement, params, unread


def claimed_rows(d: Dialect, claimed: Claimed) -> Op[Rows]:
    """After the commit of a claim that returned ids only (``claimed.unread``), outside SQLite's
    write lock: the rows of those jobs it still leases."""
    ids = d.ids([row[0] for row in claimed.rows])
    return (yield Exec(d.sql["claimed_rows"], {"ids": ids, "nonce": claimed.unread}, alone=True))


def claim_passed_over(
    d: Dialect, worker_id: str, queues: Sequence[str], more: int, lease_seconds: float, clock: Clock, nonce: str
) -> Op[list[Job]]:
    """After ``claim_statement`` got ``more`` jobs fewer than asked, in its transaction: up to
    ``more`` of the paused or limited queues among ``queues`` that it passed over."""
    cparams: Params = {}
    active = yield Exec(d.stmt("controls_active", queues=d.any_of("queue", "q", queues, cparams)), cparams)
    if not active:
        return []
    names = [str(row[0]) for row in active]
    return (yield from claim_controlled(d, worker_id, names, more, lease_seconds, clock, nonce))


def _uncontrolled(d: Dialect, queues: Sequence[str]) -> str:
    """The claim's {uncontrolled}: how it passes over paused and limited queues (one look-up for
    one queue, a set of them for several)."""
    return d.sql["uncontrolled_one" if len(queues) == 1 else "uncontrolled_each"]


def claimed_also(d: Dialect, worker_id: str, nonce: str, known: Sequence[Job]) -> Op[list[Job]]:
    """After a ``claim_controlled`` whose outcome is unknown: the jobs its nonce leased beyond ``known``."""
    seen = {j.id for j in known}
    return [j for j in (yield from claimed_by_nonce(d, worker_id, nonce)).build() if j.id not in seen]


def claimed_by_nonce(d: Dialect, worker_id: str, nonce: str) -> Op[Claimed]:
    return Claimed((yield Exec(d.sql["claimed_by_nonce"], {"worker": d.text(worker_id), "nonce": nonce})))


def heartbeat(
    d: Dialect, leases: Sequence[Lease], lease_seconds: float, clock: Clock, repeat: bool = False
) -> Op[list[HeartbeatResult]]:
    """``repeat``: a heartbeat sent again because the reply to its COMMIT was lost. It takes the
    path below, whose refusal is not recorded when the lost commit recorded it already."""
    if len(leases) == 1 and not repeat and "heartbeat_one" in d.sql:
        # One statement: it locks the row, adds any lock wait to the lease, records a refusal.
        lease, now = leases[0], clock()
        args = {**_one_write(d, lease, now, "heartbeat"), "expires": now + lease_seconds}
        rows = yield Exec(d.sql["heartbeat_one"], args, alone=True)
        if not rows:
            return [HeartbeatResult(lease.job_id, False)]
        return [HeartbeatResult(lease.job_id, True, cancel_asked(rows[0][0]))]
    if "lock_jobs" in d.sql:
        # An UPDATE that waits for a row lock evaluates its SET before the wait: lock first, then
        # read the clock, so the lease runs from when it is written.
        params: Params = {}
        ids = sorted({lease.job_id for lease in leases})
        yield Exec(d.stmt("lock_jobs", ids=d.any_of("id", "ids", ids, params)), params)
    now = clock()
    out: list[HeartbeatResult | None] = [None] * len(leases)
    for i in _by_job_id(leases):
        lease = leases[i]
        args = {"expires": now + lease_seconds, "now": now, "id": lease.job_id, "token": lease.token}
        rows = yield Exec(d.sql["heartbeat"], args)
        if rows:
            out[i] = HeartbeatResult(lease.job_id, True, cancel_asked(rows[0][0]))
        else:
            # A lease whose own completion landed (a handler completing in its application's
            # transaction, ``JobContext.complete(conn=...)``, commits while a heartbeat waits for
            # its lock) is over, not stale: nothing to record. Costs a read on refusals only.
            yield from _refused(d, lease, "heartbeat", now, repeat=True, applied_as="complete", recorded_maybe=repeat)
            out[i] = HeartbeatResult(lease.job_id, False)
    return [r for r in out if r is not None]


def complete_in_one(d: Dialect, items: Sequence[Completion], repeat: bool) -> bool:
    """Whether ``complete`` is one statement (``complete_one_statement``) sent alone: one job,
    first sent, without a note, where the dialect has it (a repeat needs to read first)."""
    return len(items) == 1 and not repeat and not items[0].note and "complete_one" in d.sql


def complete_one_statement(d: Dialect, item: Completion, now: float) -> tuple[str, Params]:
    """The write or the refusal's event in one statement; it returns a row if the lease held."""
    params = _one_write(d, item.lease, now, "complete")
    params["result"] = item.result_json
    return d.sql["complete_one"], params


def complete(d: Dialect, items: Sequence[Completion], clock: Clock, repeat: bool) -> Op[list[bool]]:
    """The completions' operation. Not a generator itself: what a group's statement needs that
    no clock or row decides (its order, the first item of each lease, its JSON) is made here,
    when the operation is made. The SQLite store makes it before BEGIN IMMEDIATE: made inside,
    it held the write lock ~1 us a job of a ``Worker(batch=100)``'s ~16, and with several
    workers that lock is their limit (issue 13). What the returned generator runs is under it."""
    if complete_in_one(d, items, repeat):
        return _complete_alone(d, items[0], clock)
    if len(items) == 1 and not items[0].note:
        return _complete_single(d, items[0], clock, repeat)
    return _complete_group(d, items, clock, repeat, _Group(d, items))


def _complete_alone(d: Dialect, item: Completion, clock: Clock) -> Op[list[bool]]:
    now = clock()
    return [bool((yield Exec(*complete_one_statement(d, item, now), alone=True)))]


def _complete_single(d: Dialect, item: Completion, clock: Clock, repeat: bool) -> Op[list[bool]]:
    """The per-job API (SQLite, or a repeat): the same fenced statement and refusal as a group's,
    without the group's ordering and look-ups (~2 us of a ~120 us claim+complete, issue 13)."""
    now = clock()
    lease = item.lease
    if (yield Exec(*completion(d, item, now))):
        yield Notify(frozenset(), frozenset((lease.job_id,)))
        return [True]
    return [(yield from completion_refused(d, lease, now, repeat))]


class _Group:
    """A group of completions as ``_complete_group`` sends it, made before its transaction."""

    __slots__ = ("batch", "ids", "nonce", "order", "plain", "sent")

    def __init__(self, d: Dialect, items: Sequence[Completion]) -> None:
        self.order = _by_job_id([i.lease for i in items])
        # The same lease twice in one call completes once, with the first item's result; the
        # later ones are refused as a second call would be (an UPDATE takes a row once: both were
        # reported True, and the set statement stored either result).
        self.sent = _first_of_each_lease(items, self.order)
        # The whole group in one statement, fenced per row (SQLite: a job cost a statement step,
        # its parameters bound, its plan run: ~40 % of a batched completion's CPU, issue 13).
        self.batch: str | None = None
        self.nonce: str | None = None
        if len(items) > 1 and "complete_set" in d.sql:
            if "complete_nonce_set" in d.sql:
                self.nonce = _one_claims_nonce(items, self.sent)
            if self.nonce is not None:  # then the batch is the ids alone (complete_nonce_set)
                self.batch = _COMPACT.encode([items[i].lease.job_id for i in self.sent])
            else:
                self.batch = _COMPACT.encode(
                    [[items[i].lease.job_id, items[i].lease.token, items[i].result_json] for i in self.sent]
                )
        # Each lease once and no note: when every lease held, nothing is left to sort out. (Lists,
        # not generators: a generator is a Python call per item it yields.)
        self.plain = len(self.sent) == len(items) and not any([i.note for i in items])
        self.ids = frozenset([i.lease.job_id for i in items])


def _one_claims_nonce(items: Sequence[Completion], sent: Sequence[int]) -> str | None:
    """The nonce of the one claim that made every lease of ``sent`` (a claim writes each token
    as its nonce, ``-``, the job's id), when there is one and no item stores a result; None
    otherwise (the group then names each token and result: ``complete_set``)."""
    nonce, dash, _ = items[sent[0]].lease.token.rpartition("-")
    if not dash:
        return None
    for i in sent:
        item = items[i]
        if item.result_json is not None or item.lease.token != f"{nonce}-{item.lease.job_id}":
            return None
    return nonce


def _complete_group(
    d: Dialect, items: Sequence[Completion], clock: Clock, repeat: bool, group: _Group
) -> Op[list[bool]]:
    now = clock()
    # RETURNING names the (job, token) pairs whose lease still held, the others are refused and
    # recorded. A completion writes no event (the row records it, see ``claim``); only one with a
    # note does, to keep the note.
    if group.nonce is not None:
        rows = yield Exec(d.sql["complete_nonce_set"], {"now": now, "ids": group.batch, "nonce": group.nonce})
    elif group.batch is not None:
        rows = yield Exec(d.sql["complete_set"], {"now": now, "items": group.batch})
    else:  # one job (no JSON to build), or a dialect without it: one prepared statement stepped per job
        args = [
            {"now": now, "result": items[i].result_json, "id": items[i].lease.job_id, "token": items[i].lease.token}
            for i in group.sent
        ]
        rows = yield ExecMany(d.sql["complete"], args)
    if group.plain and len(rows) == len(items):
        # Every lease held: each (job, token) was sent once, a row has one token, and an UPDATE
        # returns a row once, so as many rows as items means each item's row. The common case,
        # decided without the look-ups below while the lock is held.
        if group.ids:
            yield Notify(frozenset(), group.ids)
        return [True] * len(items)
    attempts = {(job_id, token): n for job_id, token, n in rows}
    done = [False] * len(items)
    noted = []
    finished = []
    for i in group.order:
        item, lease = items[i], items[i].lease
        n = attempts.pop((lease.job_id, lease.token), None)
        if n is not None:
            if item.note:
                detail = {"note": item.note}
                noted.append(_event(d, lease.job_id, now, EventKind.COMPLETED, lease.worker_id, n, detail))
            finished.append(lease.job_id)
            done[i] = True
        else:
            done[i] = yield from _refused(d, lease, "complete", now, repeat=repeat)
    if noted:
        yield ExecMany(d.sql["insert_event"], noted)
    if finished:
        yield Notify(frozenset(), frozenset(finished))
    return done


def _first_of_each_lease(items: Sequence[Completion], order: list[int]) -> list[int]:
    """``order`` without the items whose (job, token) an earlier item of the call holds."""
    seen: set[tuple[int, str]] = set()
    first = []
    for i in order:
        pair = (items[i].lease.job_id, items[i].lease.token)
        if pair not in seen:
            seen.add(pair)
            first.append(i)
    return first


def completion(d: Dialect, item: Completion, now: float) -> tuple[str, Params]:
    """One completion's statement and parameters, fenced by its lease: it returns a row when the
    lease held (the job is then COMPLETED), none when not (``completion_refused`` follows)."""
    lease = item.lease
    return d.sql["complete"], {"now": now, "result": item.result_json, "id": lease.job_id, "token": lease.token}


def completion_refused(d: Dialect, lease: Lease, now: float, repeat: bool) -> Op[bool]:
    """After ``completion`` matched no row, in its transaction: the refusal recorded (False), or,
    for a ``repeat`` whose first try had been applied, True and nothing recorded."""
    return _refused(d, lease, "complete", now, repeat=repeat)


def complete_and_claim(
    d: Dialect,
    items: Sequence[Completion],
    clock: Clock,
    repeat: bool,
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    lease_seconds: float,
    nonce: str,
) -> Op[tuple[list[bool], Claimed, int]]:
    """Completions, then the next claim, in one transaction: a worker that runs one job at a time
    commits once per job instead of twice. The two steps are the ``complete`` and ``claim``
    operations unchanged (fencing, events, lease tokens).

    Returns whether each completion held, the jobs claimed, and (as ``claim`` does) whether
    controlled queues remain for a ``claim_controlled`` of its own: only where the whole call is
    one statement (``complete_set_and_claim``), which locks no control row.

    Not a generator itself, as ``complete``: the completions' group is made with the operation,
    the rest runs in the transaction."""
    one_statement = (
        limit > 0
        and items
        and not repeat
        and "complete_set_and_claim" in d.sql
        and not any(i.note for i in items)
        and len({i.lease.job_id for i in items}) == len(items)  # one row each: an UPDATE takes a row once
    )
    completing = None if one_statement else complete(d, items, clock, repeat)

    def run() -> Op[tuple[list[bool], Claimed, int]]:
        if completing is None:
            params = _lease_params(d, worker_id, nonce, clock(), lease_seconds)
            params["limit"] = limit
            return (yield from _complete_set_and_claim(d, items, queues, params))
        done = yield from _within(completing)
        claimed = Claimed([])
        if limit > 0:
            claimed, controlled = yield from _within(claim(d, worker_id, queues, limit, lease_seconds, clock, nonce))
            if controlled and len(claimed) < limit:
                more = limit - len(claimed)
                claimed.jobs += yield from claim_controlled(
                    d, worker_id, queues, more, lease_seconds, clock, nonce, controlled
                )
        return done, claimed, CONTROLLED_NONE

    return run()


def _complete_set_and_claim(
    d: Dialect, items: Sequence[Completion], queues: Sequence[str], params: Params
) -> Op[tuple[list[bool], Claimed, int]]:
    """``complete_and_claim`` as one statement sent alone (PostgreSQL): one round trip, against
    three for the transaction (measured here: 1.2 ms a call against 1.6 ms for one job, most of
    it the commit's flush; 1.8 against 2.8 ms for eight). Its refusals and wake-ups happen in the
    statement; a repeat and notes take the transaction, which reads before it writes. ``params``:
    the claim's (worker, nonce, now, expires, limit)."""
    batch = [
        [lease.job_id, lease.token, i.result_json, d.text(lease.worker_id), _refusal_detail(d, "complete", lease)]
        for i in items
        for lease in (i.lease,)
    ]
    params = {**params, "items": _COMPACT.encode(batch)}
    uncontrolled = _uncontrolled(d, queues)
    uncontrolled = f"{d.sql['claim_after_locks']} AND {uncontrolled}"
    freed = d.sql["completions_freed"]
    statement = d.stmt_for_queues(
        "complete_set_and_claim", queues, params, uncontrolled=uncontrolled, freed=freed, rate_slack=_RATE_SLACK
    )
    rows = yield Exec(statement, params, alone=True)
    completed = set(rows[0][1] or ()) if rows else set()
    claimed = Claimed([row[2:] for row in rows if row[2] is not None])
    controlled = int(rows[0][0]) if rows else CONTROLLED_NONE
    return [i.lease.job_id in completed for i in items], claimed, controlled


def completed_and_claimed(
    d: Dialect, items: Sequence[Completion], clock: Clock, worker_id: str, nonce: str
) -> Op[tuple[list[bool], Claimed]]:
    """After a ``complete_and_claim`` whose outcome is unknown: the completions repeated (a
    committed one is recognised) and the jobs its nonce leased, if it committed."""
    done = yield from complete(d, items, clock, True)
    jobs = yield from claimed_by_nonce(d, worker_id, nonce)
    return done, jobs


def fail(d: Dialect, items: Sequence[Failure], clock: Clock, repeat: bool) -> Op[list[JobStatus | None]]:
    """Each failed attempt: retried (PENDING at ``retry_at``) or FAILED; the status each job was
    left in, None where the write was refused. A job to retry whose cancel an operator requested
    ends CANCELLED instead (a ``cancelled`` event by the worker, with the error): retried, its next
    claim would have run it again with the request dropped. A job out of attempts ends FAILED
    whatever was asked: it runs no more either way, and FAILED keeps the error."""
    now = clock()
    if len(items) == 1 and not repeat and "fail_one" in d.sql:
        item = items[0]
        error = d.text(item.error) or ""
        info: dict[str, Any] = {"error": clip(error)}
        if item.retry_at is not None:
            statement, info = "retry_one", {**info, "retry_at": item.retry_at}
        else:
            statement = "fail_one"
        params = _one_write(d, item.lease, now, "fail")
        due = item.retry_at is not None and item.retry_at <= now
        cancelled = json.dumps({"by": "worker", "error": clip(error)})
        params.update(retry_at=item.retry_at, error=error, detail=d.text(json.dumps(info)), due=due)
        params.update(cancel_detail=d.text(cancelled))
        rows = yield Exec(d.sql[statement], params, alone=True)
        return [JobStatus(rows[0][1]) if rows else None]
    out: list[JobStatus | None] = [None] * len(items)
    finished: set[int] = set()
    # A retry due at once wakes idle workers of its queue, as a release does: else another
    # worker finds it only at its next poll (a worker's own free slot looks again at once).
    queues: set[str] = set()
    for i in _by_job_id([item.lease for item in items]):
        item, lease = items[i], items[i].lease
        error = d.text(item.error) or ""
        args = {"now": now, "retry_at": item.retry_at, "error": error, "id": lease.job_id, "token": lease.token}
        error_detail: dict[str, Any] = {"error": clip(error)}
        if item.retry_at is not None:
            op, kind, detail = "retry", EventKind.RETRY_SCHEDULED, {**error_detail, "retry_at": item.retry_at}
        else:
            op, kind, detail = "fail", EventKind.FAILED, dict(error_detail)
        rows = yield Exec(d.sql[op], args)
        if rows:
            detail.update(attempt_detail(rows[0][1]))  # the attempt's claim: the row's moves on
            yield Exec(d.sql["insert_event"], _event(d, lease.job_id, now, kind, lease.worker_id, rows[0][0], detail))
            out[i] = JobStatus.PENDING if item.retry_at is not None else JobStatus.FAILED
            if item.retry_at is None:
                finished.add(lease.job_id)
            elif item.retry_at <= now:
                queues.add(rows[0][2])
        elif op == "retry" and (yield from _cancel_if_asked(d, lease, now, args, error_detail)):
            out[i] = JobStatus.CANCELLED
            finished.add(lease.job_id)
        else:
            applied = (op, "cancelled") if op == "retry" else op
            left = yield from _refused_unless_applied(d, lease, "fail", now, repeat=repeat, applied_as=applied)
            out[i] = None if left is None else JobStatus(left)
    if finished or queues:
        yield Notify(frozenset(queues), frozenset(finished))
    return out


def release(d: Dialect, leases: Sequence[Lease], clock: Clock, reason: str, repeat: bool) -> Op[list[bool]]:
    """Give jobs back at once: PENDING, the attempt not counted, due now (idle workers are woken).
    A job whose cancel an operator requested ends CANCELLED instead, as the rescuer ends it:
    released, the next claim would have run it again with the request dropped. The reason may be
    a handler's own text (``jobq.WorkerShutdown``): kept to an event's size, as errors are."""
    now = clock()
    detail: dict[str, Any] = {"reason": clip(str(reason))}
    out = [False] * len(leases)
    queues: set[str] = set()
    finished: set[int] = set()
    for i in _by_job_id(leases):
        lease = leases[i]
        params: Params = {"now": now, "id": lease.job_id, "token": lease.token}
        rows = yield Exec(d.sql["release"], params)
        if rows:
            attempts, queue, claimed_at = rows[0]
            # A release gives the attempt back (attempts - 1): the claim keeps its own number.
            event = {**detail, **attempt_detail(claimed_at, None, attempts + 1)}
            yield Exec(d.sql["insert_event"], _event(d, lease.job_id, now, EventKind.RELEASED, lease.worker_id,
                                                     attempts, event))  # fmt: skip
            queues.add(queue)
            out[i] = True
        elif (yield from _cancel_if_asked(d, lease, now, params, detail)):
            finished.add(lease.job_id)
            out[i] = True
        else:
            # A repeat whose first send committed finds the job in either state with its token.
            out[i] = yield from _refused(d, lease, "released", now, repeat=repeat, applied_as=("released", "cancelled"))
    if queues or finished:
        yield Notify(frozenset(queues), frozenset(finished))
    return out


def _cancel_if_asked(d: Dialect, lease: Lease, now: float, params: Params, detail: dict[str, Any]) -> Op[bool]:
    """After a release or a retry that did not apply: end the job CANCELLED if an operator asked to
    cancel it (``ack_cancel`` matches only then; the other two only otherwise), with its
    ``cancelled`` event by the worker carrying ``detail``. False: not asked, or not this lease's."""
    rows = yield Exec(d.sql["ack_cancel"], params)
    if not rows:
        return False
    attempts, _, claimed_at = rows[0]
    event = {"by": "worker", **detail, **attempt_detail(claimed_at)}
    yield Exec(
        d.sql["insert_event"], _event(d, lease.job_id, now, EventKind.CANCELLED, lease.worker_id, attempts, event)
    )
    return True


def ack_cancel(d: Dialect, leases: Sequence[Lease], clock: Clock, repeat: bool) -> Op[list[bool]]:
    return _simple_worker_write(
        d, "ack_cancel", EventKind.CANCELLED, leases, clock, {"by": "worker"}, repeat, False, True
    )


def _simple_worker_write(
    d: Dialect,
    statement: str,
    kind: EventKind,
    leases: Sequence[Lease],
    clock: Clock,
    detail: dict[str, Any],
    repeat: bool,
    notify: bool,
    finishes: bool = False,
) -> Op[list[bool]]:
    now = clock()
    out = [False] * len(leases)
    queues: set[str] = set()
    finished: set[int] = set()
    for i in _by_job_id(leases):
        lease = leases[i]
        rows = yield Exec(d.sql[statement], {"now": now, "id": lease.job_id, "token": lease.token})
        if rows:
            attempts, _, claimed_at = rows[0]
            # A release gives the attempt back (attempts - 1): the claim keeps its own number.
            ended = attempt_detail(claimed_at, None, attempts + 1 if kind is EventKind.RELEASED else None)
            event = _event(d, lease.job_id, now, kind, lease.worker_id, attempts, {**detail, **ended})
            yield Exec(d.sql["insert_event"], event)
            queues.add(rows[0][1])
            out[i] = True
            if finishes:
                finished.add(lease.job_id)
        else:
            out[i] = yield from _refused(d, lease, kind.value, now, repeat=repeat)
    if (notify and queues) or finished:
        yield Notify(frozenset(queues) if notify else frozenset(), frozenset(finished))
    return out


def next_due_at(d: Dialect, queues: Sequence[str], now: float) -> Op[float | None]:
    """The earliest time a claim of ``queues`` could take a job: paused queues and queues at their
    concurrency limit count as never (a resume wakes the workers; a freed slot is taken by the
    worker that freed it, others poll), a rate-limited queue not before its next admission."""
    cparams: Params = {}
    active = yield Exec(d.stmt("controls_active", queues=d.any_of("queue", "q", queues, cparams)), cparams)
    free = [q for q in queues if q not in {row[0] for row in active}] if active else list(queues)
    times: list[float] = []
    if free:
        params: Params = {}
        rows = yield Exec(d.stmt("next_due_at", queues=d.any_of("queue", "q", free, params)), params)
        if rows and (first := number_or_none(rows[0][0])) is not None:
            times.append(first)
    for queue, paused, concurrency, per_key, rate_count, window, tat in active:
        if paused or control_defect(concurrency, per_key, rate_count, window, tat):
            continue  # a bad row holds the queue back like a pause (claim_controlled)
        if concurrency is not None and int((yield Exec(d.sql["running_count"], {"queue": queue}))[0][0]) >= concurrency:
            continue
        params = {"queue": queue}
        unblocked = "TRUE"
        if per_key is not None:
            unblocked = _keys_at_limit(d, (yield from _running_by_key(d, queue)), per_key, params, held=False)
        at = number_or_none((yield Exec(d.stmt("due_at_in_queue", unblocked=unblocked), params))[0][0])
        if at is not None:
            admit_at = next_admission(tat, rate_count, window, now) if rate_count is not None else None
            times.append(at if admit_at is None else max(at, admit_at))
    return min(times, default=None)


def progress(
    d: Dialect, lease: Lease, fraction: float | None, message: str | None, clock: Clock, repeat: bool = False
) -> Op[HeartbeatResult]:
    now = clock()
    args = {"fraction": fraction, "message": d.text(message), "now": now, "id": lease.job_id, "token": lease.token}
    rows = yield Exec(d.sql["progress"], args)
    if rows:
        return HeartbeatResult(lease.job_id, True, cancel_asked(rows[0][0]))
    yield from _refused(d, lease, "progress", now, repeat=repeat)
    return HeartbeatResult(lease.job_id, False)
