"""Every storage operation, written once for every backend and every way of running it.

An operation is a generator: it yields commands (run this named statement with these parameters,
notify these queues) and receives each statement's rows; what it returns is the operation's
result. It holds the rules (fencing by lease token, the guards of the transition table, which
events are recorded, how a repeated write is recognised) and no I/O. A backend drives it inside
one transaction of its own (``SqlStore``), retrying the whole operation as its locking needs;
the same generator can be driven on a caller's connection or by an ``async`` runner, without a
second copy of any rule. This is psycopg's design (``psycopg/generators.py``: the protocol
written once as generators, driven by a blocking and by an asyncio ``wait``), applied one level
up; procrastinate's alternative (one async core, sync wrappers) makes every sync call pay for an
event loop, and its hand-written twins show how copies drift.

SQL texts live with each dialect (``<backend>/sql/<table>.sql``); the dialect also says how a list
parameter is written (``jobq.backends.statements.Dialect``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, NamedTuple, TypeVar

from jobq.backends.base import (
    LATEST_FINISHED_WINDOW,
    STATS_FINISHED_WINDOW,
    ActionResult,
    Bucket,
    Clock,
    Completion,
    Failure,
    HeartbeatResult,
    JobFilter,
    Lease,
    MetricEvent,
    NewJob,
    Page,
    Progress,
    QueueGauges,
    QueueStats,
    RescueResult,
    ScheduleAction,
    ScheduleInfo,
    WorkerEnd,
    WorkerInfo,
)
from jobq.backends.common import (
    APPLIED_STATUS,
    HISTORY_SAMPLE_LIMIT,
    already_applied,
    build_buckets,
    clip,
    event_from_row,
    job_from_row,
    plan_operator_action,
    plan_rescue,
    worker_from_row,
)
from jobq.backends.statements import Dialect, Params
from jobq.errors import DuplicateJob, StorageError
from jobq.job import Action, Event, EventKind, Job, JobStatus

#: The statuses a job ends in (it has a ``finished_at``).
TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value})

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


# Commands are NamedTuples: one is made for every statement of every operation, and a tuple is
# the cheapest object Python builds (a frozen dataclass cost ~1 us more each, on the hot path).
class Exec(NamedTuple):
    """Run one statement; the operation receives its rows (empty when it returns none).

    ``alone``: the operation's only command (it yields nothing after it), so a backend may run it
    as a transaction of its own (PostgreSQL: one autocommit statement, one round trip instead of
    BEGIN, statement, COMMIT). On a caller's connection it simply runs in the caller's transaction."""

    sql: str
    params: Params = {}
    alone: bool = False


class ExecMany(NamedTuple):
    """Run one statement once per parameter set; the operation receives every returned row."""

    sql: str
    params: Sequence[Params]


class Notify(NamedTuple):
    """Once the transaction commits, wake idle workers of these queues, and whoever waits for
    one of the ``finished`` jobs (``Queue.wait``)."""

    queues: frozenset[str]
    finished: frozenset[int] = frozenset()


Command = Exec | ExecMany | Notify
Op = Generator[Command, Rows, T]


def drive(op: Op[T], run: Callable[[Command], Rows]) -> T:
    """Run ``op`` to its end, ``run`` executing each command it yields (the blocking runner)."""
    try:
        command = next(op)
        while True:
            command = op.send(run(command))
    except StopIteration as stop:
        result: T = stop.value
        return result


async def adrive(op: Op[T], run: Callable[[Command], Awaitable[Rows]]) -> T:
    """Run ``op`` to its end from asyncio, ``run`` awaiting each command (the same rules, no copy)."""
    try:
        command = next(op)
        while True:
            command = op.send(await run(command))
    except StopIteration as stop:
        result: T = stop.value
        return result


def _event(d: Dialect, job_id: int, at: float, kind: EventKind, actor: str | None, attempt: int | None,
           detail: dict[str, Any] | None) -> Params:  # fmt: skip
    return {
        "job_id": job_id,
        "at": at,
        "kind": kind.value,
        "actor": d.text(actor),
        "attempt": attempt,
        "detail": None if detail is None else d.text(json.dumps(detail)),
    }


def _by_job_id(leases: Sequence[Lease]) -> list[int]:
    """Indexes of ``leases`` in job id order: every transaction touches rows in id order, so two
    of them never wait on each other in a cycle (no deadlock on PostgreSQL)."""
    return sorted(range(len(leases)), key=lambda i: leases[i].job_id)


def _sorted_jobs(rows: Rows) -> list[Job]:
    return sorted((job_from_row(r) for r in rows), key=lambda j: (j.priority, j.run_at, j.id))


# -- schema -------------------------------------------------------------------------------------
def migrate(d: Dialect, migrations: Sequence[Sequence[str]], where: str, *, create: bool = True) -> Op[int]:
    """Apply the migrations not applied yet, in order, each recorded in ``jobq_schema``; returns
    the version found. Only append to a backend's migrations: never edit a released one.

    ``create=False``: a database without jobq's schema is an error (a read-only viewer says so
    rather than show an empty queue), raised before anything is written."""
    yield Exec(d.sql["schema_table"])
    current = int((yield Exec(d.sql["schema_version"]))[0][0])
    if current == 0 and not create:
        raise StorageError(f"no jobq queue in {where} (start a producer or worker to create it)")
    if current > len(migrations):
        raise StorageError(
            f"{where}: schema version {current} is newer than this jobq knows ({len(migrations)}); upgrade jobq"
        )
    for version in range(current + 1, len(migrations) + 1):
        for statement in migrations[version - 1]:
            yield Exec(statement)
        yield Exec(d.sql["record_version"], {"version": version, "at": time.time()})
    return current


# -- producers -----------------------------------------------------------------------------------
#: How many times one enqueue looks for a key's holder that keeps finishing between the insert
#: that conflicted and the look-up (each round needs another producer to take the key meanwhile).
KEY_ROUNDS_MAX = 20


def enqueue(d: Dialect, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()) -> Op[list[int]]:
    if not traces and "enqueue_with_events" in d.sql and all(j.idempotency_key is None for j in jobs):
        return (yield from _enqueue_alone(d, jobs, now))
    rows = [
        {
            "queue": j.queue,
            "task": j.task,
            "payload": j.payload_json,
            "priority": j.priority,
            "run_at": j.run_at,
            "max_attempts": j.max_attempts,
            "timeout": j.timeout,
            "key": j.idempotency_key,
            "key_scope": j.key_scope,
            "key_expires_at": j.key_expires_at,
            "now": now,
            "policy": j.policy_json,
        }
        for j in jobs
    ]
    if all(j.idempotency_key is None for j in jobs):
        # No key, no conflict: one prepared statement stepped for the whole batch (1.6x faster).
        ids = [row[0] for row in (yield ExecMany(d.sql["insert_job"], rows))]
        inserted = ids
    else:
        ids, inserted = [], []
        for job, row in zip(jobs, rows, strict=True):
            job_id, new = yield from _insert_keyed(d, job, row, now)
            ids.append(job_id)
            if new:
                inserted.append(job_id)
    if inserted:
        yield ExecMany(d.sql["insert_event"], [_event(d, i, now, EventKind.ENQUEUED, None, 0, None) for i in inserted])
    if traces:
        # Only while tracing is on (the facade passes no traces otherwise); a job that already
        # existed (a known idempotency key) keeps the context of the enqueue that made it.
        made = set(inserted)
        contexts = [{"id": i, "context": t} for i, t in zip(ids, traces, strict=True) if t and i in made]
        if contexts:
            yield ExecMany(d.sql["set_trace_context"], contexts)
    due = frozenset(j.queue for j in jobs if j.run_at <= now)
    if due:
        yield Notify(due)
    return ids


def _enqueue_alone(d: Dialect, jobs: Sequence[NewJob], now: float) -> Op[list[int]]:
    """Jobs without keys, their events and the wake-up in one statement (dialects that have it)."""
    rows = [
        [j.queue, j.task, j.payload_json, j.priority, j.run_at, j.max_attempts, j.timeout, j.policy_json] for j in jobs
    ]
    due = sorted({j.queue for j in jobs if j.run_at <= now})
    params: Params = {"jobs": json.dumps(rows), "now": now, "wake": json.dumps(due)}
    # Ids come from one sequence in the order of the rows: ascending ids are the jobs in order.
    return sorted(row[0] for row in (yield Exec(d.sql["enqueue_with_events"], params, alone=True)))


def _refusal_detail(d: Dialect, op: str, lease: Lease) -> str | None:
    """The detail of a ``stale_write_refused`` event (also built by ``_refused``)."""
    return d.text(json.dumps({"operation": op, "token": lease.token}))


def _insert_keyed(d: Dialect, job: NewJob, row: Params, now: float) -> Op[tuple[int, bool]]:
    """Insert a job with a key, or name the job holding the key: ``(id, inserted)``.

    The unique index decides (never a read before the write), so concurrent producers cannot both
    take a key. A conflict is with a row that held the key when the insert ran; by the look-up it
    may have let go (an 'active' job finished, a 'ttl' key expired, a purge): then try again."""
    key = job.idempotency_key
    for _ in range(KEY_ROUNDS_MAX):
        found = yield Exec(d.sql["insert_job"], row)
        if found:
            return found[0][0], True
        if (yield Exec(d.sql["release_expired_key"], {"key": key, "now": now})):
            continue  # an expired 'ttl' holder let go in this transaction: the key is free
        holder = yield Exec(d.sql["job_id_by_key"], {"key": key})
        if holder:
            if job.on_conflict == "raise":
                raise DuplicateJob(str(key), holder[0][0])
            return holder[0][0], False
    raise StorageError(f"key {key!r}: its holder kept changing over {KEY_ROUNDS_MAX} attempts; try again")


# -- workers ------------------------------------------------------------------------------------
def claim(
    d: Dialect, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, clock: Clock, nonce: str
) -> Op[list[Job]]:
    """Each lease token is the claim's ``nonce`` plus the job id: unique per lease, and a claim
    whose COMMIT reply was lost can read back what it handed out (``claimed_by_nonce``)."""
    now = clock()  # under the lock (SQLite) / in the transaction: a lease runs from when granted
    params: Params = {"worker": d.text(worker_id), "nonce": nonce, "now": now, "expires": now + lease_seconds}
    params["limit"] = limit
    if "claim_with_events" in d.sql:  # the claim and its events in one statement
        statement = d.stmt("claim_with_events", queues=d.any_of("queue", "q", queues, params))
        return _sorted_jobs((yield Exec(statement, params, alone=True)))
    # A dialect may have a cheaper statement for one job (SQLite: a scalar subquery, no IN list).
    name = "claim_one" if limit == 1 and "claim_one" in d.sql else "claim"
    jobs = _sorted_jobs((yield Exec(d.stmt(name, queues=d.any_of("queue", "q", queues, params)), params)))
    if jobs:
        # One event per job, built from a shared base: this runs for every job of every batch.
        base = _event(d, 0, now, EventKind.CLAIMED, worker_id, None, None)
        yield ExecMany(d.sql["insert_event"], [{**base, "job_id": j.id, "attempt": j.attempts} for j in jobs])
    return jobs


def claimed_by_nonce(d: Dialect, worker_id: str, nonce: str) -> Op[list[Job]]:
    return _sorted_jobs((yield Exec(d.sql["claimed_by_nonce"], {"worker": d.text(worker_id), "nonce": nonce})))


def _refused(
    d: Dialect, lease: Lease, op: str, now: float, *, repeat: bool = False, applied_as: str | None = None
) -> Op[bool]:
    """Record a refused worker write. A ``repeat`` (of a write whose outcome was unknown) that had
    been applied (as ``applied_as``, default ``op``: see ``common.APPLIED_STATUS``) is not
    refused: True, nothing recorded."""
    if repeat and (applied_as or op) in APPLIED_STATUS:
        rows = yield Exec(d.sql["lease_state"], {"id": lease.job_id})
        if already_applied(applied_as or op, lease.token, rows[0] if rows else None):
            return True
    event = _event(d, lease.job_id, now, EventKind.STALE_WRITE_REFUSED, lease.worker_id, None, None)
    yield Exec(d.sql["insert_event"], {**event, "detail": _refusal_detail(d, op, lease)})
    return False


def heartbeat(d: Dialect, leases: Sequence[Lease], lease_seconds: float, clock: Clock) -> Op[list[HeartbeatResult]]:
    if len(leases) == 1 and "heartbeat_one" in d.sql:
        # One statement: it locks the row, adds any lock wait to the lease, records a refusal.
        lease, now = leases[0], clock()
        args = {**_one_write(d, lease, now, "heartbeat"), "expires": now + lease_seconds}
        rows = yield Exec(d.sql["heartbeat_one"], args, alone=True)
        return [HeartbeatResult(lease.job_id, True, bool(rows[0][0])) if rows else HeartbeatResult(lease.job_id, False)]
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
            out[i] = HeartbeatResult(lease.job_id, True, bool(rows[0][0]))
        else:
            # A lease whose own completion landed (a handler completing in its application's
            # transaction, ``JobContext.complete(conn=...)``, commits while a heartbeat waits for
            # its lock) is over, not stale: nothing to record. Costs a read on refusals only.
            yield from _refused(d, lease, "heartbeat", now, repeat=True, applied_as="complete")
            out[i] = HeartbeatResult(lease.job_id, False)
    return [r for r in out if r is not None]


def _one_write(d: Dialect, lease: Lease, now: float, op: str) -> Params:
    """Parameters every one-statement worker write takes: its fence, actor and refusal detail."""
    return {
        "now": now,
        "id": lease.job_id,
        "token": lease.token,
        "actor": d.text(lease.worker_id),
        "refused": _refusal_detail(d, op, lease),
    }


def complete(d: Dialect, items: Sequence[Completion], clock: Clock, repeat: bool) -> Op[list[bool]]:
    now = clock()
    if len(items) == 1 and not repeat and "complete_one" in d.sql:
        # The write, its event or the refusal's, in one statement (a repeat needs to read first).
        item = items[0]
        params = _one_write(d, item.lease, now, "complete")
        params["result"] = item.result_json
        params["detail"] = d.text(json.dumps({"note": item.note})) if item.note else None
        return [bool((yield Exec(d.sql["complete_one"], params, alone=True)))]
    order = _by_job_id([i.lease for i in items])
    args = [
        {"now": now, "result": items[i].result_json, "id": items[i].lease.job_id, "token": items[i].lease.token}
        for i in order
    ]
    # One prepared statement stepped for the whole group commit; RETURNING names the (job, token)
    # pairs whose lease still held, the others are refused and recorded.
    attempts = {(job_id, token): n for job_id, token, n in (yield ExecMany(d.sql["complete"], args))}
    done = [False] * len(items)
    events = []
    base = _event(d, 0, now, EventKind.COMPLETED, None, None, None)
    for i in order:
        item, lease = items[i], items[i].lease
        n = attempts.get((lease.job_id, lease.token))
        if n is not None:
            event = {**base, "job_id": lease.job_id, "actor": d.text(lease.worker_id), "attempt": n}
            if item.note:
                event["detail"] = d.text(json.dumps({"note": item.note}))
            events.append(event)
            done[i] = True
        else:
            done[i] = yield from _refused(d, lease, "complete", now, repeat=repeat)
    if events:
        yield ExecMany(d.sql["insert_event"], events)
        yield Notify(frozenset(), frozenset(e["job_id"] for e in events))
    return done


def _within(op: Op[T]) -> Op[T]:
    """``op`` as one part of a larger operation: none of its commands may run ``alone`` (its own
    transaction), since more commands follow in the same transaction."""
    try:
        command = next(op)
        while True:
            if isinstance(command, Exec) and command.alone:
                command = command._replace(alone=False)
            command = op.send((yield command))
    except StopIteration as stop:
        result: T = stop.value
        return result


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
) -> Op[tuple[list[bool], list[Job]]]:
    """Completions, then the next claim, in one transaction: a worker that runs one job at a time
    commits once per job instead of twice. The two steps are the ``complete`` and ``claim``
    operations unchanged (fencing, events, lease tokens)."""
    done = yield from _within(complete(d, items, clock, repeat))
    jobs: list[Job] = []
    if limit > 0:
        jobs = yield from _within(claim(d, worker_id, queues, limit, lease_seconds, clock, nonce))
    return done, jobs


def completed_and_claimed(
    d: Dialect, items: Sequence[Completion], clock: Clock, worker_id: str, nonce: str
) -> Op[tuple[list[bool], list[Job]]]:
    """After a ``complete_and_claim`` whose outcome is unknown: the completions repeated (a
    committed one is recognised) and the jobs its nonce leased, if it committed."""
    done = yield from complete(d, items, clock, True)
    jobs = yield from claimed_by_nonce(d, worker_id, nonce)
    return done, jobs


def fail(d: Dialect, items: Sequence[Failure], clock: Clock, repeat: bool) -> Op[list[bool]]:
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
        params.update(retry_at=item.retry_at, error=error, detail=d.text(json.dumps(info)))
        return [bool((yield Exec(d.sql[statement], params, alone=True)))]
    out = [False] * len(items)
    finished: set[int] = set()
    for i in _by_job_id([item.lease for item in items]):
        item, lease = items[i], items[i].lease
        error = d.text(item.error) or ""
        args = {"now": now, "retry_at": item.retry_at, "error": error, "id": lease.job_id, "token": lease.token}
        detail: dict[str, Any] = {"error": clip(error)}
        if item.retry_at is not None:
            op, kind, detail = "retry", EventKind.RETRY_SCHEDULED, {**detail, "retry_at": item.retry_at}
        else:
            op, kind = "fail", EventKind.FAILED
        rows = yield Exec(d.sql[op], args)
        if rows:
            yield Exec(d.sql["insert_event"], _event(d, lease.job_id, now, kind, lease.worker_id, rows[0][0], detail))
            out[i] = True
            if item.retry_at is None:
                finished.add(lease.job_id)
        else:
            out[i] = yield from _refused(d, lease, "fail", now, repeat=repeat, applied_as=op)
    if finished:
        yield Notify(frozenset(), frozenset(finished))
    return out


def release(d: Dialect, leases: Sequence[Lease], clock: Clock, reason: str, repeat: bool) -> Op[list[bool]]:
    # Released jobs are due at once: wake an idle worker to take them.
    return _simple_worker_write(d, "release", EventKind.RELEASED, leases, clock, {"reason": reason}, repeat, True)


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
            yield Exec(d.sql["insert_event"], _event(d, lease.job_id, now, kind, lease.worker_id, rows[0][0], detail))
            queues.add(rows[0][1])
            out[i] = True
            if finishes:
                finished.add(lease.job_id)
        else:
            out[i] = yield from _refused(d, lease, kind.value, now, repeat=repeat)
    if (notify and queues) or finished:
        yield Notify(frozenset(queues) if notify else frozenset(), frozenset(finished))
    return out


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
) -> Op[list[RescueResult]]:
    now = clock()
    gone = set(gone_owners)
    out = []
    for job_id, owner, token, attempts, max_attempts, cancel_requested, task, policy in (
        yield _expired(d, "expired", cutoff(now) if cutoff else now, gone_owners)
    ):
        if attempts_limit is not None:
            max_attempts = attempts_limit(task, policy, max_attempts)
        plan = plan_rescue(owner, attempts, max_attempts, bool(cancel_requested), now, backoff, owner in gone)
        args = {"status": plan.status, "now": now, "run_at": plan.run_at, "error": plan.error, "id": job_id}
        if (yield Exec(d.sql["rescue"], {**args, "token": token})):  # still the lease it read
            detail = {"previous_owner": owner, "run_at": plan.run_at}
            yield Exec(d.sql["insert_event"], _event(d, job_id, now, plan.kind, actor, attempts, detail))
            out.append(RescueResult(job_id, plan.outcome, owner))
    return out


def next_due_at(d: Dialect, queues: Sequence[str]) -> Op[float | None]:
    params: Params = {}
    rows = yield Exec(d.stmt("next_due_at", queues=d.any_of("queue", "q", queues, params)), params)
    return rows[0][0] if rows else None


# -- operators ----------------------------------------------------------------------------------
def _targets(d: Dialect, where: JobFilter) -> Op[list[tuple[int, str]]]:
    """The jobs an operator action applies to (locked in id order where the dialect locks rows).

    Ids named in ``where.ids`` that match nothing come last with status "" (not found)."""
    params: Params = {}
    found = [(row[0], row[1]) for row in (yield Exec(d.stmt("targets", where=d.where(where, params)), params))]
    if where.ids:  # name the ids that do not exist, so a caller can say "not found"
        known = {job_id for job_id, _ in found}
        found += [(i, "") for i in where.ids if i not in known]
    return found


def resubmit(d: Dialect, where: JobFilter, actor: str, now: float) -> Op[list[ActionResult]]:
    out = []
    queues: set[str] = set()
    for job_id, status in (yield from _targets(d, where)):
        action, result = plan_operator_action("resubmit", job_id, status)
        if action is Action.RESUBMIT:
            rows = yield Exec(d.sql["resubmit"], {"now": now, "id": job_id, "status": status})
            if not rows:  # the rows are locked (or the store is): only a held key refuses it
                key = (yield Exec(d.sql["job_key"], {"id": job_id}))[0][0]
                holder = (yield Exec(d.sql["job_id_by_key"], {"key": key}))[0][0]
                message = f"job {job_id}: key {key!r} is held by job {holder}; not resubmitted"
                out.append(ActionResult(job_id, False, JobStatus(status), message, held_by=holder))
                continue
            queues.update(row[0] for row in rows)
            detail = {"from": status}
            yield Exec(d.sql["insert_event"], _event(d, job_id, now, EventKind.RESUBMITTED, actor, 0, detail))
        out.append(result)
    if queues:
        yield Notify(frozenset(queues))
    return out


def cancel(d: Dialect, where: JobFilter, actor: str, now: float) -> Op[list[ActionResult]]:
    out = []
    finished: set[int] = set()
    for job_id, status in (yield from _targets(d, where)):
        action, result = plan_operator_action("cancel", job_id, status)
        if action is Action.CANCEL:
            yield Exec(d.sql["cancel"], {"now": now, "id": job_id, "status": status})
            event = _event(d, job_id, now, EventKind.CANCELLED, actor, None, {"from": status})
            yield Exec(d.sql["insert_event"], event)
            finished.add(job_id)
        elif action is Action.REQUEST_CANCEL:
            yield Exec(d.sql["request_cancel"], {"now": now, "id": job_id})
            event = _event(d, job_id, now, EventKind.CANCEL_REQUESTED, actor, None, None)
            yield Exec(d.sql["insert_event"], event)
        out.append(result)
    if finished:
        yield Notify(frozenset(), frozenset(finished))
    return out


def purge(d: Dialect, statuses: Sequence[JobStatus], finished_before: float) -> Op[int]:
    """Delete finished jobs of ``statuses`` and their events; the last statement returns one row
    per deleted job."""
    params: Params = {"before": finished_before}
    fragment = d.any_of("status", "s", [s.value for s in statuses], params)
    rows: Rows = []
    for name in ("purge_events", "purge_jobs"):
        if name in d.sql:
            rows = yield Exec(d.stmt(name, statuses=fragment), params)
    return len(rows)


# -- reads --------------------------------------------------------------------------------------
def get(d: Dialect, job_id: int) -> Op[Job | None]:
    rows = yield Exec(d.sql["get_job"], {"id": job_id})
    return job_from_row(rows[0]) if rows else None


def events(d: Dialect, job_id: int) -> Op[list[Event]]:
    return [event_from_row(r) for r in (yield Exec(d.sql["events_of_job"], {"id": job_id}))]


def recent_events(d: Dialect, limit: int, kinds: Sequence[str]) -> Op[list[Event]]:
    params: Params = {"limit": limit}
    where = (" WHERE " + d.any_of("kind", "k", list(kinds), params)) if kinds else ""
    return [event_from_row(r) for r in (yield Exec(d.stmt("recent_events", where=where), params))]


def list_jobs(d: Dialect, where: JobFilter, page: Page) -> Op[list[Job]]:
    params: Params = {"limit": page.limit, "offset": page.offset}
    order = d.page_order(page.sort, page.descending)
    rows = yield Exec(d.stmt("list_jobs", where=d.where(where, params), order=order), params)
    return [job_from_row(r) for r in rows]


def count_jobs(d: Dialect, where: JobFilter) -> Op[int]:
    params: Params = {}
    return int((yield Exec(d.stmt("count_jobs", where=d.where(where, params)), params))[0][0])


def list_page(d: Dialect, where: JobFilter, page: Page) -> Op[tuple[int, list[Job]]]:
    # One read transaction: the count and the rows describe the same moment ("1-4 of 3" cannot happen).
    total = yield from count_jobs(d, where)
    jobs = (yield from list_jobs(d, where, page)) if total > page.offset else []
    return total, jobs


def counts(d: Dialect) -> Op[dict[str, int]]:
    out = {s.value: 0 for s in JobStatus}
    out.update({status: int(n) for status, n in (yield Exec(d.sql["counts"]))})
    return out


def stats(d: Dialect, now: float, finished_window: int = STATS_FINISHED_WINDOW) -> Op[QueueStats]:
    by_queue: dict[str, dict[str, int]] = {}
    totals = {s.value: 0 for s in JobStatus}
    live = yield Exec(d.sql["counts_by_queue_live"])
    finished = yield Exec(d.sql["counts_by_queue_finished"], {"window": finished_window})
    for queue, status, n in [*live, *finished]:
        by_queue.setdefault(queue, {s.value: 0 for s in JobStatus})[status] = int(n)
        totals[status] = totals.get(status, 0) + int(n)
    capped = sum(int(n) for _, _, n in finished) >= finished_window and bool(
        (yield Exec(d.sql["finished_beyond"], {"window": finished_window}))
    )
    pending = [
        (str(q), int(n or 0), None if at is None else float(at), int(r or 0))
        for q, n, at, r in (yield Exec(d.sql["pending_by_queue"], {"now": now}))
    ]
    done = {kind: int(n) for kind, n in (yield Exec(d.sql["finished_by_kind"], {"since": now - 60}))}
    expired = (yield Exec(d.sql["expired_count"], {"now": now}))[0][0]
    return QueueStats(
        counts=totals,
        by_queue=by_queue,
        oldest_pending_at=min((at for _, _, at, _ in pending if at is not None), default=None),
        completed_last_minute=done.get("completed", 0),
        failed_last_minute=done.get("failed", 0) + done.get("expired", 0),
        expired_leases=int(expired),
        finished_window=finished_window if capped else None,
        due_by_queue={q: n for q, n, _, _ in pending if n},
        oldest_due_by_queue={q: at for q, _, at, _ in pending if at is not None},
        retrying_by_queue={q: r for q, _, _, r in pending if r},
    )


def latest_jobs(d: Dialect, status: JobStatus | None, limit: int) -> Op[list[Job]]:
    params: Params = {"limit": limit, "window": limit}
    branches = []
    if status in (None, JobStatus.PROCESSING):
        branches.append(d.sql["latest_processing"])
    if status in (None, JobStatus.PENDING):
        branches.append(d.sql["latest_pending"])
    if status is None:
        # Unfiltered, only the newest ``limit`` finished jobs can rank among the first ``limit``.
        branches.append(d.stmt("latest_finished", status=""))
    elif status.value in TERMINAL_STATUSES:
        params["window"] = max(limit, LATEST_FINISHED_WINDOW)
        branches.append(d.stmt("latest_finished", status=" WHERE " + d.any_of("status", "s", [status.value], params)))
    rows = yield Exec(d.stmt("latest_jobs", candidates=" UNION ALL ".join(branches)), params)
    return [job_from_row(r) for r in rows]


def history(d: Dialect, since: float, bucket_seconds: float, now: float) -> Op[list[Bucket]]:
    kinds = yield Exec(d.sql["history_kinds"], {"since": since, "bucket": bucket_seconds})
    durations = yield Exec(d.sql["history_durations"], {"since": since, "limit": HISTORY_SAMPLE_LIMIT})
    pending = int((yield Exec(d.sql["pending_count"]))[0][0])
    kind_counts = [(int(b), kind, int(n)) for b, kind, n in kinds]
    return build_buckets(since, bucket_seconds, now, kind_counts, durations, pending)


# -- observability ------------------------------------------------------------------------------
def progress(
    d: Dialect, lease: Lease, fraction: float | None, message: str | None, clock: Clock
) -> Op[HeartbeatResult]:
    now = clock()
    args = {"fraction": fraction, "message": d.text(message), "now": now, "id": lease.job_id, "token": lease.token}
    rows = yield Exec(d.sql["progress"], args)
    if rows:
        return HeartbeatResult(lease.job_id, True, bool(rows[0][0]))
    yield from _refused(d, lease, "progress", now)
    return HeartbeatResult(lease.job_id, False)


def progress_of(d: Dialect, job_ids: Sequence[int]) -> Op[dict[int, Progress]]:
    params: Params = {}
    rows = yield Exec(d.stmt("progress_of_jobs", ids=d.any_of("id", "ids", sorted(set(job_ids)), params)), params)
    return {int(r[0]): Progress(int(r[0]), r[1], r[2], r[3]) for r in rows}


def trace_contexts(d: Dialect, job_ids: Sequence[int]) -> Op[dict[int, str]]:
    params: Params = {}
    rows = yield Exec(d.stmt("trace_contexts", ids=d.any_of("id", "ids", sorted(set(job_ids)), params)), params)
    return {int(r[0]): str(r[1]) for r in rows}


def queue_gauges(d: Dialect, now: float) -> Op[dict[str, QueueGauges]]:
    pending = {
        q: (int(n), int(due or 0), oldest) for q, n, due, oldest in (yield Exec(d.sql["metric_pending"], {"now": now}))
    }
    running = {q: (int(n), int(x or 0)) for q, n, x in (yield Exec(d.sql["metric_processing"], {"now": now}))}
    out = {}
    for queue in sorted(pending.keys() | running.keys()):
        n, due, oldest = pending.get(queue, (0, 0, None))
        r, expired = running.get(queue, (0, 0))
        out[queue] = QueueGauges(due, n - due, oldest, r, expired)
    return out


def last_event_id(d: Dialect) -> Op[int]:
    return int((yield Exec(d.sql["metric_last_event_id"]))[0][0])


def events_after(d: Dialect, after_id: int, limit: int) -> Op[list[MetricEvent]]:
    rows = yield Exec(d.sql["metric_events"], {"after": after_id, "limit": limit})
    return [MetricEvent(int(r[0]), str(r[1]), r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]


# -- worker registry ----------------------------------------------------------------------------
def register_worker(d: Dialect, info: WorkerInfo) -> Op[None]:
    yield Exec(
        d.sql["register_worker"],
        {
            "id": d.text(info.id),
            "name": d.text(info.name),
            "host": d.text(info.host),
            "pid": info.pid,
            "queues": json.dumps(list(info.queues)),
            "started_at": info.started_at,
            "last_seen_at": info.last_seen_at,
            "stopped_at": info.stopped_at,
            "current_jobs": json.dumps(list(info.current_jobs)),
            "jobs_done": info.jobs_done,
            "jobs_failed": info.jobs_failed,
            "wake_address": info.wake_address,
            "process_table": d.text(info.process_table),
        },
    )


def worker_seen(
    d: Dialect, worker_id: str, now: float, current_jobs: Sequence[int], done: int, failed: int
) -> Op[None]:
    params = {"now": now, "current": json.dumps(list(current_jobs)), "done": done, "failed": failed}
    yield Exec(d.sql["worker_seen"], {**params, "id": d.text(worker_id)})


def worker_stopped(d: Dialect, worker_id: str, now: float, reason: WorkerEnd) -> Op[None]:
    yield Exec(d.sql["worker_stopped"], {"now": now, "id": d.text(worker_id), "reason": WorkerEnd(reason).value})


def mark_lost_workers(d: Dialect, seen_before: float, now: float) -> Op[list[str]]:
    rows = yield Exec(d.sql["mark_lost_workers"], {"now": now, "before": seen_before})
    return [str(r[0]) for r in rows]


def list_workers(d: Dialect, limit: int) -> Op[list[WorkerInfo]]:
    return [worker_from_row(r) for r in (yield Exec(d.sql["list_workers"], {"limit": limit}))]


def live_wake_addresses(d: Dialect, seen_after: float) -> Op[list[str]]:
    return [str(r[0]) for r in (yield Exec(d.sql["live_wake_addresses"], {"seen_after": seen_after}))]


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
    action = {"name": name, "action": "pause" if paused else "resume", "actor": actor, "now": now}
    yield Exec(d.sql["insert_schedule_action"], action)
    return True


def delete_schedule(d: Dialect, name: str) -> Op[bool]:
    return bool((yield Exec(d.sql["delete_schedule"], {"name": name})))
