"""Backend-neutral helpers shared by the SQLite and PostgreSQL backends (no SQL here)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jobq.backends.base import ActionResult, Bucket, WorkerInfo
from jobq.errors import InvalidTransition
from jobq.job import TRANSITIONS, Action, Event, EventKind, Job, JobStatus

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
)

HISTORY_SAMPLE_LIMIT = 20_000
"""Most recent finished jobs used for wait/run percentiles: bounded work per ops refresh."""


def loads(text: str | None) -> Any:
    """Decode a stored JSON column; a value that is not JSON (hand-edited) is shown as text."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


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
    for finished, ready, started, finished2 in durations:
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
            )
        )
        depth = depth - into + c.get("claimed", 0) + c.get("cancelled", 0)
    buckets.reverse()
    return buckets


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


def job_from_row(row: Sequence[Any]) -> Job:
    """A Job from a row selected with ``JOB_COLUMNS``, in that order."""
    return Job(
        id=row[0],
        queue=row[1],
        task=row[2],
        payload=loads(row[3]),
        status=JobStatus(row[4]),
        priority=row[5],
        run_at=row[6],
        attempts=row[7],
        max_attempts=row[8],
        created_at=row[9],
        updated_at=row[10],
        started_at=row[11],
        finished_at=row[12],
        timeout=row[13],
        last_error=row[14],
        lease_owner=row[15],
        lease_token=row[16],
        lease_expires_at=row[17],
        idempotency_key=row[18],
        result=loads(row[19]),
        cancel_requested=bool(row[20]),
        run=row[21],
    )


def worker_from_row(row: Sequence[Any]) -> WorkerInfo:
    return WorkerInfo(
        id=row[0],
        name=row[1],
        host=row[2],
        pid=row[3],
        queues=tuple(json.loads(row[4])),
        started_at=row[5],
        last_seen_at=row[6],
        stopped_at=row[7],
        current_jobs=tuple(json.loads(row[8] or "[]")),
        jobs_done=row[9],
        jobs_failed=row[10],
        wake_address=row[11],
        process_table=row[12],
    )


def event_from_row(row: Sequence[Any]) -> Event:
    detail = loads(row[6]) if row[6] else {}
    return Event(
        id=row[0],
        job_id=row[1],
        at=row[2],
        kind=row[3],
        actor=row[4],
        attempt=row[5],
        detail=detail if isinstance(detail, dict) else {"text": detail},
    )


_OPERATOR_ACTIONS = {
    "resubmit": (Action.RESUBMIT,),
    "cancel": (Action.CANCEL, Action.REQUEST_CANCEL),
}
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
    for action in _OPERATOR_ACTIONS[verb]:
        transition = TRANSITIONS[action]
        if current in transition.sources:
            return action, ActionResult(job_id, True, transition.target, _DONE_MESSAGES[action])
    return None, ActionResult(job_id, False, current, str(InvalidTransition(job_id, verb, status)))
