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
import functools
import json
import math
import random
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
    CompletionTotals,
    ControlEvent,
    ControlUpdate,
    DueHistory,
    EventTotals,
    Failure,
    HeartbeatResult,
    HistogramBounds,
    HistogramCounts,
    JobFilter,
    Lease,
    MetricEvent,
    NewJob,
    Page,
    Progress,
    QueueControl,
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
    attempt_detail,
    attempt_from_row,
    build_buckets,
    clip,
    event_from_row,
    history_of,
    job_from_row,
    plan_operator_action,
    plan_rescue,
    recent_history,
    worker_from_row,
)
from jobq.backends.due_history import build_due_history
from jobq.backends.statements import Dialect, Params
from jobq.errors import DuplicateJob, StorageError
from jobq.flow import control_defect, report_defect
from jobq.job import Action, Event, EventKind, Job, JobStatus
from jobq.payloads import loads

#: The statuses a job ends in (it has a ``finished_at``).
TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value})

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


# Commands are NamedTuples: one is made for every statement of every operation, and a tuple is
# the cheapest object Python builds (a frozen dataclass cost ~1 us more each, on the hot path).
class Exec(NamedTuple):
    """Run one statement; the operation receives its rows (empty when it returns none).

    ``alone``: the statement is a transaction of its own, so a backend may send it by itself
    (PostgreSQL: one autocommit statement, one round trip instead of BEGIN, statement, COMMIT).
    An operation that starts with one yields only such statements after it (each commits as it
    runs: one that is sent again, like a keyed enqueue's, must be safe to repeat). On a caller's
    connection they simply run in the caller's transaction."""

    sql: str
    params: Params | Sequence[Any] = {}
    """Named parameters, or values bound by position (SQLite's multi-row insert: thousands of
    values bound by name cost 30x more)."""
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
    if len(rows) == 1:  # the per-job claim: nothing to sort
        return [job_from_row(rows[0])]
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
    plain = all(j.idempotency_key is None and j.concurrency_key is None for j in jobs)
    if len(jobs) == 1 and plain and not traces and "enqueue_with_events" not in d.sql:
        return (yield from _enqueue_one(d, jobs[0], now))
    if not traces and plain and "enqueue_with_events" in d.sql:
        return (yield from _enqueue_alone(d, jobs, now))
    if not traces and len(jobs) == 1 and jobs[0].concurrency_key is None and "enqueue_keyed" in d.sql:
        return [(yield from _enqueue_keyed_alone(d, jobs[0], now))]
    if not traces and plain and "insert_jobs_values" in d.sql:
        return (yield from _enqueue_values(d, jobs, now))
    rows = [_job_params(j, now) for j in jobs]
    if not any(j.idempotency_key is not None for j in jobs):
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
    # No `enqueued` event: the job row's created_at is that entry (common.enqueued_event).
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


def enqueued_by_key(d: Dialect, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()) -> Op[list[int]]:
    """After an enqueue of keyed jobs whose outcome is unknown (its commit reply was lost): the
    same enqueue again, where each key now names its holder, the job the first try made if it
    committed. For ``on_conflict="raise"`` a holder is this call's own when it was made at this
    call's ``now`` (both tries store it as ``created_at``); any other holder raises DuplicateJob."""
    if len(jobs) == 1 and not traces and jobs[0].concurrency_key is None and "enqueue_keyed" in d.sql:
        # The one-statement form, but in a transaction: a read may follow it.
        params: Params = {**_job_params(jobs[0], now), "due": jobs[0].run_at <= now}
        for _ in range(KEY_ROUNDS_MAX):
            if rows := (yield Exec(d.sql["enqueue_keyed"], params)):
                break
        else:
            raise StorageError(f"key {jobs[0].idempotency_key!r}: its holder kept changing; try again")
        ids = [int(rows[0][0])]
    else:
        ids = yield from enqueue(d, [dataclasses.replace(j, on_conflict="return") for j in jobs], now, traces)
    for job, job_id in zip(jobs, ids, strict=True):
        if job.on_conflict == "raise":
            holder = yield from get(d, job_id)
            if holder is None or holder.created_at != now:
                raise DuplicateJob(str(job.idempotency_key), job_id)
    return ids


def _job_params(j: NewJob, now: float) -> Params:
    """A new job's row, as every insert statement names its columns (a statement that does not
    name one, e.g. the keyed insert's concurrency key, leaves it out)."""
    return {
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
        "concurrency_key": j.concurrency_key,
        "policy": j.policy_json,
        "now": now,
    }


def _enqueue_one(d: Dialect, job: NewJob, now: float) -> Op[list[int]]:
    """One job without a key (``enqueue``'s usual call): the general path's statement, without
    its batch bookkeeping (it runs once per job: a third of the per-call CPU went there). One
    statement: the row is the whole record of the enqueue (issue 13: its `enqueued` event row
    was ~20 us of the ~75 us of CPU an SQLite enqueue took)."""
    job_id: int = (yield Exec(d.sql["insert_job"], _job_params(job, now)))[0][0]
    if job.run_at <= now:
        yield Notify(frozenset((job.queue,)))
    return [job_id]


def _enqueue_alone(d: Dialect, jobs: Sequence[NewJob], now: float) -> Op[list[int]]:
    """Jobs without keys and the wake-up in one statement (dialects that have it)."""
    rows = [
        [j.queue, j.task, j.payload_json, j.priority, j.run_at, j.max_attempts, j.timeout, j.policy_json] for j in jobs
    ]
    due = sorted({j.queue for j in jobs if j.run_at <= now})
    params: Params = {"jobs": json.dumps(rows), "now": now, "wake": json.dumps(due)}
    # Ids come from one sequence in the order of the rows: ascending ids are the jobs in order.
    return sorted(row[0] for row in (yield Exec(d.sql["enqueue_with_events"], params, alone=True)))


#: Jobs per multi-row INSERT. A full chunk's text repeats, so apsw reuses its prepared statement,
#: but only while the text stays under ~16 KB (34 characters a row): measured per job, 400 rows
#: 4.3 us, 480, 500 or 1,000 rows 5.5-6.8 us (prepared anew each time). 3,201 variables.
VALUES_CHUNK_ROWS = 400


@functools.cache
def _values_rows(n: int) -> str:
    """The VALUES list of ``insert_jobs_values`` for ``n`` jobs (one string object per size)."""
    return ", ".join(["(?1, ?1, ?, ?, ?, ?, ?, ?, ?, ?)"] * n)


def _enqueue_values(d: Dialect, jobs: Sequence[NewJob], now: float) -> Op[list[int]]:
    """Jobs without keys, a chunk per multi-row INSERT (dialects that have it): no per-job
    statement, no per-job dict, no event rows (history derives ``enqueued`` from the row)."""
    ids: list[int] = []
    for start in range(0, len(jobs), VALUES_CHUNK_ROWS):
        chunk = jobs[start : start + VALUES_CHUNK_ROWS]
        values: list[Any] = [now]
        for j in chunk:
            values += (j.queue, j.task, j.payload_json, j.priority, j.run_at, j.max_attempts, j.timeout, j.policy_json)
        rows = yield Exec(d.stmt("insert_jobs_values", rows=_values_rows(len(chunk))), values)
        ids += sorted(r[0] for r in rows)
    due = frozenset(j.queue for j in jobs if j.run_at <= now)
    if due:
        yield Notify(due)
    return ids


def _enqueue_keyed_alone(d: Dialect, job: NewJob, now: float) -> Op[int]:
    """One job with a key in one statement (dialects that have it): the insert, or the holder.

    No row back means the holder committed after the statement's snapshot or let go meanwhile
    (see the statement): sent again, each time its own transaction with a new snapshot."""
    params: Params = {**_job_params(job, now), "due": job.run_at <= now}
    for _ in range(KEY_ROUNDS_MAX):
        rows = yield Exec(d.sql["enqueue_keyed"], params, alone=True)
        if rows:
            job_id, inserted = rows[0]
            if not inserted and job.on_conflict == "raise":
                raise DuplicateJob(str(job.idempotency_key), job_id)
            return int(job_id)
    key = job.idempotency_key
    raise StorageError(f"key {key!r}: its holder kept changing over {KEY_ROUNDS_MAX} attempts; try again")


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
) -> Op[tuple[list[Job], bool]]:
    """Each lease token is the claim's ``nonce`` plus the job id: unique per lease, and a claim
    whose COMMIT reply was lost can read back what it handed out (``claimed_by_nonce``).

    Returns the jobs and whether queues under flow control remain for ``claim_controlled`` (a
    dialect whose claim is one statement sent alone, PostgreSQL, passes over paused and limited
    queues and says so; the caller then runs ``claim_controlled``, in a transaction of its own).

    No event is written: the row records the attempt (started_at, lease_owner, attempts), and a
    job's history derives its ``claimed`` entry from there (``common.history_of``; issue 13: the
    event row and its two indexes were half the pages a claim wrote)."""
    now = clock()  # under the lock (SQLite) / in the transaction: a lease runs from when granted
    params: Params = {"worker": d.text(worker_id), "nonce": nonce, "now": now, "expires": now + lease_seconds}
    params["limit"] = limit
    if "claim_flagged" in d.sql:  # the claim and whether controlled queues remain, one statement
        # One queue: whether it is paused or limited is one look-up before the scan (the planner
        # runs an uncorrelated subquery once and skips the scan when it says so); asked per
        # pending row instead, a claim of a limited queue walked its whole backlog to find
        # nothing (68 ms a claim with 20,000 due jobs, bench/flow_rows.py).
        uncontrolled = d.sql["uncontrolled_one" if len(queues) == 1 else "uncontrolled_each"]
        statement = d.stmt("claim_flagged", queues=d.any_of("queue", "q", queues, params), uncontrolled=uncontrolled)
        rows = yield Exec(statement, params, alone=True)
        controlled = bool(rows and rows[0][0])
        return _sorted_jobs([row[1:] for row in rows if row[1] is not None]), controlled
    # The write lock is held (BEGIN IMMEDIATE): what the claim and the read after it see of the
    # controls stays true until commit. The claim passes over paused and limited queues itself
    # ({uncontrolled}), so a claim that gets all it asked for is one statement: the controls are
    # read only when it got fewer (issue 13: that read was a quarter of a claim's statements).
    # A dialect may have a cheaper statement for one job (SQLite: a scalar subquery, no IN list).
    name = "claim_one" if limit == 1 and "claim_one" in d.sql else "claim"
    uncontrolled = d.sql["uncontrolled_one" if len(queues) == 1 else "uncontrolled_each"]
    statement = d.stmt(name, queues=d.any_of("queue", "q", queues, params), uncontrolled=uncontrolled)
    rows = yield Exec(statement, params)
    jobs = _sorted_jobs(rows)
    if len(jobs) < limit:
        cparams: Params = {}
        active = yield Exec(d.stmt("controls_active", queues=d.any_of("queue", "q", queues, cparams)), cparams)
        if active:
            names = [str(row[0]) for row in active]
            jobs += yield from claim_controlled(d, worker_id, names, limit - len(jobs), lease_seconds, clock, nonce)
    return jobs, False


# -- flow control -------------------------------------------------------------------------------
#: Due jobs a per-key claim reads beyond what it may take: jobs of one key that may run only once
#: more are passed over, and the next keys' jobs are taken instead (no head-of-line blocking).
PER_KEY_CANDIDATES_EXTRA = 64


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
    d: Dialect, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, clock: Clock, nonce: str
) -> Op[list[Job]]:
    """Claim from the paused or limited ``queues`` (docs/flow-control.md): their control rows are
    locked before their jobs are counted and claimed (PostgreSQL: FOR UPDATE; SQLite holds its
    write lock), so what runs is counted by one claim at a time and every limit holds across
    workers and hosts. A paused queue gives nothing; a concurrency limit gives at most its free
    slots; a per-key limit passes over jobs of keys at their limit; a rate limit admits one job
    when its next admission time has come and moves that time on by window/count (GCRA with no
    burst: at most ``count`` admissions in any ``window``)."""
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
            if tat is not None and tat > now:
                continue
            room = min(room, 1)
        lease: Params = {"worker": d.text(worker_id), "nonce": nonce, "now": now, "expires": now + lease_seconds}
        if per_key is None and "claim_limited" in d.sql:
            # One statement counts what runs, picks and leases the jobs.
            params = {**lease, "queue": queue, "room": room, "concurrency": concurrency}
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


def claimed_also(d: Dialect, worker_id: str, nonce: str, known: Sequence[Job]) -> Op[list[Job]]:
    """After a ``claim_controlled`` whose outcome is unknown: the jobs its nonce leased beyond ``known``."""
    seen = {j.id for j in known}
    return [j for j in (yield from claimed_by_nonce(d, worker_id, nonce)) if j.id not in seen]


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
    if c.rate_count is not None:
        room = min(room, 0 if c.next_admit_at is not None and c.next_admit_at > now else 1)
    held = 0
    if c.per_key is not None:
        keyed = yield from _running_by_key(d, c.queue)
        params: Params = {"queue": c.queue, "now": now}
        fragment = _keys_at_limit(d, keyed, c.per_key, params, held=True)
        if fragment != "FALSE":
            held = int((yield Exec(d.stmt("due_count", blocked=fragment), params))[0][0])
    return max(held, due - room)


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
    if len(items) == 1 and not repeat and not items[0].note and "complete_one" in d.sql:
        # The write or the refusal's event in one statement (a repeat needs to read first).
        params = _one_write(d, items[0].lease, now, "complete")
        params["result"] = items[0].result_json
        return [bool((yield Exec(d.sql["complete_one"], params, alone=True)))]
    order = _by_job_id([i.lease for i in items])
    args = [
        {"now": now, "result": items[i].result_json, "id": items[i].lease.job_id, "token": items[i].lease.token}
        for i in order
    ]
    # One prepared statement stepped for the whole group commit; RETURNING names the (job, token)
    # pairs whose lease still held, the others are refused and recorded. A completion writes no
    # event (the row records it, see ``claim``); only one with a note does, to keep the note.
    attempts = {(job_id, token): n for job_id, token, n in (yield ExecMany(d.sql["complete"], args))}
    done = [False] * len(items)
    noted = []
    finished = []
    for i in order:
        item, lease = items[i], items[i].lease
        n = attempts.get((lease.job_id, lease.token))
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
        jobs, controlled = yield from _within(claim(d, worker_id, queues, limit, lease_seconds, clock, nonce))
        if controlled and len(jobs) < limit:
            jobs += yield from claim_controlled(d, worker_id, queues, limit - len(jobs), lease_seconds, clock, nonce)
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
            detail.update(attempt_detail(rows[0][1]))  # the attempt's claim: the row's moves on
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
    finished: set[int] = set()
    for job_id, owner, token, attempts, max_attempts, cancel_requested, claimed_at, task, policy in (
        yield _expired(d, "expired", cutoff(now) if cutoff else now, gone_owners)
    ):
        if attempts_limit is not None:
            max_attempts = attempts_limit(task, policy, max_attempts)
        plan = plan_rescue(owner, attempts, max_attempts, bool(cancel_requested), now, backoff, owner in gone)
        args = {"status": plan.status, "now": now, "run_at": plan.run_at, "error": plan.error, "id": job_id}
        if (yield Exec(d.sql["rescue"], {**args, "token": token})):  # still the lease it read
            detail = {"previous_owner": owner, "run_at": plan.run_at, **attempt_detail(claimed_at, owner)}
            yield Exec(d.sql["insert_event"], _event(d, job_id, now, plan.kind, actor, attempts, detail))
            out.append(RescueResult(job_id, plan.outcome, owner))
            if plan.status in TERMINAL_STATUSES:
                finished.add(job_id)
    if finished:  # failed or cancelled here: wake whoever waits for them (Queue.wait)
        yield Notify(frozenset(), frozenset(finished))
    return out


def next_due_at(d: Dialect, queues: Sequence[str]) -> Op[float | None]:
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
        if rows and rows[0][0] is not None:
            times.append(float(rows[0][0]))
    for queue, paused, concurrency, per_key, rate_count, window, tat in active:
        if paused or control_defect(concurrency, per_key, rate_count, window, tat):
            continue  # a bad row holds the queue back like a pause (claim_controlled)
        if concurrency is not None and int((yield Exec(d.sql["running_count"], {"queue": queue}))[0][0]) >= concurrency:
            continue
        params = {"queue": queue}
        unblocked = "TRUE"
        if per_key is not None:
            unblocked = _keys_at_limit(d, (yield from _running_by_key(d, queue)), per_key, params, held=False)
        at = (yield Exec(d.stmt("due_at_in_queue", unblocked=unblocked), params))[0][0]
        if at is not None:
            times.append(max(float(at), float(tat)) if rate_count is not None and tat is not None else float(at))
    return min(times, default=None)


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
            detail: dict[str, Any] = {"from": status}
            if status == JobStatus.COMPLETED.value:
                # A worker's completion is recorded by the row alone, which the resubmit resets:
                # the event carries that attempt's claim and completion (common.carried_events).
                row = attempt_from_row((yield Exec(d.sql["attempt_of_job"], {"id": job_id}))[0])
                if row.lease_token is not None and row.finished_at is not None:
                    detail.update(attempt_detail(row.started_at, row.lease_owner, row.attempts))
                    detail["completed_at"] = row.finished_at
            rows = yield Exec(d.sql["resubmit"], {"now": now, "id": job_id, "status": status})
            if not rows:  # the rows are locked (or the store is): only a held key refuses it
                key = (yield Exec(d.sql["job_key"], {"id": job_id}))[0][0]
                holder = (yield Exec(d.sql["job_id_by_key"], {"key": key}))[0][0]
                message = f"job {job_id}: key {key!r} is held by job {holder}; not resubmitted"
                out.append(ActionResult(job_id, False, JobStatus(status), message, held_by=holder))
                continue
            queues.update(r[0] for r in rows)
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


def get_locked(d: Dialect, job_id: int) -> Op[Job | None]:
    """``get``, waiting for a transaction that holds the job's row (dialects that lock rows)."""
    rows = yield Exec(d.sql.get("get_job_locked", d.sql["get_job"]), {"id": job_id})
    return job_from_row(rows[0]) if rows else None


def register_waiter(d: Dialect, job_id: int, now: float, expires: float) -> Op[int]:
    """Record that someone waits for ``job_id`` (until ``expires``): finishing statements notify
    only jobs with such a row (dialects with ``register_waiter``). Returns the row's id."""
    rows = yield Exec(d.sql["register_waiter"], {"id": job_id, "now": now, "expires": expires}, alone=True)
    return int(rows[0][0])


def unregister_waiter(d: Dialect, waiter: int) -> Op[None]:
    yield Exec(d.sql["unregister_waiter"], {"waiter": waiter}, alone=True)


def events(d: Dialect, job_id: int) -> Op[list[Event]]:
    """The job's history: its stored events and the entries derived from its row."""
    stored = [event_from_row(r) for r in (yield Exec(d.sql["events_of_job"], {"id": job_id}))]
    rows = yield Exec(d.sql["attempt_of_job"], {"id": job_id})
    return history_of(stored, attempt_from_row(rows[0]) if rows else None)


#: The history kinds that are derived from job rows, not (only) stored.
_DERIVED_KINDS = frozenset({EventKind.ENQUEUED.value, EventKind.CLAIMED.value, EventKind.COMPLETED.value})


def recent_events(d: Dialect, limit: int, kinds: Sequence[str]) -> Op[list[Event]]:
    params: Params = {"limit": limit}
    where = (" WHERE " + d.any_of("kind", "k", list(kinds), params)) if kinds else ""
    stored = [event_from_row(r) for r in (yield Exec(d.stmt("recent_events", where=where), params))]
    if kinds and not _DERIVED_KINDS & set(kinds):
        return stored
    if kinds:  # the events that carry a claimed or completed entry are of other kinds
        more = yield Exec(d.stmt("recent_events", where=""), {"limit": limit})
        stored = list({e.id: e for e in [*stored, *map(event_from_row, more)]}.values())
    rows = [attempt_from_row(r) for r in (yield Exec(d.sql["recent_attempts"], {"limit": limit}))]
    return recent_history(stored, rows, limit, kinds)


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
    done["completed"] = int((yield Exec(d.sql["completed_since"], {"since": now - 60}))[0][0])
    expired = (yield Exec(d.sql["expired_count"], {"now": now}))[0][0]
    controlled = {c.queue: c for c in (yield from controls(d)) if c.active}
    waiting: dict[str, int] = {}
    for q, n, _, _ in pending:
        if n and q in controlled:
            running = by_queue.get(q, {}).get(JobStatus.PROCESSING.value, 0)
            held = yield from _waiting_on_limit(d, controlled[q], n, running, now)
            if held:
                waiting[q] = held
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
        waiting_on_limit_by_queue=waiting,
        controls=controlled,
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
    window = {"since": since, "bucket": bucket_seconds}
    kinds = [tuple(r) for r in (yield Exec(d.sql["history_kinds"], window))]
    # Enqueues, claims and completions are not all stored: counted from the rows and the carrying events.
    kinds += [(b, "enqueued", n) for b, n in (yield Exec(d.sql["history_enqueued"], window))]
    kinds += [(b, "completed", n) for b, n in (yield Exec(d.sql["history_completed"], window))]
    for name in ("history_row_claims", "history_carried_claims"):
        kinds += [(b, "claimed", n) for b, n in (yield Exec(d.sql[name], window))]
    durations = yield Exec(d.sql["history_durations"], {"since": since, "limit": HISTORY_SAMPLE_LIMIT})
    pending = int((yield Exec(d.sql["pending_count"]))[0][0])
    kind_counts = [(int(b), kind, int(n)) for b, kind, n in kinds]
    return build_buckets(since, bucket_seconds, now, kind_counts, durations, pending)


def due_history(d: Dialect, since: float, bucket_seconds: float, now: float, limit: int) -> Op[DueHistory]:
    # Three bounded reads in one transaction (a consistent moment): the due PENDING jobs grouped by
    # bucket, the PROCESSING rows, and the newest `limit` finished rows.
    args = {"since": float(since), "bucket": float(bucket_seconds), "now": float(now)}
    pending = [(int(b), int(n)) for b, n in (yield Exec(d.sql["due_pending_from"], args))]
    running = yield Exec(d.sql["due_running"])
    finished = yield Exec(d.sql["due_finished"], {"since": float(since), "limit": limit})
    rows = [(str(q), float(f), s, e) for q, f, s, e in [*running, *finished]]
    return build_due_history(
        since,
        bucket_seconds,
        now,
        pending,
        rows,
        len(finished),
        min((float(r[3]) for r in finished), default=None),
        limit,
    )


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
        q: (int(n), int(n) - int(later or 0), first if first is not None and first <= now else None)
        for q, n, later, first in (yield Exec(d.sql["metric_pending"], {"now": now}))
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
    # One C-level tuple per event (the exporter reads one per unusual event); both drivers return
    # the columns as the tuple wants them (id an int, kind a str).
    return [MetricEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], _claimed_at(r[8])) for r in rows]


def _cursor_range(d: Dialect, table: str, after_id: int, until: float, limit: int) -> Op[tuple[int, bool]]:
    """Where one metrics read over ``table``'s primary key (``event`` or ``job``) ends: the
    ``limit``-th row after the cursor, or the last one; before the first row newer than
    ``until`` (then held back: True). An end at or below ``after_id`` means nothing to read."""
    rows = yield Exec(d.sql[f"metric_{table}_bound"], {"after": after_id, "skip": max(0, limit - 1)})
    end = int(rows[0][0]) if rows else int((yield Exec(d.sql[f"metric_last_{table}_id"]))[0][0])
    if until != math.inf and end > after_id:
        rows = yield Exec(d.sql[f"metric_{table}_unsettled"], {"after": after_id, "end": end, "until": until})
        if rows and rows[0][0] is not None:
            return int(rows[0][0]) - 1, True
    return end, False


def event_totals(d: Dialect, after_id: int, until: float, limit: int, counted: Sequence[str]) -> Op[EventTotals]:
    """Up to four reads in one transaction (one snapshot): where this read ends (the
    ``limit``-th event, or the last one; before the first newer than ``until``), the counted
    kinds summed, the others one row each."""
    end, held_back = yield from _cursor_range(d, "event", after_id, until, limit)
    if end <= after_id:
        return EventTotals(after_id, {}, [], held_back)
    params: Params = {"after": after_id, "end": end}
    kinds = d.any_of("e.kind", "k", counted, params)
    counts = {(str(q), str(k)): int(n) for q, k, n in (yield Exec(d.stmt("metric_event_counts", kinds=kinds), params))}
    rows = yield Exec(d.stmt("metric_events_between", kinds=kinds), params)
    events = [MetricEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], _claimed_at(r[8])) for r in rows]
    return EventTotals(end, counts, events, held_back)


def _claimed_at(detail: str | None) -> float | None:
    """The claim time an event carries for the attempt it ended (``common.attempt_detail``)."""
    if not detail or "claimed_at" not in detail:  # most events: no JSON to parse
        return None
    value = loads(detail)
    at = value.get("claimed_at") if isinstance(value, dict) else None
    return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None


def last_job_id(d: Dialect) -> Op[int]:
    return int((yield Exec(d.sql["metric_last_job_id"]))[0][0])


def enqueue_totals(d: Dialect, after_id: int, until: float, limit: int) -> Op[tuple[int, dict[str, int], bool]]:
    """Up to three reads in one transaction (one snapshot), as ``event_totals`` over the jobs'
    primary key: where this read ends (the ``limit``-th job, or the last one; before the first
    made after ``until``), then the jobs made in that range counted by queue."""
    end, held_back = yield from _cursor_range(d, "job", after_id, until, limit)
    if end <= after_id:
        return after_id, {}, held_back
    rows = yield Exec(d.sql["metric_enqueue_counts"], {"after": after_id, "end": end})
    return end, {str(q): int(n) for q, n in rows}, held_back


def completion_cursor(d: Dialect) -> Op[tuple[float, int]]:
    rows = yield Exec(d.sql["metric_completion_cursor"])
    return (float(rows[0][0]), int(rows[0][1])) if rows else (0.0, 0)


def completions_after(d: Dialect, after: tuple[float, int], until: float, limit: int) -> Op[list[MetricEvent]]:
    rows = yield Exec(d.sql["metric_completions"], {"at": after[0], "id": after[1], "until": until, "limit": limit})
    return [
        MetricEvent(int(i), EventKind.COMPLETED.value, fin, n, q, run_at, started, fin)
        for i, n, q, run_at, started, fin in rows
    ]


def completion_totals(
    d: Dialect, after: tuple[float, int], until: float, limit: int, bounds: HistogramBounds
) -> Op[tuple[tuple[float, int], dict[str, CompletionTotals]]]:
    """Three reads in one transaction (one snapshot): where this fold ends (the ``limit``-th
    completion after the cursor, or the last one), then the sums up to there."""
    span: Params = {"at": after[0], "id": after[1], "until": until}
    rows = yield Exec(d.sql["metric_completion_bound"], {**span, "skip": max(0, limit - 1)})
    if not rows:
        rows = yield Exec(d.sql["metric_completion_last"], span)
        if not rows:
            return after, {}
    end = (float(rows[0][0]), int(rows[0][1]))
    params: Params = {"at": after[0], "id": after[1], "end_at": end[0], "end_id": end[1]}
    sql = d.stmt(
        "metric_completion_totals",
        wait=d.bucket_of("wait", "w", bounds.wait, params),
        run=d.bucket_of("run", "r", bounds.run, params),
        attempts=d.bucket_of("attempts", "a", bounds.attempts, params),
    )
    # One row per queue and combination of slots (a handful): summed up per queue here.
    sums: dict[str, list[Any]] = {}
    for row in (yield Exec(sql, params)):
        q, slots, n, totals = row[0], row[1:4], row[4], row[5:8]
        acc = sums.get(q)
        if acc is None:
            acc = sums[q] = [0, *([0] * (len(b) + 1) for b in bounds), [0.0, 0.0, 0.0]]
        acc[0] += n
        for i, slot in enumerate(slots):
            if slot >= 0:
                acc[1 + i][slot] += n
        for i, total in enumerate(totals):
            acc[4][i] += total or 0.0
    out = {
        str(q): CompletionTotals(int(acc[0]), *(HistogramCounts(tuple(acc[1 + i]), float(acc[4][i])) for i in range(3)))
        for q, acc in sums.items()
    }
    return end, out


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
