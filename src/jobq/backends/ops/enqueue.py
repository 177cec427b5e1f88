"""Enqueue: inserting new jobs, one, many, or keyed (a repeated key finds the job it made)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from typing import Any

from jobq.backends.base import NewJob
from jobq.backends.ops.core import Exec, ExecMany, Notify, Op
from jobq.backends.ops.reads import get
from jobq.backends.statements import Dialect, Params
from jobq.config import INT64_MAX
from jobq.errors import DuplicateJob, StorageError

# -- producers -----------------------------------------------------------------------------------
#: How many times one enqueue looks for a key's holder that keeps finishing between the insert
#: that conflicted and the look-up (each round needs another producer to take the key meanwhile).
KEY_ROUNDS_MAX = 20
#: What an enqueue says when the ids have run out (only a hand can put an id near the top).
NO_JOB_ID_LEFT = f"no job id is left: the newest job's id is at the largest the store can hold ({INT64_MAX})"


def enqueue(d: Dialect, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()) -> Op[list[int]]:
    """Insert ``jobs``; their ids in order. Not a generator itself: it hands back the operation
    of the case at hand, so the per-job enqueue steps through one generator, not two."""
    one = insert_alone(d, jobs, now, traces)
    if one is not None:
        return _enqueue_one(jobs[0], now, one)
    statement = enqueue_one_statement(d, jobs, now, traces)
    if statement is not None:
        return _enqueue_one_alone(statement)
    return _enqueue(d, jobs, now, traces)


def enqueue_one_statement(
    d: Dialect, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()
) -> tuple[str, Params] | None:
    """One job without a key and its wake-up in one statement sent alone, and its parameters
    (dialects that have it: ``enqueue``'s usual call on PostgreSQL), or None when ``enqueue``
    runs another. The statement returns the job's id."""
    if len(jobs) != 1 or traces or "enqueue_one" not in d.sql:
        return None
    job = jobs[0]
    if job.idempotency_key is not None or job.concurrency_key is not None:
        return None
    params = _alone_params(job, now)
    params["payload"] = job.payload_json
    return d.sql["enqueue_one"], params


def insert_alone(
    d: Dialect, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()
) -> tuple[str, tuple[Any, ...]] | None:
    """The one statement, sent alone, and its values by position, that ``enqueue`` runs for
    ``jobs`` (then wakes the job's queue if it is due: ``due_now``), or None when it runs another.

    One job without a key (``enqueue``'s usual call), in a dialect without a one-statement enqueue
    of its own: no batch bookkeeping (it runs once per job: a third of the per-call CPU went
    there); the row is the whole record of the enqueue (issue 13: its `enqueued` event row was
    ~20 us of the ~75 us of CPU an SQLite enqueue took)."""
    if len(jobs) != 1 or traces or "enqueue_one" in d.sql or "enqueue_with_events" in d.sql:
        return None
    job = jobs[0]
    if job.idempotency_key is not None or job.concurrency_key is not None:
        return None
    values = (job.queue, job.task, job.payload_json, job.priority, job.run_at, job.max_attempts, job.timeout, now)
    return d.sql["insert_job_alone"], (*values, job.policy_json)


def due_now(job: NewJob, now: float) -> bool:
    """Whether a new job is due at once: its queue's idle workers are woken once it commits."""
    return job.run_at <= now


def _enqueue(d: Dialect, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None]) -> Op[list[int]]:
    plain = all(j.idempotency_key is None and j.concurrency_key is None for j in jobs)
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


def _enqueue_one(job: NewJob, now: float, one: tuple[str, tuple[Any, ...]]) -> Op[list[int]]:
    """``insert_alone``'s statement ``one``; the wake-up follows the commit."""
    job_id: int = (yield Exec(*one, alone=True))[0][0]
    if due_now(job, now):
        yield Notify(frozenset((job.queue,)))
    return [job_id]


def _alone_params(job: NewJob, now: float) -> Params:
    """The columns ``enqueue_one`` and ``enqueue_uniform`` bind besides the payload(s), and whether
    to wake the queue."""
    return {
        "queue": job.queue,
        "task": job.task,
        "priority": job.priority,
        "run_at": job.run_at,
        "max_attempts": job.max_attempts,
        "timeout": job.timeout,
        "policy": job.policy_json,
        "now": now,
        "due": job.run_at <= now,
    }


def _enqueue_one_alone(statement: tuple[str, Params]) -> Op[list[int]]:
    """``enqueue_one_statement``'s statement sent alone."""
    return [int((yield Exec(*statement, alone=True))[0][0])]


def _columns_but_payload(j: NewJob) -> tuple[Any, ...]:
    """What ``enqueue_uniform`` binds once for all its jobs (a job without keys)."""
    return (j.queue, j.task, j.priority, j.run_at, j.max_attempts, j.timeout, j.policy_json)


def _enqueue_alone(d: Dialect, jobs: Sequence[NewJob], now: float) -> Op[list[int]]:
    """Jobs without keys and the wake-up in one statement (dialects that have it)."""
    shared = _columns_but_payload(jobs[0])
    if "enqueue_uniform" in d.sql and all(_columns_but_payload(j) == shared for j in jobs):
        params = _alone_params(jobs[0], now)
        params["payloads"] = json.dumps([j.payload_json for j in jobs])
        return sorted(row[0] for row in (yield Exec(d.sql["enqueue_uniform"], params, alone=True)))
    rows = [
        [j.queue, j.task, j.payload_json, j.priority, j.run_at, j.max_attempts, j.timeout, j.policy_json] for j in jobs
    ]
    due = sorted({j.queue for j in jobs if j.run_at <= now})
    params = {"jobs": json.dumps(rows), "now": now, "wake": json.dumps(due)}
    # Ids come from one sequence in the order of the rows: ascending ids are the jobs in order.
    return sorted(row[0] for row in (yield Exec(d.sql["enqueue_with_events"], params, alone=True)))


#: Jobs per multi-row INSERT. A full chunk's text repeats, so apsw reuses its prepared statement,
#: but only while the text stays under ~16 KB (30 characters a row): measured per job, 400 rows
#: 4.3 us, 480, 500 or 1,000 rows 5.5-6.8 us (prepared anew each time). 3,201 variables.
VALUES_CHUNK_ROWS = 400


@functools.cache
def _values_rows(n: int) -> str:
    """The VALUES rows of ``insert_jobs_values`` after its first, for ``n`` jobs (one string
    object per size): the others leave their id to SQLite, one above the row before."""
    return ",(NULL,?1,?1,?,?,?,?,?,?,?,?)" * (n - 1)


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
        made = sorted(r[0] for r in rows)
        if made[-1] - made[0] != len(made) - 1:
            # SQLite gives a row without an id the one above the newest, except when the newest
            # holds the largest integer: then a random unused one, which may be the id of a
            # purged job and breaks the order that pairs ids with jobs. Refused whole.
            raise StorageError(NO_JOB_ID_LEFT)
        ids += made
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
