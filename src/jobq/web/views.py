"""What the manager and ops apps show, computed without Streamlit (so it is unit-testable).

Both apps are thin pages over these helpers and jobq's public API: turning Jobs, stats, history
and workers into pandas frames, formatting times and ages, building filters, summarising action
results, computing alerts and resolving the operator's name. Nothing here touches a database
directly: every read goes through ``jobq.Queue``.
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import hmac
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from jobq import (
    TRANSITIONS,
    Action,
    ActionResult,
    Event,
    Job,
    JobFilter,
    JobqError,
    JobStatus,
    QueueStats,
    WorkerInfo,
)
from jobq.backends.base import Bucket

#: What an operator acts on: the manager's default status filter. A cancelled (or completed) job
#: leaves this view, as in the seed's demo step 6 ("Cancel on PENDING -> disappears").
DEFAULT_STATUSES: tuple[JobStatus, ...] = (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.FAILED)
PAGE_SIZES = (10, 25, 50, 100)
PAGE_SIZE_DEFAULT = 25
SORTS: dict[str, str] = {
    "Newest first": "id",
    "Created": "created_at",
    "Last update": "updated_at",
    "Started": "started_at",
    "Finished": "finished_at",
    "Attempts": "attempts",
    "Priority": "priority",
    "Status": "status",
}
#: A worker is alive while it heartbeats; it counts as silent after this many missed periods.
SILENT_AFTER_HEARTBEATS = 3
HEARTBEAT_SECONDS_DEFAULT = 10.0
PENDING_ALERT_SECONDS_DEFAULT = 300.0
REFRESH_SECONDS_DEFAULT = 5
HISTORY_WINDOW_SECONDS_DEFAULT = 3600.0
HISTORY_BUCKET_SECONDS_DEFAULT = 60.0
PAYLOAD_PREVIEW_CHARS = 120
DASH = "\u2013"
"""Shown for a missing time or value."""
ERROR_PREVIEW_CHARS = 90

STATUS_COLORS: dict[JobStatus, str] = {
    JobStatus.PENDING: "blue",
    JobStatus.PROCESSING: "orange",
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "gray",
}
#: Material Symbols (bundled with Streamlit, so they render in every browser, unlike emoji).
STATUS_ICONS: dict[JobStatus, str] = {
    JobStatus.PENDING: ":material/schedule:",
    JobStatus.PROCESSING: ":material/autorenew:",
    JobStatus.COMPLETED: ":material/check_circle:",
    JobStatus.FAILED: ":material/error:",
    JobStatus.CANCELLED: ":material/block:",
}
#: Text colours for status cells in dataframes (Streamlit's palette, readable on white).
STATUS_CSS: dict[str, str] = {
    "PENDING": "color: #1c6fd1",
    "PROCESSING": "color: #c96a00",
    "COMPLETED": "color: #16883e",
    "FAILED": "color: #d0262f; font-weight: 600",
    "CANCELLED": "color: #6b7280",
    "alive": "color: #16883e",
    "silent": "color: #d0262f; font-weight: 600",
    "stopped": "color: #6b7280",
    "restarted": "color: #6b7280",
}


# -- formatting -------------------------------------------------------------------------------
def fmt_time(ts: float | None) -> str:
    """A UNIX time as local ``YYYY-MM-DD HH:MM:SS`` ("" for None)."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fmt_short_time(ts: float | None, now: float | None = None) -> str:
    """``HH:MM:SS`` for today, ``Mon 28 14:05`` otherwise, ``DASH`` for None (for narrow columns)."""
    if ts is None:
        return DASH
    today = time.localtime(now if now is not None else time.time())[:3]
    local = time.localtime(ts)
    return time.strftime("%H:%M:%S" if local[:3] == today else "%b %d %H:%M", local)


def fmt_age(seconds: float | None) -> str:
    """A duration as a short human string: ``"42s"``, ``"3m 04s"``, ``"2h 05m"``, ``"3d 4h"``.

    >>> fmt_age(185)
    '3m 05s'
    """
    if seconds is None or math.isnan(seconds):
        return DASH
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def fmt_duration(seconds: float | None) -> str:
    """A short run or wait time: ``"0.25s"``, ``"12.3s"``, ``"4m 10s"``."""
    if seconds is None:
        return DASH
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return fmt_age(seconds)


def payload_path(payload: Any) -> str | None:
    """The file path of a seed ``{"path": ...}`` job, else None."""
    if isinstance(payload, Mapping):
        path = payload.get("path")
        if isinstance(path, str):
            return path
    return None


def payload_text(payload: Any, limit: int | None = None) -> str:
    """The payload as compact JSON text, shortened to ``limit`` characters with an ellipsis."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def payload_summary(payload: Any, limit: int = PAYLOAD_PREVIEW_CHARS) -> str:
    """What the jobs table shows: the path for seed jobs, the (shortened) JSON otherwise."""
    return payload_path(payload) or payload_text(payload, limit)


def first_line(text: str | None, limit: int = ERROR_PREVIEW_CHARS) -> str:
    """The last meaningful line of an error (a traceback's last line is the exception), shortened."""
    if not text:
        return ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def status_badge(status: JobStatus | str) -> str:
    """Streamlit markdown for a coloured status badge, e.g. ``:red-badge[:material/error: FAILED]``."""
    st = JobStatus(status)
    return f":{STATUS_COLORS[st]}-badge[{STATUS_ICONS[st]} {st.value}]"


# -- jobs -------------------------------------------------------------------------------------
def can_resubmit(status: JobStatus | str) -> bool:
    """Whether Resubmit is legal for a job in ``status`` (per ``jobq.TRANSITIONS``)."""
    return JobStatus(status) in TRANSITIONS[Action.RESUBMIT].sources


def can_cancel(status: JobStatus | str) -> bool:
    """Whether Cancel is legal: cancel a waiting/failed job, or request it for a running one."""
    st = JobStatus(status)
    return st in TRANSITIONS[Action.CANCEL].sources or st in TRANSITIONS[Action.REQUEST_CANCEL].sources


def job_row(job: Job) -> dict[str, Any]:
    """One row of the jobs tables."""
    return {
        "id": job.id,
        "status": job.status.value,
        "path / payload": payload_summary(job.payload),
        "queue": job.queue,
        "task": job.task,
        "attempts": f"{job.attempts}/{job.max_attempts}",
        "run": job.run,
        "created": fmt_time(job.created_at),
        "started": fmt_time(job.started_at),
        "finished": fmt_time(job.finished_at),
        "last error": first_line(job.last_error),
        "cancel requested": job.cancel_requested,
    }


JOB_COLUMNS = list(job_row(Job(0, "", "", None, JobStatus.PENDING, 0, 0.0, 0, 1, 0.0, 0.0)).keys())


def jobs_frame(jobs: Iterable[Job]) -> pd.DataFrame:
    """The jobs as a frame with the columns of :func:`job_row` (empty frame keeps the columns)."""
    return pd.DataFrame([job_row(j) for j in jobs], columns=JOB_COLUMNS)


def build_filter(
    statuses: Iterable[JobStatus | str] = (), queues: Iterable[str] = (), search: str | None = None
) -> JobFilter:
    """A JobFilter from the sidebar's choices (blank search means no search)."""
    text = (search or "").strip()
    return JobFilter(
        statuses=tuple(JobStatus(s) for s in statuses),
        queues=tuple(q for q in queues if q),
        search=text or None,
    )


def describe_filter(where: JobFilter) -> str:
    """The filter in words, for confirmations: ``status PENDING or FAILED, queue default``."""
    parts = []
    if where.statuses:
        parts.append("status " + " or ".join(s.value for s in where.statuses))
    if where.queues:
        parts.append("queue " + " or ".join(where.queues))
    if where.search:
        parts.append(f"payload containing {where.search!r}")
    return ", ".join(parts) or "all jobs"


def page_count(total: int, size: int) -> int:
    """Number of pages (at least 1) for ``total`` rows at ``size`` per page."""
    return max(1, math.ceil(total / max(1, size)))


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """A readable summary of an operator action, for st.success / st.warning / st.error."""

    level: str
    """``"success"``, ``"warning"`` (partly done) or ``"error"`` (nothing done)."""
    message: str
    done: int
    refused: int


def summarize(results: Sequence[ActionResult], verb: str, max_listed: int = 3) -> Outcome:
    """Summarise ActionResults: ``"Resubmitted 3 jobs. 1 refused: job 7: cannot resubmit ..."``."""
    ok = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    if not results:
        return Outcome("warning", f"No job matched: nothing to {verb.lower()}.", 0, 0)
    past = {"Resubmit": "Resubmitted", "Cancel": "Cancelled"}.get(verb, verb + "ed")
    parts = []
    if ok:
        requested = sum(1 for r in ok if r.status == JobStatus.PROCESSING)
        parts.append(
            f"{past} {_jobs(len(ok))}" + (f" ({requested} running: cancellation requested)" if requested else "") + "."
        )
    if bad:
        reasons = "; ".join(_refusal(r) for r in bad[:max_listed])
        more = f"; and {len(bad) - max_listed} more" if len(bad) > max_listed else ""
        parts.append(f"{len(bad)} refused, nothing changed for {'it' if len(bad) == 1 else 'them'}: {reasons}{more}.")
    level = "success" if not bad else ("warning" if ok else "error")
    return Outcome(level, " ".join(parts), len(ok), len(bad))


def _jobs(n: int) -> str:
    return f"{n:,} job" + ("" if n == 1 else "s")


def _refusal(result: ActionResult) -> str:
    if result.status is None:
        return f"job {result.job_id} not found"
    return result.message or f"job {result.job_id} is {result.status.value}"


def events_frame(events: Iterable[Event]) -> pd.DataFrame:
    """A job's history as a table: when, what, who, attempt, and a one-line detail."""
    rows = []
    for e in events:
        detail = dict(e.detail)
        error = detail.pop("error", None)
        summary = first_line(str(error), 200) if error else ", ".join(f"{k}={v}" for k, v in detail.items())
        rows.append(
            {
                "at": fmt_time(e.at),
                "event": str(e.kind),
                "actor": e.actor or "",
                "attempt": "" if e.attempt is None else str(e.attempt),
                "detail": summary,
            }
        )
    return pd.DataFrame(rows, columns=["at", "event", "actor", "attempt", "detail"])


def event_errors(events: Iterable[Event]) -> list[tuple[Event, str]]:
    """The events that carry an error text (full tracebacks), oldest first."""
    out = []
    for e in events:
        error = e.detail.get("error")
        if error:
            out.append((e, str(error)))
    return out


# -- operator, password, manual enqueue ---------------------------------------------------------
def login_name() -> str:
    """The login name of the user running the app (``uidN`` when it has none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def resolve_operator(typed: str | None, env: Mapping[str, str] | None = None) -> str:
    """The operator recorded as ``actor``: what was typed, else ``JOBQ_OPERATOR``, else the login."""
    env = os.environ if env is None else env
    for candidate in (typed, env.get("JOBQ_OPERATOR")):
        if candidate and candidate.strip():
            return candidate.strip()[:100]
    return login_name()


def expected_password(env: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None) -> str | None:
    """The manager's password: ``JOBQ_MANAGER_PASSWORD`` or the secret ``manager_password``; None: no gate."""
    env = os.environ if env is None else env
    if env.get("JOBQ_MANAGER_PASSWORD"):
        return env["JOBQ_MANAGER_PASSWORD"]
    if secrets is not None:
        value = secrets.get("manager_password") or secrets.get("JOBQ_MANAGER_PASSWORD")
        if value:
            return str(value)
    return None


def password_ok(given: str | None, expected: str) -> bool:
    """Compare in constant time (no timing hints about the password)."""
    return hmac.compare_digest((given or "").encode(), expected.encode())


def validate_path(text: str, data_dir: str | os.PathLike[str] = "data", database_url: str | None = None) -> str:
    """Check a manual job's path as the consumer would; return the payload's path or raise ValueError.

    Uses ``jobq.files.resolve_job_path`` (the consumer's own containment rules: inside the data
    folder, a regular file, no symlink out, not the queue's database). Falls back to a simpler
    local check when that module is not there.
    """
    try:
        from jobq import files
    except ImportError:
        return _validate_path_locally(text, data_dir)
    raw = (text or "").strip()
    if not raw:
        raise ValueError("enter a path, e.g. data/files/report.txt")
    try:
        real = files.resolve_job_path(data_dir, raw, database_url=database_url)
    except JobqError as exc:
        raise ValueError(str(exc)) from None
    return files.job_path_text(data_dir, real)


def _validate_path_locally(text: str, data_dir: str | os.PathLike[str]) -> str:
    raw = (text or "").strip()
    if not raw:
        raise ValueError("enter a path, e.g. data/files/report.txt")
    if any(ord(ch) < 32 for ch in raw) or len(raw) > 1000:
        raise ValueError("the path has control characters or is too long")
    root = (Path(data_dir) / "files").resolve()
    candidate = Path(raw)
    resolved = (candidate if candidate.is_absolute() else Path.cwd() / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"{raw}: not inside {root} (jobs may only name files under the data folder)")
    if not resolved.is_file():
        raise ValueError(f"{raw}: no such file")
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


# -- ops: stats, history, workers, alerts ------------------------------------------------------
def oldest_pending_age(stats: QueueStats, now: float) -> float | None:
    """Seconds the oldest due PENDING job has waited, or None when nothing waits."""
    if stats.oldest_pending_at is None:
        return None
    return max(0.0, now - stats.oldest_pending_at)


def failure_rate(buckets: Sequence[Bucket]) -> float | None:
    """Failed / (completed + failed) over the buckets, or None when nothing finished."""
    done = sum(b.completed for b in buckets)
    failed = sum(b.failed for b in buckets)
    return failed / (done + failed) if done + failed else None


def throughput_per_minute(buckets: Sequence[Bucket], bucket_seconds: float) -> float:
    """Average completed jobs per minute over the buckets."""
    if not buckets:
        return 0.0
    return sum(b.completed for b in buckets) * 60.0 / (len(buckets) * bucket_seconds)


def history_frame(buckets: Sequence[Bucket]) -> pd.DataFrame:
    """The history as a time-indexed frame (local time) for the charts."""
    columns = ["enqueued", "claimed", "completed", "failed", "depth", "wait p50", "wait p95", "run p50", "run p95"]
    rows = [
        {
            "time": datetime.datetime.fromtimestamp(b.start),  # naive local time: what the operator reads
            "enqueued": b.enqueued,
            "claimed": b.claimed,
            "completed": b.completed,
            "failed": b.failed,
            "depth": b.depth,
            "wait p50": b.wait_p50,
            "wait p95": b.wait_p95,
            "run p50": b.run_p50,
            "run p95": b.run_p95,
        }
        for b in buckets
    ]
    frame = pd.DataFrame(rows, columns=["time", *columns])
    return frame.set_index("time")


def worker_state(worker: WorkerInfo, now: float, heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT) -> str:
    """``"stopped"`` (said goodbye), ``"alive"`` (seen within 3 heartbeats) or ``"silent"``."""
    if worker.stopped_at is not None:
        return "stopped"
    if now - worker.last_seen_at <= SILENT_AFTER_HEARTBEATS * heartbeat_seconds:
        return "alive"
    return "silent"


def workers_frame(
    workers: Sequence[WorkerInfo], now: float, heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT
) -> pd.DataFrame:
    """Workers, newest first, with their state and how often supervisord restarted each program.

    Several rows with the same ``name`` (the supervisord program, e.g. consumer1) are successive
    process starts: ``restarts`` is how many starts that name has beyond the first one.
    """
    starts = Counter(w.name for w in workers)
    latest = {id(w) for w in _latest_per_name(workers)}
    rows = [
        {
            "name": w.name,
            "state": _shown_state(w, now, heartbeat_seconds, id(w) in latest),
            "host": w.host,
            "pid": w.pid,
            "started": fmt_time(w.started_at),
            "last heartbeat": fmt_age(now - w.last_seen_at) + " ago",
            "current jobs": ", ".join(str(j) for j in w.current_jobs),
            "jobs done": w.jobs_done,
            "jobs failed": w.jobs_failed,
            "restarts": starts[w.name] - 1,
            "queues": ", ".join(w.queues),
            "id": w.id,
        }
        for w in sorted(workers, key=lambda w: w.started_at, reverse=True)
    ]
    columns = [
        "name",
        "state",
        "host",
        "pid",
        "started",
        "last heartbeat",
        "current jobs",
        "jobs done",
        "jobs failed",
        "restarts",
        "queues",
        "id",
    ]
    return pd.DataFrame(rows, columns=columns)


def _shown_state(worker: WorkerInfo, now: float, heartbeat_seconds: float, is_latest: bool) -> str:
    state = worker_state(worker, now, heartbeat_seconds)
    # An older process of a program that started again was restarted (e.g. killed, then brought
    # back by supervisord): it is history, not a silent worker.
    return "restarted" if state == "silent" and not is_latest else state


def style_cell(value: Any) -> str:
    """CSS for a status or worker-state cell (for ``DataFrame.style.map``), "" for anything else."""
    return STATUS_CSS.get(str(value), "")


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    level: str
    """``"error"`` or ``"warning"``."""
    message: str


def compute_alerts(
    stats: QueueStats,
    workers: Sequence[WorkerInfo],
    now: float,
    *,
    pending_alert_seconds: float = PENDING_ALERT_SECONDS_DEFAULT,
    heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT,
) -> list[Alert]:
    """What needs an operator: expired leases, jobs waiting too long, silent workers."""
    alerts: list[Alert] = []
    if stats.expired_leases:
        alerts.append(
            Alert(
                "error",
                f"{_jobs(stats.expired_leases)} PROCESSING with an expired lease: their worker died or froze; "
                "the rescuer will return them to PENDING.",
            )
        )
    age = oldest_pending_age(stats, now)
    if age is not None and age > pending_alert_seconds:
        alerts.append(
            Alert(
                "warning",
                f"The oldest pending job has waited {fmt_age(age)} (threshold {fmt_age(pending_alert_seconds)}): "
                "are enough consumers running?",
            )
        )
    silent = [w for w in _latest_per_name(workers) if worker_state(w, now, heartbeat_seconds) == "silent"]
    if silent:
        names = ", ".join(f"{w.name} (pid {w.pid}, last seen {fmt_age(now - w.last_seen_at)} ago)" for w in silent[:5])
        alerts.append(Alert("warning", f"Silent worker{'s' if len(silent) > 1 else ''}: {names}."))
    return alerts


def _latest_per_name(workers: Sequence[WorkerInfo]) -> list[WorkerInfo]:
    """The newest process of each program name (older ones were restarted, not silent)."""
    latest: dict[str, WorkerInfo] = {}
    for w in workers:
        if w.name not in latest or w.started_at > latest[w.name].started_at:
            latest[w.name] = w
    return sorted(latest.values(), key=lambda w: w.name)
