"""The shared core of the storage operations.

The command types (``Exec``, ``ExecMany``, ``Notify``), ``drive``/``adrive`` that run an operation,
the small helpers every module uses (events, refusals, the lease write), and ``migrate``.
"""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from json.encoder import encode_basestring_ascii as _escape
from typing import Any, NamedTuple, TypeVar

from jobq.backends.base import Lease
from jobq.backends.common import APPLIED_STATUS, already_applied, job_from_row
from jobq.backends.statements import Dialect, Params
from jobq.errors import StorageError
from jobq.job import EventKind, Job, JobStatus

#: The statuses a job ends in (it has a ``finished_at``).
TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value})


T = TypeVar("T")


Rows = list[tuple[Any, ...]]


# Commands are NamedTuples: one is made for every statement of every operation, and a tuple is
# the cheapest object Python builds (a frozen dataclass cost ~1 us more each, on the hot path).
class Exec(NamedTuple):
    """Run one statement; the operation receives its rows (empty when it returns none).

    ``alone``: the statement is a transaction of its own, so a backend may send it by itself
    (PostgreSQL: one autocommit statement, one round trip instead of BEGIN, statement, COMMIT;
    SQLite: a lone statement in autocommit, its own write transaction, without BEGIN and COMMIT).
    An operation that starts with one yields only such statements after it (each commits as it
    runs: one that is sent again, like a keyed enqueue's, must be safe to repeat); on SQLite only
    wake-ups (``Notify``), sent after it commits. On a caller's connection they simply run in the
    caller's transaction."""

    sql: str
    params: Params | Sequence[Any] = {}
    """Named parameters, or values bound by position (SQLite's multi-row insert: thousands of
    values bound by name cost 30x more)."""
    alone: bool = False
    several: bool = False
    """``sql`` is several statements, each ending with a ``;`` at the end of its line but the last,
    run one after the other in one transaction without the operation seeing rows in between
    (PostgreSQL: one pipeline, one round trip; each statement with a snapshot of its own); each
    gets ``params``, and the operation receives the last statement's rows."""


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


def _events(
    d: Dialect,
    job_ids: list[int],
    at: float,
    kind: EventKind,
    actor: str,
    attempt: int | None,
    details: list[dict[str, Any] | None],
) -> Op[None]:
    """An event of ``kind`` for each of ``job_ids``, with its detail, in their order, in one
    statement (none for no job)."""
    if not job_ids:
        return
    texts = [None if detail is None else d.text(json.dumps(detail)) for detail in details]
    params: Params = {"at": at, "kind": kind.value, "actor": d.text(actor), "attempt": attempt}
    yield Exec(d.sql["insert_events_set"], {**params, **d.event_items(job_ids, texts)})


def event_made(d: Dialect, job_id: int, at: float, actor: str) -> Op[bool]:
    """Whether ``job_id`` has the event of an action by ``actor`` at ``at`` (an operator's chunk,
    a rescue): one whose COMMIT's reply was lost committed only if it does."""
    return bool((yield Exec(d.sql["action_event_at"], {"id": job_id, "at": at, "actor": d.text(actor)})))


def _by_job_id(leases: Sequence[Lease]) -> list[int]:
    """Indexes of ``leases`` in job id order: every transaction touches rows in id order, so two
    of them never wait on each other in a cycle (no deadlock on PostgreSQL)."""
    ids = [lease.job_id for lease in leases]
    return sorted(range(len(ids)), key=ids.__getitem__)  # a key in C: no Python call per job


#: The claim order of Jobs, read in C (a lambda was a Python call per job of a batched claim).
_CLAIM_ORDER = operator.attrgetter("priority", "run_at", "id")


def _sorted_jobs(rows: Rows) -> list[Job]:
    if len(rows) == 1:  # the per-job claim: nothing to sort
        return [job_from_row(rows[0])]
    # Jobs, not rows, are sorted: a row written by hand may hold a priority of any type, which
    # job_from_row has already replaced (and named in the job's defect).
    return sorted([job_from_row(r) for r in rows], key=_CLAIM_ORDER)


class Claimed:
    """What a claim leased, returned by the claim operations: the rows of its jobs, each made a
    Job by ``build`` once the transaction has committed (the plan calls it), and the jobs a claim
    of controlled queues leased in the same transaction (built already, by ``flow``).

    Why rows: an operation runs inside its transaction, and on SQLite that is under the database's
    write lock. Building a batch of 100 Jobs there (their payloads decoded, their columns checked)
    was ~29 % of the time a ``Worker(batch=100)`` held the lock, time in which no other worker
    could commit: with several workers that lock is the limit (issue 13)."""

    __slots__ = ("jobs", "rows", "unread")

    def __init__(self, rows: Rows, jobs: list[Job] | None = None, unread: str | None = None) -> None:
        self.rows = rows
        self.jobs: list[Job] = jobs if jobs is not None else []
        #: The claim's nonce when ``rows`` hold its jobs' ids only (``Dialect.claim_reads_after``):
        #: their rows are read after the commit (``claimed_rows``), then built. None when it
        #: claimed nothing: an idle worker's claim reads nothing more.
        self.unread = unread if rows else None

    def __len__(self) -> int:
        return len(self.rows) + len(self.jobs)

    def build(self) -> list[Job]:
        """The jobs: the claim's rows in claim order, then the controlled claim's."""
        return _sorted_jobs(self.rows) + self.jobs


# -- schema -------------------------------------------------------------------------------------
def schema_version(rows: Rows, where: str) -> int:
    """The version ``schema_version`` read, or StorageError: a version written by hand ('abc')
    failed every command with a ValueError traceback."""
    value = rows[0][0] if rows else 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise StorageError(f"{where}: jobq_schema holds version {value!r:.40}, not a number (edited by hand?)")
    return value


def migrate(d: Dialect, migrations: Sequence[Sequence[str]], where: str, *, create: bool = True) -> Op[int]:
    """Apply the migrations not applied yet, in order, each recorded in ``jobq_schema``; returns
    the version found. Only append to a backend's migrations: never edit a released one.

    ``create=False``: a database without jobq's schema is an error (a read-only viewer says so
    rather than show an empty queue), raised before anything is written."""
    yield Exec(d.sql["schema_table"])
    current = schema_version((yield Exec(d.sql["schema_version"])), where)
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


def _refusal_detail(d: Dialect, op: str, lease: Lease) -> str | None:
    """The detail of a ``stale_write_refused`` event (also built by ``_refused``): the text of
    ``json.dumps({"operation": op, "token": lease.token})``, formatted with json's own C escaper.
    Every one-statement worker write binds it in case it is refused (json.dumps was ~3 % of a
    PostgreSQL claim+complete's client instructions, issue 13). ``op`` is one of jobq's names."""
    token = lease.token
    if type(token) is not str:  # exactly str: a subclass could encode otherwise
        return d.text(json.dumps({"operation": op, "token": token}))
    return d.text(f'{{"operation": "{op}", "token": {_escape(token)}}}')


def _refused(d: Dialect, lease: Lease, op: str, now: float, **how: Any) -> Op[bool]:
    """Record a refused worker write. A ``repeat`` (of a write whose outcome was unknown) that had
    been applied (as ``applied_as``, default ``op``, or any of several: see
    ``common.APPLIED_STATUS``) is not refused: True, nothing recorded (``_refused_unless_applied``)."""
    return (yield from _refused_unless_applied(d, lease, op, now, **how)) is not None


def _refused_unless_applied(
    d: Dialect,
    lease: Lease,
    op: str,
    now: float,
    *,
    repeat: bool = False,
    applied_as: str | tuple[str, ...] | None = None,
    recorded_maybe: bool | None = None,
) -> Op[str | None]:
    """``_refused``, returning the status the applied write left (None: refused, recorded).
    ``recorded_maybe`` (default ``repeat``): this refusal may have been recorded by the write it
    repeats, whose COMMIT's reply was lost."""
    names = applied_as if isinstance(applied_as, tuple) else (applied_as or op,)
    applied = [a for a in names if a in APPLIED_STATUS]
    if repeat and applied:
        rows = yield Exec(d.sql["lease_state"], {"id": lease.job_id})
        if rows and any(already_applied(a, lease.token, rows[0]) for a in applied):
            return str(rows[0][0])
    detail = _refusal_detail(d, op, lease)
    # A repeat may follow a refusal that did commit (its reply lost): that one was recorded, and
    # the same write refused again is the same refusal, not a second one in the job's history
    # (or in the lease-lost counter). One read, on refusals of repeats only.
    maybe = repeat if recorded_maybe is None else recorded_maybe
    if maybe and (yield Exec(d.sql["refusal_recorded"], {"id": lease.job_id, "detail": detail})):
        return None
    event = _event(d, lease.job_id, now, EventKind.STALE_WRITE_REFUSED, lease.worker_id, None, None)
    yield Exec(d.sql["insert_event"], {**event, "detail": detail})
    return None


def _lease_params(d: Dialect, worker_id: str, nonce: str, now: float, lease_seconds: float) -> Params:
    """What every claim statement binds to lease its jobs: the owner, the claim's nonce (each
    token is it plus the job id), when, and when the lease runs out."""
    return {"worker": d.text(worker_id), "nonce": nonce, "now": now, "expires": now + lease_seconds}


def _one_write(d: Dialect, lease: Lease, now: float, op: str) -> Params:
    """Parameters every one-statement worker write takes: its fence, actor and refusal detail."""
    return {
        "now": now,
        "id": lease.job_id,
        "token": lease.token,
        "actor": d.text(lease.worker_id),
        "refused": _refusal_detail(d, op, lease),
    }


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
