"""Reads for metrics and tracing.

Progress, trace contexts, queue gauges, and the cursors and totals the exporter reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from jobq.backends.base import (
    CompletionTotals,
    EventTotals,
    HistogramBounds,
    HistogramCounts,
    MetricEvent,
    Progress,
    QueueGauges,
)
from jobq.backends.common import number_or_none, text_of
from jobq.backends.ops.core import Exec, Op
from jobq.backends.statements import Dialect, Params
from jobq.job import EventKind
from jobq.payloads import loads

METRICS_CLOCK_AHEAD_MAX_SECONDS = 300.0
"""How far past the metrics reads' settle cutoff a row's time may be and still count as young (held
back for a later read). A time further on was written by hand or by a host whose clock is that far
ahead: it is counted at once, since holding it back would hold back every row after it for good
(the exporter's enqueue or event counters stopped). NTP keeps hosts within far less."""


# -- observability ------------------------------------------------------------------------------
def progress_of(d: Dialect, job_ids: Sequence[int]) -> Op[dict[int, Progress]]:
    params: Params = {}
    rows = yield Exec(d.stmt("progress_of_jobs", ids=d.any_of("id", "ids", sorted(set(job_ids)), params)), params)
    return {int(r[0]): _progress(r) for r in rows}


def _progress(row: Sequence[Any]) -> Progress:
    """A job's progress as read. Values of the wrong type (written by hand: progress = 'half')
    are read as none: ``jobq show`` failed on one with a ValueError."""
    fraction, message, at = row[1], row[2], row[3]
    number = isinstance(fraction, int | float) and not isinstance(fraction, bool) and 0 <= fraction <= 1
    when = isinstance(at, int | float) and not isinstance(at, bool) and math.isfinite(at)
    return Progress(
        int(row[0]),
        float(fraction) if number else None,
        message if isinstance(message, str) else None,
        float(at) if when else 0.0,
    )


def trace_contexts(d: Dialect, job_ids: Sequence[int]) -> Op[dict[int, str]]:
    params: Params = {}
    rows = yield Exec(d.stmt("trace_contexts", ids=d.any_of("id", "ids", sorted(set(job_ids)), params)), params)
    return {int(r[0]): str(r[1]) for r in rows}


def queue_gauges(d: Dialect, now: float, backlog: bool = True) -> Op[dict[str, QueueGauges]]:
    pending = {}
    rows = (yield Exec(d.sql["metric_pending"], {"now": now})) if backlog else []
    for q, n, later, first in rows:
        oldest = number_or_none(first)  # text written by hand on SQLite: never due
        due = oldest if oldest is not None and oldest <= now else None
        pending[text_of(q)] = (int(n), int(n) - int(later or 0), due)
    running = {text_of(q): (int(n), int(x or 0)) for q, n, x in (yield Exec(d.sql["metric_processing"], {"now": now}))}
    out = {}
    for queue in sorted(pending.keys() | running.keys()):
        n, due, oldest = pending.get(queue, (0, 0, None))
        r, expired = running.get(queue, (0, 0))
        out[queue] = QueueGauges(due, n - due, oldest, r, expired)
    return out


def last_event_id(d: Dialect, before: float | None = None) -> Op[int]:
    if before is None:
        return int((yield Exec(d.sql["metric_last_event_id"]))[0][0])
    rows = yield Exec(d.sql["metric_last_event_id_before"], {"before": before})
    return int(rows[0][0]) if rows else 0


def events_after(d: Dialect, after_id: int, limit: int) -> Op[list[MetricEvent]]:
    rows = yield Exec(d.sql["metric_events"], {"after": after_id, "limit": limit})
    # One C-level tuple per event (the exporter reads one per unusual event); both drivers return
    # the columns as the tuple wants them (id an int, kind a str).
    return [MetricEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], _claimed_at(r[8])) for r in rows]


def _cursor_range(d: Dialect, table: str, after_id: int, until: float, limit: int) -> Op[tuple[int, bool]]:
    """Where one metrics read over ``table``'s primary key (``event`` or ``job``) ends: ``limit``
    ids on from the first row after the cursor (fewer rows where ids have gaps), or the last row;
    before the first row newer than ``until``, by no more than ``METRICS_CLOCK_AHEAD_MAX_SECONDS``
    (then held back: True). An end at or below ``after_id`` means nothing to read. Two seeks of
    the primary key, whatever the range holds."""
    first = (yield Exec(d.sql[f"metric_{table}_first"], {"after": after_id}))[0][0]
    if first is None:
        return after_id, False
    last = int((yield Exec(d.sql[f"metric_last_{table}_id"]))[0][0])
    end = min(int(first) + max(1, limit) - 1, last)
    if until != math.inf and end > after_id:
        horizon = until + METRICS_CLOCK_AHEAD_MAX_SECONDS
        params: Params = {"after": after_id, "end": end, "until": until, "horizon": horizon}
        rows = yield Exec(d.sql[f"metric_{table}_unsettled"], params)
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
    counts = {
        (text_of(q), text_of(k)): int(n) for q, k, n in (yield Exec(d.stmt("metric_event_counts", kinds=kinds), params))
    }
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


def last_job_id(d: Dialect, before: float | None = None) -> Op[int]:
    if before is None:
        return int((yield Exec(d.sql["metric_last_job_id"]))[0][0])
    rows = yield Exec(d.sql["metric_last_job_id_before"], {"before": before})
    return int(rows[0][0]) if rows else 0


def enqueue_totals(d: Dialect, after_id: int, until: float, limit: int) -> Op[tuple[int, dict[str, int], bool]]:
    """Up to three reads in one transaction (one snapshot), as ``event_totals`` over the jobs'
    primary key: where this read ends (the ``limit``-th job, or the last one; before the first
    made after ``until``), then the jobs made in that range counted by queue."""
    end, held_back = yield from _cursor_range(d, "job", after_id, until, limit)
    if end <= after_id:
        return after_id, {}, held_back
    rows = yield Exec(d.sql["metric_enqueue_counts"], {"after": after_id, "end": end})
    return end, {text_of(q): int(n) for q, n in rows}, held_back


def completion_cursor(d: Dialect, now: float) -> Op[tuple[float, int]]:
    rows = yield Exec(d.sql["metric_completion_cursor"], {"now": now})
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
    """Reads in one transaction (one snapshot): where this fold ends, then the sums up to there.

    The usual fold takes every completion up to ``until``: the last one, then the sums of at most
    ``limit`` + 1. Only when that finds more than ``limit`` (an exporter catching up) does it read
    again, for at most ``limit``: it then ends between two instants when it can (one OFFSET along
    the index, no count, no sort), so it folds fewer than ``limit``, and only an empty fold says
    none are left. Only when more than ``limit`` completions share the first instants after the
    cursor does it split an instant, by id (a sort of the range)."""
    span: Params = {"at": after[0], "id": after[1], "until": until}
    rows = yield Exec(d.sql["metric_completion_last"], span)
    if not rows:
        return after, {}
    end, queue = (float(rows[0][0]), int(rows[0][1])), rows[0][2]  # queue: summed by slots alone
    # A probe along the range first cost 8 % of the fold: read only when more are left.
    folded, n = yield from _completion_sums(d, after, end, queue, limit, bounds)
    if n <= limit:
        return end, folded
    rows = yield Exec(d.sql["metric_completion_probe"], {**span, "skip": limit})
    if rows:  # more than `limit` left: end before the instant of the first one past the limit
        before = float(rows[0][0])
        rows = yield Exec(d.sql["metric_completion_last"], {**span, "until": math.nextafter(before, -math.inf)})
        if not rows:  # the instants from the cursor on hold more than `limit`: split by id
            rows = yield Exec(d.sql["metric_completion_bound"], {**span, "skip": max(0, limit - 1)})
    else:  # fewer now (PostgreSQL reads each statement's own snapshot: some were purged)
        rows = yield Exec(d.sql["metric_completion_last"], span)
    if not rows:
        return after, {}
    end = (float(rows[0][0]), int(rows[0][1]))
    folded, _ = yield from _completion_sums(d, after, end, queue, limit, bounds)
    return end, folded


def _completion_sums(
    d: Dialect, after: tuple[float, int], end: tuple[float, int], queue: Any, limit: int, bounds: HistogramBounds
) -> Op[tuple[dict[str, CompletionTotals], int]]:
    """The completions after ``after`` up to ``end``, at most ``limit`` + 1, summed per queue, and
    how many were summed (``limit`` + 1: more were left, and the sums are of some of them)."""
    params: Params = {"at": after[0], "id": after[1], "end_at": end[0], "end_id": end[1]}
    params.update(queue=queue, rows=limit + 1)
    # The three slots (-1 for NULL up to len(bounds)) as the digits of one number, each + 1.
    base = max(len(b) for b in bounds) + 2
    digits = (base * base, base, 1)
    slots = (
        d.bucket_of("wait", "w", bounds.wait, params),
        d.bucket_of("run", "r", bounds.run, params),
        d.bucket_of("attempts", "a", bounds.attempts, params),
    )
    key = " + ".join(f"(({slot}) + 1) * {digit}" for slot, digit in zip(slots, digits, strict=True))
    sql = d.stmt("metric_completion_totals", slots=key)
    # One row per queue and combination of slots (a handful): summed up per queue here. The
    # slots come as a number for `queue`, with the queue's name after them for another (a blob
    # on SQLite, text on PostgreSQL). Summed by the name as text: a blob 'mail' and a text 'mail'
    # written by hand are two keys to the store and one queue to a reader.
    sums: dict[str, list[Any]] = {}
    summed = 0
    for slots_of, n, *totals in (yield Exec(sql, params)):
        if type(slots_of) is int:
            q, packed = text_of(queue), slots_of
        else:
            packed_part, q = text_of(slots_of).split(" ", 1)
            packed = int(packed_part)
        summed += n
        acc = sums.get(q)
        if acc is None:
            acc = sums[q] = [0, *([0] * (len(b) + 1) for b in bounds), [0.0, 0.0, 0.0]]
        acc[0] += n
        for i, digit in enumerate(digits):
            slot = packed // digit % base - 1
            if slot >= 0:
                acc[1 + i][slot] += n
        for i, total in enumerate(totals):
            acc[4][i] += total or 0.0
    out = {
        q: CompletionTotals(int(acc[0]), *(HistogramCounts(tuple(acc[1 + i]), float(acc[4][i])) for i in range(3)))
        for q, acc in sums.items()
    }
    return out, summed
