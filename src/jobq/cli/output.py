"""The text and JSON that ``jobq`` prints: tables, a job with its history, stats and workers.

Text is a plain aligned table for people; JSON is for scripts, with times as UNIX seconds. Every
value a job or a worker brings (payloads, errors, names) goes through :func:`clean` before it
reaches the terminal: no control character may move the cursor or inject an escape sequence.
Words, durations and ages are the ones the web apps use too (``jobq.present``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from jobq.backends.base import Progress, QueueStats, WorkerInfo
from jobq.errors import JobqError
from jobq.flow import format_rate
from jobq.job import Event, Job, JobStatus
from jobq.present import (
    WorkerState,
    ago,
    clock_skew_text,
    duration_text,
    error_summary,
    oldest_pending_age,
    progress_text,
    queue_text,
    worker_state,
)

#: Table cells longer than this are cut (payloads and errors can be kilobytes).
CELL_MAX_CHARS = 40


class OutputError(JobqError):
    """Standard output cannot be written (a full disk, ``jobq list > /dev/full``)."""


def out(text: str) -> None:
    """Print a line of output (flushed: the reader may be a pipe). A reader gone is the caller's
    (``BrokenPipeError``, quiet); any other failure to write is one error line, not a traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise
    except OSError as exc:
        # Point stdout at /dev/null: the interpreter's last flush would fail on it again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None


def err(text: str, level: str = "error") -> None:
    """Print ``text`` as one ``jobq: error: ...`` line on stderr (``level``: ``warning`` or
    ``note`` for a command that succeeded but has something to say beside its output)."""
    print(f"jobq: {level}: {text}", file=sys.stderr, flush=True)


def clean(text: str, limit: int | None = CELL_MAX_CHARS) -> str:
    """One line of printable text: control characters become spaces (a payload must not move the
    operator's cursor or inject terminal escapes), cut to ``limit`` with ``...``."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text)
    if limit is not None and len(flat) > limit:
        return flat[: max(0, limit - 3)] + "..."
    return flat


def local_iso(ts: float | None) -> str:
    """Local time, ISO 8601 to the second with its UTC offset, or ``"-"``."""
    if ts is None:
        return "-"
    try:
        return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):  # a time written by hand, past year 9999 (or NaN)
        return f"{ts!r} (not a date)"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Plain left-aligned columns separated by two spaces, no trailing blanks."""
    cells = [[str(h) for h in headers], *[[clean(str(c), None) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def compact_json(value: Any) -> str:
    """``value`` as JSON on one line, without spaces (``--jsonl``, payloads in tables)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def job_dict(job: Job) -> dict[str, Any]:
    """A job for JSON output. The lease token is left out: it is the fencing secret of the worker
    holding the job, and nobody reading a listing has a use for it."""
    data = dataclasses.asdict(job)
    data.pop("lease_token", None)
    data["status"] = job.status.value
    return data


def event_dict(event: Event) -> dict[str, Any]:
    """An event for JSON output (its kind as its word)."""
    data = dataclasses.asdict(event)
    data["kind"] = str(event.kind)
    return data


def jobs_table(jobs: Sequence[Job], now: float) -> str:
    """``jobq list``: one row per job, payload and last error cut to ``CELL_MAX_CHARS``."""
    rows = [
        (
            j.id,
            j.status.value,
            queue_text(j.queue),
            j.task or "-",
            f"{j.attempts}/{j.max_attempts}",
            ago(j.created_at, now),
            clean(compact_json(j.payload)),
            clean(error_summary(j.last_error)) if j.last_error else "",
        )
        for j in jobs
    ]
    return format_table(("ID", "STATUS", "QUEUE", "TASK", "ATTEMPTS", "CREATED", "PAYLOAD", "LAST ERROR"), rows)


def job_text(job: Job, events: Sequence[Event], now: float, progress: Progress | None = None) -> str:
    """``jobq show``: the job's fields, its progress, payload and result, then its history."""

    def when(ts: float | None) -> str:
        return "-" if ts is None else f"{local_iso(ts)} ({ago(ts, now)})"

    fields: list[tuple[str, str]] = [
        ("id", str(job.id)),
        ("status", job.status.value + ("  (cancellation requested)" if job.cancel_requested else "")),
        ("queue", queue_text(job.queue)),
        ("task", job.task or "- (default handler)"),
        ("priority", str(job.priority)),
        ("attempts", f"{job.attempts} of {job.max_attempts} (run {job.run})"),
        ("created", when(job.created_at)),
        ("run at", when(job.run_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
        ("updated", when(job.updated_at)),
    ]
    if job.timeout is not None:
        fields.append(("timeout", duration_text(job.timeout)))
    if job.policy is not None:  # what the enqueue set; the task's defaults apply to the rest
        fields.append(("policy", clean(job.policy, 600) + " (set at enqueue)"))
    if job.idempotency_key is not None:
        fields.append(("key", clean(job.idempotency_key, None)))
    if job.lease_owner is not None and job.status == JobStatus.PROCESSING:
        fields.append(("lease", f"held by {job.lease_owner}, expires {when(job.lease_expires_at)}"))
    if progress is not None:
        fields.append(("progress", clean(progress_text(progress, now), 600)))
    if job.last_error:
        fields.append(("last error", clean(error_summary(job.last_error), 2000)))
    if job.defect:
        fields.append(("cannot run", clean(job.defect, 2000)))
    fields.append(("payload", clean(compact_json(job.payload), 2000)))
    if job.result is not None:
        fields.append(("result", clean(compact_json(job.result), 2000)))
    width = max(len(k) for k, _ in fields)
    lines = [f"{k.ljust(width)}  {v}" for k, v in fields]
    lines.append("")
    lines.append(f"events ({len(events)}):")
    rows = [
        (
            local_iso(e.at),
            str(e.kind),
            e.actor or "-",
            "-" if e.attempt is None else e.attempt,
            clean(compact_json(e.detail), 80) if e.detail else "",
        )
        for e in events
    ]
    lines.append(format_table(("AT", "EVENT", "ACTOR", "ATTEMPT", "DETAIL"), rows))
    return "\n".join(lines)


def stats_dict(stats: QueueStats, now: float) -> dict[str, Any]:
    """``jobq stats --json``: the stats, plus how long the oldest pending job has waited."""
    return {
        "counts": stats.counts,
        "by_queue": stats.by_queue,
        "oldest_pending_at": stats.oldest_pending_at,
        "oldest_pending_age_seconds": oldest_pending_age(stats, now),
        "completed_last_minute": stats.completed_last_minute,
        "failed_last_minute": stats.failed_last_minute,
        "expired_leases": stats.expired_leases,
        "finished_window": stats.finished_window,
        "waiting_on_limit_by_queue": stats.waiting_on_limit_by_queue,
        "controls": {q: dataclasses.asdict(c) for q, c in sorted(stats.controls.items())},
    }


def stats_text(stats: QueueStats, now: float) -> str:
    """``jobq stats``: counts by status, then by queue, then age, throughput and expired leases."""
    statuses = [s.value for s in JobStatus]
    total = sum(stats.counts.values())
    lines = [format_table(("STATUS", "JOBS"), [*[(s, stats.counts.get(s, 0)) for s in statuses], ("total", total)])]
    lines.append("")
    rows = [(queue_text(q), *[c.get(s, 0) for s in statuses]) for q, c in sorted(stats.by_queue.items())]
    lines.append(format_table(("QUEUE", *statuses), rows) if rows else "no queues yet")
    lines.append("")
    age = oldest_pending_age(stats, now)
    waiting = "-" if age is None else f"{duration_text(age)} (due {local_iso(stats.oldest_pending_at)})"
    lines.append(f"oldest pending:      {waiting}")
    lines.append(f"completed last min:  {stats.completed_last_minute}")
    lines.append(f"failed last min:     {stats.failed_last_minute}")
    lines.append(f"expired leases:      {stats.expired_leases}")
    if stats.finished_window is not None:
        lines.append(f"(finished jobs counted among the newest {stats.finished_window:,})")
    if stats.controls:
        lines.append("")
        lines.append(controls_text(stats))
    return "\n".join(lines)


def controls_text(stats: QueueStats) -> str:
    """The paused and limited queues of ``jobq stats``, with their due jobs a limit holds back."""
    rows = []
    for queue, c in sorted(stats.controls.items()):
        limits = [f"concurrency {c.concurrency}" if c.concurrency is not None else ""]
        limits.append(f"per key {c.per_key}" if c.per_key is not None else "")
        if c.rate_count is not None and c.rate_window is not None:
            limits.append(f"rate {format_rate(c.rate_count, c.rate_window)}")
        shown = ", ".join(x for x in limits if x) or "-"
        rows.append(
            (queue_text(queue), "yes" if c.paused else "no", shown, stats.waiting_on_limit_by_queue.get(queue, 0))
        )
    return format_table(("QUEUE", "PAUSED", "LIMITS", "WAITING ON LIMIT"), rows)


def worker_dict(worker: WorkerInfo, now: float, heartbeat_seconds: float) -> dict[str, Any]:
    """A worker for JSON output, with its ``state`` (alive, lost, crashed, stopped) and ``alive``."""
    data = dataclasses.asdict(worker)
    state = worker_state(worker, now, heartbeat_seconds)
    data.update(state=state.value, alive=state == WorkerState.ALIVE)
    return data


def workers_table(workers: Sequence[WorkerInfo], now: float, heartbeat_seconds: float) -> str:
    """``jobq workers``: one row per registered worker process. CLOCK (each host's clock against
    the database server's, ahead is +) where one was measured: PostgreSQL, not SQLite's one host."""
    clocks = any(w.clock_skew is not None for w in workers)
    rows = [
        (
            w.name,
            worker_state(w, now, heartbeat_seconds).value,
            w.host,
            w.pid,
            ",".join(w.queues),
            ago(w.started_at, now),
            ago(w.last_seen_at, now),
            *((clock_skew_text(w.clock_skew),) if clocks else ()),
            ",".join(map(str, w.current_jobs)) or "-",
            w.jobs_done,
            w.jobs_failed,
            w.id,
        )
        for w in workers
    ]
    headers = (
        *("NAME", "STATE", "HOST", "PID", "QUEUES", "STARTED", "LAST SEEN"),
        *(("CLOCK",) if clocks else ()),
        *("JOBS", "DONE", "FAILED", "ID"),
    )
    return format_table(headers, rows)
