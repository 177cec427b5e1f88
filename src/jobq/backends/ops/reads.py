"""Reads for the facade and the apps.

Get, events, list/count/page, counts, stats, latest, history, due history, and a job's waiters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from jobq.backends.base import (
    LATEST_FINISHED_WINDOW,
    STATS_FINISHED_WINDOW,
    Bucket,
    DueHistory,
    JobFilter,
    Page,
    QueueStats,
)
from jobq.backends.common import (
    HISTORY_SAMPLE_LIMIT,
    attempt_from_row,
    build_buckets,
    event_from_row,
    finite_or_none,
    history_of,
    job_from_row,
    recent_history,
    text_of,
)
from jobq.backends.due_history import build_due_history
from jobq.backends.ops.core import TERMINAL_STATUSES, Exec, Op
from jobq.backends.ops.flow import _waiting_on_limit, controls
from jobq.backends.statements import Dialect, Params
from jobq.job import Event, EventKind, Job, JobStatus


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


def settle_waiters_probe(d: Dialect, now: float) -> Op[bool]:
    """Has every registration gone or expired while the finishing statements still run the
    waiters' check (PostgreSQL: a crashed waiter's row; see ``waiters.sql``)? A read."""
    rows = yield Exec(d.sql["waiters_settle_probe"], {"now": now})
    return bool(rows and rows[0][0])


def settle_waiters(d: Dialect, now: float) -> Op[list[bool]]:
    """The expired registrations deleted and, with none left, the finishing statements' waiters'
    check turned off until the next registration, under a lock that no registration or
    unregistration is in flight across, taken and let go by the server alone (one round trip:
    see ``waiters_settle_locked``). ``[True]`` when it was turned off."""
    rows = yield Exec(d.sql["waiters_settle_locked"], {"now": now}, alone=True, several=True)
    return [True] if rows else []


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
    name = "list_jobs"
    # The page of the newest `window` matching jobs; newest first inside the window, it is the
    # same page read plainly along the index, with no sort of the window.
    if page.window is not None and not _newest_first_within(page, page.window):
        name, params["window"] = "list_jobs_window", page.window
    rows = yield Exec(d.stmt(name, where=d.where(where, params), order=order), params)
    return [job_from_row(r) for r in rows]


def count_jobs(d: Dialect, where: JobFilter, up_to: int | None = None) -> Op[int]:
    """How many jobs match; with ``up_to``, at most that many (it stops there: a bounded walk)."""
    params: Params = {}
    name = "count_jobs"
    if up_to is not None:
        name, params["up_to"] = "count_jobs_up_to", up_to
    statuses = list(dict.fromkeys(where.statuses))  # a status named twice is counted once
    if len(statuses) < 2:
        return int((yield Exec(d.stmt(name, where=d.where(where, params)), params))[0][0])
    # Several statuses: one count per status, summed (a job has one status). Each count then
    # walks its status's partial index alone (an index-only scan on PostgreSQL); the statuses
    # OR-ed in one count made PostgreSQL read the table through a bitmap of all of them (the
    # manager's first list at 10,000,000 stored jobs: 450 ms for its count against 25).
    counts = [d.stmt(name, where=d.where(dataclasses.replace(where, statuses=(s,)), params)) for s in statuses]
    total = int((yield Exec("SELECT " + " + ".join(f"({c})" for c in counts), params))[0][0])
    return total if up_to is None else min(total, up_to)


def list_page(d: Dialect, where: JobFilter, page: Page) -> Op[tuple[int, list[Job]]]:
    # One read transaction: the count and the rows describe the same moment ("1-4 of 3" cannot happen).
    window = page.window
    total = yield from count_jobs(d, where, None if window is None else window + 1)
    if window is not None and total <= window:
        page = dataclasses.replace(page, window=None)  # every match is in the window: a plain page
    jobs = (yield from list_jobs(d, where, page)) if total > page.offset else []
    return total, jobs


def _newest_first_within(page: Page, window: int) -> bool:
    """Whether the page, newest first by id, lies among the newest ``window`` jobs: then it is the
    same page with no window, read along the index with no sort of the window."""
    return page.sort == "id" and page.descending and page.offset + page.limit <= window


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
        by_queue.setdefault(text_of(queue), {s.value: 0 for s in JobStatus})[status] = int(n)
        totals[status] = totals.get(status, 0) + int(n)
    capped = sum(int(n) for _, _, n in finished) >= finished_window and bool(
        (yield Exec(d.sql["finished_beyond"], {"window": finished_window}))
    )
    pending = [
        (text_of(q), int(n or 0), None if at is None else float(at), int(r or 0))
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
    backlog = 0  # every PENDING job: the NULL bucket's row
    for b, n in (yield Exec(d.sql["history_pending"], window)):
        if b is None:
            backlog = int(n)
        else:
            kinds.append((b, "enqueued", n))
    kinds += [(b, "completed", n) for b, n in (yield Exec(d.sql["history_completed"], window))]
    for name in ("history_row_claims", "history_carried_claims"):
        kinds += [(b, "claimed", n) for b, n in (yield Exec(d.sql[name], window))]
    durations = yield Exec(d.sql["history_durations"], {"since": since, "limit": HISTORY_SAMPLE_LIMIT})
    kind_counts = [(int(b), kind, int(n)) for b, kind, n in kinds]
    return build_buckets(since, bucket_seconds, now, kind_counts, durations, backlog)


def due_history(d: Dialect, since: float, bucket_seconds: float, now: float, limit: int) -> Op[DueHistory]:
    # Three bounded reads in one transaction (a consistent moment): the due PENDING jobs grouped by
    # bucket, the PROCESSING rows, and the newest `limit` finished rows.
    args = {"since": float(since), "bucket": float(bucket_seconds), "now": float(now)}
    pending = [(int(b), int(n)) for b, n in (yield Exec(d.sql["due_pending_from"], args))]
    running = yield Exec(d.sql["due_running"])
    finished = yield Exec(d.sql["due_finished"], {"since": float(since), "limit": limit})
    rows = []
    earliest_end: float | None = None
    for q, f, s, e in [*running, *finished]:
        # Finite floats, as both drivers return them, are taken as they are (checking every value
        # was a fifth of this read with 13,000 recent jobs at 10,000,000 stored).
        drawn = True
        if not (
            type(f) is float
            and (s is None or type(s) is float)
            and (e is None or type(e) is float)
            and math.isfinite(f + (s or 0.0) + (e or 0.0))
        ):
            # A time written by hand as text (SQLite), NaN or an infinity leaves its job out
            # instead of failing the chart (its end, if it has one, still counts as read).
            times = finite_or_none(f), finite_or_none(s), finite_or_none(e)
            drawn = times[0] is not None and (s is None or times[1] is not None) and (e is None or times[2] is not None)
            f, s, e = times
        if e is not None and (earliest_end is None or e < earliest_end):
            earliest_end = e
        if drawn:
            rows.append((str(q), f, s, e))
    return build_due_history(since, bucket_seconds, now, pending, rows, len(finished), earliest_end, limit)
