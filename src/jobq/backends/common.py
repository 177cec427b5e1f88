"""Backend-neutral helpers shared by the SQLite and PostgreSQL backends (no SQL here)."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from jobq.backends.base import ActionResult, Bucket, Completion, Lease, NewJob, WorkerEnd, WorkerInfo
from jobq.errors import InvalidTransition
from jobq.job import TRANSITIONS, Action, Event, EventKind, Job, JobStatus, operator_actions
from jobq.payloads import decode_json, loads

#: Columns of ``jobs`` in the order every backend selects them, so one converter serves both.
JOB_COLUMNS = (
    "id",
    "queue",
    "task",
    "payload",
    "status",
    "priority",
    "run_at",
    "attempts",
    "max_attempts",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "timeout",
    "last_error",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
    "idempotency_key",
    "result",
    "cancel_requested",
    "run",
    "policy",
)

#: Columns of ``workers`` in the order every backend selects them (``worker_from_row``).
WORKER_COLUMNS = (
    "id",
    "name",
    "host",
    "pid",
    "queues",
    "started_at",
    "last_seen_at",
    "stopped_at",
    "current_jobs",
    "jobs_done",
    "jobs_failed",
    "wake_address",
    "process_table",
    "end_reason",
    "clock_skew",
    "clock_base",
)

EVENT_ERROR_MAX_CHARS = 4_000
"""Most of an error kept in one event's detail (its head and its tail, where a traceback names
the cause); the job's ``last_error`` keeps up to ``jobq.queue.ERROR_MAX_CHARS`` of the latest."""

HISTORY_SAMPLE_LIMIT = 20_000
"""Most recent finished jobs used for wait/run percentiles: bounded work per ops refresh."""


_PID = os.getpid()


def _forked() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_forked)


def process_id() -> int:
    """``os.getpid()`` without its system call: kept by an after-fork hook (the PostgreSQL store
    asks on every transaction whether its pool is this process's, issue 13)."""
    return _PID


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def build_buckets(
    since: float,
    bucket_seconds: float,
    now: float,
    kind_counts: Iterable[tuple[int, str, int]],
    durations: Iterable[tuple[float, float | None, float | None, float | None]],
    pending_now: int,
) -> list[Bucket]:
    """Assemble chart buckets from aggregated rows.

    ``kind_counts``: (bucket index, event kind, count). ``durations``: (finished_at, created_at or
    run_at, started_at, finished_at) of recently finished jobs. The depth of each bucket is
    derived backwards from the current PENDING count: depth before = depth after - enqueued +
    claimed (resubmits count as enqueues; rescues and retries as enqueues too).
    """
    n = max(1, math.ceil((now - since) / bucket_seconds))
    counts: list[dict[str, int]] = [{} for _ in range(n)]
    for index, kind, count in kind_counts:
        if 0 <= index < n:
            counts[index][kind] = counts[index].get(kind, 0) + count
    waits: list[list[float]] = [[] for _ in range(n)]
    runs: list[list[float]] = [[] for _ in range(n)]
    finished: float | None  # None: a time written by hand that is no finite number, see below
    for row in durations:
        finished, ready, started, finished2 = row
        # Finite floats, as both drivers return REAL / double precision, are taken as they are
        # (checking each value was a third of the ops page's history read with 13,000 recent jobs;
        # one isfinite of the sum finds a NaN or an infinity among the three).
        if not (type(finished) is float and type(ready) is float and type(started) is float) or not math.isfinite(
            finished + ready + started
        ):
            # Times written by hand as text on SQLite pass the SQL's comparisons (text sorts above
            # every number), and NaN or Infinity can be written by hand on both: such a time is
            # left out of the durations rather than failing the chart.
            finished, ready, started, finished2 = (finite_or_none(v) for v in row)
        elif type(finished2) is not float or not math.isfinite(finished2):
            finished2 = finite_or_none(finished2)
        if finished is None:
            continue
        index = int((finished - since) // bucket_seconds)
        if 0 <= index < n:
            if started is not None and ready is not None:
                waits[index].append(max(0.0, started - ready))
            if started is not None and finished2 is not None:
                runs[index].append(max(0.0, finished2 - started))
    depth = pending_now
    buckets: list[Bucket] = []
    for i in range(n - 1, -1, -1):
        c = counts[i]
        into = c.get("enqueued", 0) + c.get("resubmitted", 0) + c.get("retry_scheduled", 0)
        into += c.get("rescued", 0) + c.get("released", 0)
        w, r = sorted(waits[i]), sorted(runs[i])
        buckets.append(
            Bucket(
                start=since + i * bucket_seconds,
                enqueued=c.get("enqueued", 0),
                claimed=c.get("claimed", 0),
                completed=c.get("completed", 0),
                failed=c.get("failed", 0) + c.get("expired", 0),
                depth=max(0, depth),
                wait_p50=percentile(w, 0.5),
                wait_p95=percentile(w, 0.95),
                run_p50=percentile(r, 0.5),
                run_p95=percentile(r, 0.95),
                retried=c.get("retry_scheduled", 0),
            )
        )
        depth = depth - into + c.get("claimed", 0) + c.get("cancelled", 0)
    buckets.reverse()
    return buckets


def clip(text: str, limit: int = EVENT_ERROR_MAX_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters: its head and tail, the cut said in between;
    and storable: a lone surrogate (a file name's undecodable byte, ``os.fsdecode(b"\\xff")``)
    is written as its escape. An error message holding one could not be encoded to UTF-8: the
    worker retried recording the failure for ever, and the job stayed PROCESSING."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            text = text.encode(errors="backslashreplace").decode()
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text) - limit} characters cut ...]\n"
    keep = max(0, limit - len(marker))
    return text[: keep // 2] + marker + text[len(text) - (keep - keep // 2) :]


#: The status each worker write leaves a job in. A write repeated after its commit's reply was
#: lost finds the job there, still carrying the write's lease token (worker writes keep the token
#: of the lease that made them): it already happened, and is neither redone nor refused.
APPLIED_STATUS = {
    "complete": TRANSITIONS[Action.COMPLETE].target,
    "retry": TRANSITIONS[Action.RETRY].target,
    "fail": TRANSITIONS[Action.FAIL].target,
    "released": TRANSITIONS[Action.RELEASE].target,
    "cancelled": TRANSITIONS[Action.ACK_CANCEL].target,
}


def already_applied(operation: str, token: str, row: Sequence[Any] | None) -> bool:
    """True when ``row`` (status, lease_token) shows that ``operation`` with ``token`` committed."""
    return row is not None and row[1] == token and row[0] == APPLIED_STATUS[operation].value


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere (escape character ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclasses.dataclass(frozen=True, slots=True)
class RescuePlan:
    """Where a job whose lease is gone goes next, decided the same way by every backend."""

    status: str
    outcome: str
    kind: EventKind
    run_at: float
    error: str | None


def cancel_asked(value: object) -> bool:
    """Whether a stored ``cancel_requested`` asks to cancel: anything but 0 (or false, or NULL).

    The same rule as SQLite's statements (``cancel_requested <> 0``; ``= 0`` for none asked), so
    that a value written by hand (2, 'yes') means one thing everywhere: Python's truthiness and
    ``= 1`` disagreed, and a worker told of a cancel by its heartbeat had its acknowledgement
    refused as a stale write, the job held until its lease ran out."""
    return value is not None and value != 0


def plan_rescue(
    owner: str | None,
    attempts: int,
    max_attempts: int,
    cancel_requested: bool,
    now: float,
    backoff: Callable[[int], float],
    owner_gone: bool,
) -> RescuePlan:
    """CANCELLED if an operator asked; FAILED when attempts are spent; else PENDING after backoff."""
    why = f"worker {owner} exited" if owner_gone else f"lease expired: worker {owner} stopped heartbeating"
    if cancel_requested:
        return RescuePlan("CANCELLED", "cancelled", EventKind.CANCELLED, now, None)
    if attempts >= max_attempts:
        return RescuePlan("FAILED", "expired", EventKind.EXPIRED, now, f"{why} (attempt {attempts} of {max_attempts})")
    return RescuePlan("PENDING", "rescued", EventKind.RESCUED, now + backoff(attempts), why)


class _Fields:
    """Reads one stored row's columns as their types, noting every column that is not.

    A row written by hand (``sqlite3``/``psql``), by another program or by an older version may
    hold text where a number belongs: reading it must not raise (the claim, ``jobq list`` and the
    apps all read rows), so each bad column gets a neutral value and a line in ``defects``.
    """

    def __init__(self) -> None:
        self.defects: list[str] = []

    def integer(self, value: object, name: str, default: int = 0) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        self.defects.append(f"{name} is {_brief(value)}, not an integer")
        return default

    def number(self, value: object, name: str) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        self.defects.append(f"{name} is {_brief(value)}, not a number")
        return 0.0

    def optional_number(self, value: object, name: str) -> float | None:
        return None if value is None else self.number(value, name)

    def text(self, value: object) -> str | None:
        return None if value is None else text_of(value)


def text_of(value: object) -> str:
    """A name column's value as text, whatever a hand wrote there (SQLite keeps any type in any
    column): a queue stored as the blob X'FF' failed `jobq stats` (bytes and str compared) and
    every scrape of `jobq metrics` (one bad row blanked every metric)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_STATUS_BY_VALUE = {s.value: s for s in JobStatus}


def _well_typed(row: Sequence[Any]) -> bool:
    """Every column of ``row`` has its declared type: ints are int (not bool), times are finite
    floats (``x - x == 0.0`` is false for inf and nan), texts are str; optional ones may be None."""
    return (
        type(row[0]) is int
        and type(row[1]) is str
        and type(row[2]) is str
        and type(row[5]) is int
        and type(row[6]) is float
        and row[6] - row[6] == 0.0
        and type(row[7]) is int
        and type(row[8]) is int
        and type(row[9]) is float
        and row[9] - row[9] == 0.0
        and type(row[10]) is float
        and row[10] - row[10] == 0.0
        and (row[11] is None or (type(row[11]) is float and row[11] - row[11] == 0.0))
        and (row[12] is None or (type(row[12]) is float and row[12] - row[12] == 0.0))
        and (row[13] is None or (type(row[13]) is float and row[13] - row[13] == 0.0))
        and (row[14] is None or type(row[14]) is str)
        and (row[15] is None or type(row[15]) is str)
        and (row[16] is None or type(row[16]) is str)
        and (row[17] is None or (type(row[17]) is float and row[17] - row[17] == 0.0))
        and (row[18] is None or type(row[18]) is str)
        and type(row[21]) is int
        and (row[22] is None or type(row[22]) is str)
    )


F = TypeVar("F")


def frozen_builder(cls: type[F]) -> Callable[..., F]:
    """A constructor of the slotted (frozen) dataclass ``cls`` taking every field by position, with
    no checks and no defaults. The instance is made as one of a plain class with the very same
    slots (so each field is a plain attribute store, specialised by the interpreter), then made a
    ``cls`` (``__class__`` assignment: the two layouts are identical, which Python checks). The
    dataclass's own ``__init__`` sets each field through ``object.__setattr__`` (what ``frozen``
    requires); setting each through its slot descriptor's ``__set__`` cost ~2.6 us for Job's 24
    fields, this ~0.8 us (a claimed job, issue 13); a Lease or a Completion ~0.4 us against ~0.95
    through ``__init__``. The instance is the same: equal, hashed and immutable as one built by
    ``cls(...)`` (tests/unit/test_model.py compares them)."""
    dataclass: Any = cls  # a frozen, slotted dataclass (not expressible as a bound)
    names = [f.name for f in dataclasses.fields(dataclass)]
    twin = type(f"_{cls.__name__}Fields", (), {"__slots__": dataclass.__slots__})
    scope: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    args = ", ".join(f"a{i}" for i in range(len(names)))
    sets = "".join(f"    o.{name} = a{i}\n" for i, name in enumerate(names))
    exec(
        f"def build({args}):\n    o = _new(_twin)\n{sets}    o.__class__ = _cls\n    return o\n", scope
    )  # text built here from the field names only
    build: Callable[..., F] = scope["build"]
    return build


#: ``Job(...)`` with every field by position, as fast as a slotted class allows (see above).
_build_job = frozen_builder(Job)
#: ``Lease(job_id, token, worker_id)`` and ``Completion(lease, result_json, note)``, the same way:
#: the worker's every write makes one or both.
build_lease = frozen_builder(Lease)
build_completion = frozen_builder(Completion)
#: ``NewJob(...)`` by position, the same way (not frozen, its ``__init__`` called by keyword cost
#: ~1.15 us against ~0.45): every enqueue makes one.
build_new_job = frozen_builder(NewJob)


def job_from_row(row: Sequence[Any]) -> Job:
    """A Job from a row selected with ``JOB_COLUMNS``, in that order. Never raises for bad data:
    what cannot be read is named in ``Job.defect`` (the worker fails such a job, see there)."""
    payload, payload_problem = decode_json(row[3])
    status = _STATUS_BY_VALUE.get(row[4]) if type(row[4]) is str else None
    if payload_problem is None and status is not None and _well_typed(row):
        # Every row jobq wrote: the same Job as below, without a call per column (a third of a
        # batched claim's CPU went to checking the columns one call at a time).
        return _build_job(
            row[0], row[1], row[2], payload, status, row[5], row[6], row[7], row[8], row[9], row[10],
            row[11], row[12], row[13], row[14], row[15],
            row[16] if status is JobStatus.PROCESSING else None,
            row[17], row[18], None if row[19] is None else loads(row[19]), cancel_asked(row[20]), row[21], None,
            row[22],
        )  # fmt: skip
    f = _Fields()
    if payload_problem:
        f.defects.append(f"payload {payload_problem}")
    try:
        status = JobStatus(row[4])
    except ValueError:  # the schema's CHECK forbids it, but a copied or old database may not have one
        f.defects.append(f"status is {_brief(row[4])}")
        status = JobStatus.FAILED
    return Job(
        id=f.integer(row[0], "id"),
        queue=f.text(row[1]) or "",
        task=f.text(row[2]) or "",
        payload=payload,
        status=status,
        priority=f.integer(row[5], "priority"),
        run_at=f.number(row[6], "run_at"),
        attempts=f.integer(row[7], "attempts"),
        max_attempts=f.integer(row[8], "max_attempts", 1),
        created_at=f.number(row[9], "created_at"),
        updated_at=f.number(row[10], "updated_at"),
        started_at=f.optional_number(row[11], "started_at"),
        finished_at=f.optional_number(row[12], "finished_at"),
        timeout=f.optional_number(row[13], "timeout"),
        last_error=f.text(row[14]),
        lease_owner=f.text(row[15]),
        # The column keeps the token of the last lease after a worker write (see APPLIED_STATUS);
        # a Job shows only a lease that is held now.
        lease_token=f.text(row[16]) if status is JobStatus.PROCESSING else None,
        lease_expires_at=f.optional_number(row[17], "lease_expires_at"),
        idempotency_key=f.text(row[18]),
        result=loads(row[19]),
        cancel_requested=cancel_asked(row[20]),
        run=f.integer(row[21], "run", 1),
        defect="; ".join(f.defects) or None,
        policy=f.text(row[22]),
    )


def worker_from_row(row: Sequence[Any]) -> WorkerInfo:
    f = _Fields()
    queues = loads(row[4])
    current = loads(row[8] or "[]")
    return WorkerInfo(
        id=f.text(row[0]) or "",
        name=f.text(row[1]) or "",
        host=f.text(row[2]) or "",
        pid=f.integer(row[3], "pid"),
        queues=tuple(str(q) for q in queues) if isinstance(queues, list) else (str(queues),),
        started_at=f.number(row[5], "started_at"),
        last_seen_at=f.number(row[6], "last_seen_at"),
        stopped_at=f.optional_number(row[7], "stopped_at"),
        current_jobs=tuple(j for j in current if isinstance(j, int)) if isinstance(current, list) else (),
        jobs_done=f.integer(row[9], "jobs_done"),
        jobs_failed=f.integer(row[10], "jobs_failed"),
        wake_address=f.text(row[11]),
        process_table=f.text(row[12]) if len(row) > 12 else None,
        end_reason=_end_reason(f.text(row[13])) if len(row) > 13 else None,
        clock_skew=_measured(row[14]) if len(row) > 14 else None,
        clock_base=_measured(row[15]) if len(row) > 15 else None,
    )


def _measured(value: object) -> float | None:
    """A measurement read back: a finite number, else unknown (a value written by hand). Not
    ``_Fields``' neutral 0.0, which would read as a clock in sync."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _end_reason(text: str | None) -> WorkerEnd | None:
    # A word this jobq does not know (a newer one wrote it) reads as a plain stop, never an error.
    if text is None:
        return None
    try:
        return WorkerEnd(text)
    except ValueError:
        return WorkerEnd.STOPPED


_EVENT_KINDS = {k.value: k for k in EventKind}


def event_from_row(row: Sequence[Any]) -> Event:
    f = _Fields()
    detail = loads(row[6]) if row[6] else {}
    kind = f.text(row[3]) or ""
    return Event(
        id=f.integer(row[0], "id"),
        job_id=f.integer(row[1], "job_id"),
        at=f.number(row[2], "at"),
        # An EventKind, as the events read from the job row are (``e.kind is EventKind.FAILED``
        # held for those and not for stored ones); a kind this jobq does not know (written by a
        # newer one, or by hand) stays text.
        kind=_EVENT_KINDS.get(kind, kind),
        actor=f.text(row[4]),
        attempt=None if row[5] is None else f.integer(row[5], "attempt"),
        detail=detail if isinstance(detail, dict) else {"text": detail},
    )


_DONE_MESSAGES = {
    Action.RESUBMIT: "resubmitted",
    Action.CANCEL: "cancelled",
    Action.REQUEST_CANCEL: "cancellation requested; the worker stops it",
}


def plan_operator_action(verb: str, job_id: int, status: str) -> tuple[Action | None, ActionResult]:
    """Which transition an operator's ``verb`` ("resubmit" or "cancel") applies to a job now in
    ``status`` ("" when no such job), and the result to report. None: nothing may be written."""
    if not status:
        return None, ActionResult(job_id, False, None, f"job {job_id} not found")
    current = JobStatus(status)
    action = operator_actions(current).get(verb)  # the one source: jobq.job.TRANSITIONS
    if action is not None:
        return action, ActionResult(job_id, True, TRANSITIONS[action].target, _DONE_MESSAGES[action])
    return None, ActionResult(job_id, False, current, str(InvalidTransition(job_id, verb, status)))


# -- a job's history: stored events plus the entries derived from the job row ---------------------
#: The id of a history entry derived from a job row or carried by another event, not stored in
#: ``job_events`` (stored ids start at 1).
DERIVED_EVENT_ID = 0


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRow:
    """What a job row says about its latest attempt (the columns ``attempt_of_job`` selects)."""

    job_id: int
    status: str
    attempts: int
    started_at: float | None
    lease_owner: str | None
    lease_token: str | None
    finished_at: float | None
    #: When the job was made: its ``enqueued`` entry (None: a row read without it, no entry).
    created_at: float | None = None


def attempt_from_row(row: Sequence[Any]) -> AttemptRow:
    """An AttemptRow from ``(id, status, attempts, started_at, lease_owner, lease_token,
    finished_at[, created_at])``."""
    f = _Fields()
    return AttemptRow(
        job_id=f.integer(row[0], "id"),
        status=f.text(row[1]) or "",
        attempts=f.integer(row[2], "attempts"),
        started_at=f.optional_number(row[3], "started_at"),
        lease_owner=f.text(row[4]),
        lease_token=f.text(row[5]),
        finished_at=f.optional_number(row[6], "finished_at"),
        created_at=f.optional_number(row[7], "created_at") if len(row) > 7 else None,
    )


def attempt_detail(
    claimed_at: float | None, claimed_by: str | None = None, attempt: int | None = None
) -> dict[str, Any]:
    """What an event that ends an attempt (or moves the row off it) carries about that attempt,
    so its ``claimed`` entry can still be shown once the row's columns have moved on:
    ``claimed_at`` always, ``claimed_by`` when the event's actor is not the worker (a rescue),
    ``attempt`` when the event's own attempt number is not the attempt's (a release, a resubmit)."""
    out: dict[str, Any] = {}
    if claimed_at is not None:
        out["claimed_at"] = claimed_at
        if claimed_by is not None:
            out["claimed_by"] = claimed_by
        if attempt is not None:
            out["attempt"] = attempt
    return out


def number_or_none(value: object) -> float | None:
    """``value`` as a float when it is a number, else None. A time read back with ``min()`` can be
    text on SQLite, where a row written by hand keeps text in a REAL column: it sorts above every
    number, so a text minimum means no row holds a number (and claims never take such a row)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def finite_or_none(value: object) -> float | None:
    """``number_or_none`` for a time a chart places: also None for NaN and the infinities, which a
    row written by hand can hold (PostgreSQL's double precision takes 'NaN' and 'Infinity', SQLite
    keeps 9e999 as infinity) and which no bucket holds (int() of them raises)."""
    number = number_or_none(value)
    return number if number is not None and math.isfinite(number) else None


def carried_events(e: Event) -> list[Event]:
    """The entries ``e`` carries for the attempt it ended (see ``attempt_detail``): its
    ``claimed``, and for a resubmit of a completed job that attempt's ``completed``."""
    claimed_at = number_or_none(e.detail.get("claimed_at"))
    if claimed_at is None:
        return []
    by = e.detail.get("claimed_by", e.actor)
    worker = by if isinstance(by, str) else None
    n = e.detail.get("attempt", e.attempt)
    attempt = n if isinstance(n, int) and not isinstance(n, bool) else e.attempt
    out = [Event(DERIVED_EVENT_ID, e.job_id, claimed_at, EventKind.CLAIMED, worker, attempt, {})]
    completed_at = number_or_none(e.detail.get("completed_at"))
    if completed_at is not None:
        out.append(Event(DERIVED_EVENT_ID, e.job_id, completed_at, EventKind.COMPLETED, worker, attempt, {}))
    return out


def enqueued_event(row: AttemptRow) -> Event | None:
    """The job's ``enqueued`` entry, from its row's ``created_at``: an enqueue stores no event
    (issue 13: the event row was a quarter of an SQLite enqueue's CPU). An older jobq stored it,
    at the same time, so ``history_of`` shows it once."""
    if row.created_at is None:
        return None
    return Event(DERIVED_EVENT_ID, row.job_id, row.created_at, EventKind.ENQUEUED, None, 0, {})


def row_events(row: AttemptRow) -> list[Event]:
    """The entries of the row's latest attempt that no event records: its claim while it runs,
    its claim and completion once a worker completed it. A worker's completion keeps its lease
    token; an operator's or an outside edit clears it (and is an event of its own)."""
    if row.started_at is None or row.attempts <= 0:
        return []
    if row.status == JobStatus.PROCESSING.value:
        return [
            Event(DERIVED_EVENT_ID, row.job_id, row.started_at, EventKind.CLAIMED, row.lease_owner, row.attempts, {})
        ]
    if row.status == JobStatus.COMPLETED.value and row.lease_token is not None and row.finished_at is not None:
        return [
            Event(DERIVED_EVENT_ID, row.job_id, row.started_at, EventKind.CLAIMED, row.lease_owner, row.attempts, {}),
            Event(
                DERIVED_EVENT_ID, row.job_id, row.finished_at, EventKind.COMPLETED, row.lease_owner, row.attempts, {}
            ),
        ]
    return []


#: Stored kinds that happen within an attempt, not between attempts: a derived entry may be placed
#: before them. Every other stored kind is a boundary (the job left or entered PROCESSING there)
#: that a derived entry never crosses, whatever the clocks say: an operator's event is stamped
#: with the time read before it waited for the lock, so times alone can misorder (measured in
#: tests/reliability/test_operator_races.py).
_WITHIN_ATTEMPT = frozenset({EventKind.CANCEL_REQUESTED.value, EventKind.STALE_WRITE_REFUSED.value})


def _later(stored: Event, derived: Event) -> bool:
    """Does ``stored`` come after ``derived`` in a job's history?"""
    kind = str(stored.kind)
    if kind == EventKind.COMPLETED.value:  # stored for its note: it ends the attempt it names
        return derived.kind == EventKind.CLAIMED and derived.attempt == stored.attempt
    if kind not in _WITHIN_ATTEMPT:
        return False
    if kind == EventKind.CANCEL_REQUESTED.value:
        # A cancel request applies only to a running attempt: after its claim, before its completion.
        return derived.kind == EventKind.CLAIMED
    # A refused late write: by time; at the same time (a frozen test clock) after the derived entry.
    return stored.at >= derived.at


def _key(e: Event) -> tuple[int, str, int | None, float]:
    return (e.job_id, str(e.kind), e.attempt, e.at)


def history_of(stored: Sequence[Event], row: AttemptRow | None) -> list[Event]:
    """A job's visible history: its stored events (in id order) with the ``claimed`` and
    ``completed`` entries that the normal path no longer stores, derived from the events that
    carry them and from the job row. The one place these entries are made (issue 13): a derived
    entry equal to a stored one (same kind, attempt and time: written by an older jobq, or a
    completion with a note) is not shown twice.

    A carried entry goes before the event that carries it, an entry of the row at the end; each
    then moves before the stored events of its attempt that come after it (``_later``). The
    ``enqueued`` entry of the row comes first, whatever the clocks say: nothing happens to a job
    before it exists."""
    seen = {_key(e) for e in stored}
    first = enqueued_event(row) if row is not None else None
    head = [first] if first is not None and _key(first) not in seen else []
    items = [(i, d) for i, e in enumerate(stored) for d in carried_events(e)]
    items += [(len(stored), d) for d in (row_events(row) if row is not None else [])]
    placed: list[tuple[int, float, int, Event]] = []
    for n, (slot, d) in enumerate(items):
        if _key(d) in seen:
            continue
        seen.add(_key(d))
        while slot > 0 and _later(stored[slot - 1], d):
            slot -= 1
        placed.append((slot, d.at, n, d))
    placed.sort(key=lambda p: p[:3])
    out: list[Event] = []
    j = 0
    for i in range(len(stored) + 1):
        while j < len(placed) and placed[j][0] == i:
            out.append(placed[j][3])
            j += 1
        if i < len(stored):
            out.append(stored[i])
    return head + out


def recent_history(
    stored: Sequence[Event], rows: Sequence[AttemptRow], limit: int, kinds: Sequence[str]
) -> list[Event]:
    """The newest ``limit`` entries of every job's history, newest first: ``stored`` are the
    newest stored events, ``rows`` the running jobs and the newest finished ones (see
    ``history_of`` for what is derived; ``rows`` include the newest made, for their ``enqueued``)."""
    seen = {_key(e) for e in stored}
    out = list(stored)
    made = [e for r in rows if (e := enqueued_event(r)) is not None]
    for d in [d for e in stored for d in carried_events(e)] + [d for r in rows for d in row_events(r)] + made:
        if _key(d) not in seen:
            seen.add(_key(d))
            out.append(d)
    wanted = set(kinds)
    out = [e for e in out if not wanted or str(e.kind) in wanted]
    out.sort(key=lambda e: (e.at, e.id), reverse=True)
    return out[:limit]


def clock_offset_of(read_store_time: Callable[[], float], samples: int) -> tuple[float, float]:
    """How far the store's clock is ahead of this host's (``time.time()``), in seconds, and the
    round trip of the read that says so: the store's time minus the midpoint of the host's times
    around the read, of the read with the shortest round trip of ``samples`` (its error is at
    most half that round trip)."""
    best: tuple[float, float] | None = None  # (round trip, offset)
    for _ in range(max(1, samples)):
        before = time.time()
        store = read_store_time()
        after = time.time()
        sample = (after - before, store - (before + after) / 2)
        if best is None or sample[0] < best[0]:
            best = sample
    assert best is not None
    return best[1], best[0]
