"""The ops console's model, computed without Streamlit: rates and ages from stats and history,
the workers table, and the alerts that need an operator.

A worker is alive, lost, crashed or stopped as ``jobq.present.worker_state`` says (the words
``jobq workers`` prints too); an older lost process of a program that started again shows as
restarted. A crash stays an alert for ``CRASH_ALERT_SECONDS_DEFAULT`` even after supervisord
restarted the program: the operator should know it happened.
"""

from __future__ import annotations

import dataclasses
import datetime
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from jobq import QueueStats, WorkerInfo
from jobq.backends.base import Bucket, DueHistory, QueueWait
from jobq.flow import format_rate
from jobq.payloads import names_a_queue
from jobq.present import (
    HEARTBEAT_SECONDS_DEFAULT,
    WorkerState,
    ago,
    clock_skew_text,
    duration_text,
    queue_text,
    skewed,
    worker_state,
)
from jobq.web.safety import plain
from jobq.web.supervisor import ProgramState, troubled
from jobq.web.views import RESTARTED, count_jobs, database_line, fmt_short_time

PENDING_ALERT_SECONDS_DEFAULT = 300.0
"""Alert when the oldest due pending job of a queue has waited longer than this."""
CRASH_ALERT_SECONDS_DEFAULT = 900.0
"""A crashed (or lost) worker stays an alert this long after it ended."""
NAMES_SHOWN = 5
"""Most names an alert lists (then "and N more")."""


def manager_base(manager_url: str | None) -> tuple[str | None, str | None]:
    """The manager's URL to link jobs to (None: unknown) and, when the setting is unusable, why.

    Only an ``http(s)://host/...`` URL is linked: anything else in a link would be a trap (a
    ``javascript:`` URL runs in the ops page when clicked)."""
    if not manager_url or not manager_url.strip():
        return None, None
    parts = urllib.parse.urlsplit(manager_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None, f"JOBQ_MANAGER_URL is not an http(s) URL: {plain(manager_url, 80)}; jobs are not linked."
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", "")), None


def job_link(job_id: int, manager: str | None) -> str:
    """Where ops sends the operator for a job: the manager with the job open (its deep link,
    ``?job=ID``), or, without a manager URL, the command that shows it."""
    if manager is None:
        return f"jobq show {job_id}"
    return f"{manager}?{urllib.parse.urlencode({'job': job_id})}"


JOB_LINK_TEXT = r"[?&]job=(\d+)"
"""What a job link shows (``LinkColumn(display_text=...)``): the id from its URL."""


def ops_caption(url: str) -> str:
    """The tail of the ops console's caption (plain text), never with a password in it."""
    return f"{database_line(url)} · read-only"


def failure_rate(buckets: Sequence[Bucket]) -> float | None:
    """Failed / (completed + failed) over the buckets, or None when nothing finished."""
    done = sum(b.completed for b in buckets)
    failed = sum(b.failed for b in buckets)
    return failed / (done + failed) if done + failed else None


def attempt_failure_rate(buckets: Sequence[Bucket]) -> float | None:
    """Failed attempts / attempts over the buckets, retried ones included (an attempt that failed
    and will retry is a failure too), or None when no attempt finished."""
    done = sum(b.completed for b in buckets)
    failed = sum(b.failed + b.retried for b in buckets)
    return failed / (done + failed) if done + failed else None


def queue_health_frame(
    stats: QueueStats,
    workers: Sequence[WorkerInfo],
    now: float,
    heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT,
    waits: Mapping[str, QueueWait] | None = None,
) -> pd.DataFrame:
    """One row per queue: due, scheduled (of which waiting to retry), running, failed, how long
    its oldest due job has waited, how long its recently claimed jobs waited (p50/p95, from
    ``waits``: ``Queue.due_history``) and how many live workers serve it. Sorted by queue name."""
    waits = waits or {}
    live = [w for w in workers if worker_state(w, now, heartbeat_seconds) == WorkerState.ALIVE]
    names = sorted(set(stats.by_queue) | set(stats.due_by_queue) | set(waits) | {q for w in live for q in w.queues})
    rows = []
    for queue in names:
        counts = stats.by_queue.get(queue, {})
        due = stats.due_by_queue.get(queue, 0)
        oldest = stats.oldest_due_by_queue.get(queue)
        rows.append(
            {
                "queue": plain(queue_text(queue)),
                "due": due,
                "scheduled": max(0, counts.get("PENDING", 0) - due),
                "waiting to retry": stats.retrying_by_queue.get(queue, 0),
                "running": counts.get("PROCESSING", 0),
                "failed": counts.get("FAILED", 0),
                "oldest due waited": duration_text(max(0.0, now - oldest)) if oldest is not None else "-",
                "wait p50": _wait_text(waits.get(queue), "p50"),
                "wait p95": _wait_text(waits.get(queue), "p95"),
                "live workers": sum(1 for w in live if queue in w.queues),
            }
        )
    columns = [
        "queue",
        "due",
        "scheduled",
        "waiting to retry",
        "running",
        "failed",
        "oldest due waited",
        "wait p50",
        "wait p95",
        "live workers",
    ]
    return pd.DataFrame(rows, columns=columns)


def _wait_text(wait: QueueWait | None, which: str) -> str:
    value = getattr(wait, which) if wait is not None else None
    return wait_text(value)


def wait_text(seconds: float | None) -> str:
    """A wait for people: ``"40ms"`` and ``"2.5s"`` where a healthy queue's waits are, then as
    ``duration_text`` (``"3m 20s"``); ``"-"`` for None."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{max(0.0, seconds) * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    return duration_text(seconds)


def due_frame(history: DueHistory) -> pd.DataFrame:
    """Due jobs at the end of each bucket as a time-indexed frame (local time) for the depth
    chart; buckets before ``covers_since`` (not read) are empty, not zero."""
    frame = pd.DataFrame(
        {
            "time": [datetime.datetime.fromtimestamp(t) for t in history.starts],
            "due": pd.array(history.due, dtype="Int64"),
        }
    )
    return frame.set_index("time")


def due_coverage_text(history: DueHistory) -> str:
    """What the due chart and the queues' wait columns cover, in words."""
    base = (
        "Due jobs: pending jobs whose time has come, at the end of each bucket (scheduled ones are not due yet). "
        "They and the queues' waits come from the job rows: each job's latest wait, from due to claimed "
        "(a retried job's earlier waits are not kept)."
    )
    limit = history.sample_limit
    if limit is None:
        return base + " Waits: jobs claimed in the chart window."
    return (
        base + f" More than {limit:,} jobs finished in the chart window: both cover only the time "
        f"since {fmt_short_time(history.covers_since)} (the newest {limit:,} finished jobs)."
    )


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


def workers_frame(
    workers: Sequence[WorkerInfo], now: float, heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT
) -> pd.DataFrame:
    """Workers, newest first, with their state and how often supervisord restarted each program.

    Several rows with the same ``name`` (the supervisord program, e.g. consumer1) are successive
    process starts: ``restarts`` is how many starts that name has beyond the first one.
    """
    starts = Counter(w.name for w in workers)
    latest = {id(w) for w in latest_per_name(workers)}
    rows = [
        {
            "name": plain(w.name),
            "state": _shown_state(w, now, heartbeat_seconds, id(w) in latest),
            "host": plain(w.host),
            "pid": w.pid,
            # Short (today's as HH:MM:SS; the zone is in the column's help): at 1366 px the
            # table fits without scrolling sideways.
            "started": fmt_short_time(w.started_at, now),
            "last heartbeat": _last_seen(w, now),
            "current jobs": ", ".join(str(j) for j in w.current_jobs),
            "jobs done": w.jobs_done,
            "jobs failed": w.jobs_failed,
            "restarts": starts[w.name] - 1,
            "queues": plain(", ".join(w.queues)),
            "id": plain(w.id),
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
    # An older lost process of a program that started again was restarted (e.g. frozen, then
    # brought back by supervisord): it is history. A crash keeps its word: it did crash.
    return RESTARTED if state == WorkerState.LOST and not is_latest else state.value


def _last_seen(worker: WorkerInfo, now: float) -> str:
    # A worker on another host may have a clock slightly ahead of ours: its heartbeat is "now",
    # not "in 2s".
    return ago(min(worker.last_seen_at, now), now)


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """Something that needs an operator, for st.error / st.warning."""

    level: str
    """``"error"`` or ``"warning"``."""
    message: str
    """Plain text (names in it went through ``safety.plain``): show it with ``safety.md_literal``."""


def compute_alerts(
    stats: QueueStats,
    workers: Sequence[WorkerInfo],
    now: float,
    *,
    pending_alert_seconds: float = PENDING_ALERT_SECONDS_DEFAULT,
    heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT,
    crash_alert_seconds: float = CRASH_ALERT_SECONDS_DEFAULT,
    programs: Sequence[ProgramState] = (),
    supervisor_error: str | None = None,
    frozen_writers: Sequence[str] = (),
    lock_blockers: Sequence[str] = (),
) -> list[Alert]:
    """What needs an operator, errors first: a process holding SQLite's write lock, stopped or
    inside a transaction left open (``frozen_writers``), a PostgreSQL session keeping writes
    waiting for its locks (``lock_blockers``; both ``Queue.blockers``), expired leases, no live
    worker (at all, or for a queue with due jobs), crashed workers, programs supervisord gave up
    on; then queues whose oldest due job waited too long, lost workers, an unreachable
    supervisord."""
    states = {id(w): worker_state(w, now, heartbeat_seconds) for w in workers}
    live = [w for w in workers if states[id(w)] == WorkerState.ALIVE]
    errors: list[Alert] = []
    warnings: list[Alert] = []
    if frozen_writers:
        # First: it explains the other alerts it causes (leases expiring, due jobs waiting).
        errors.append(
            Alert(
                "error",
                f"Every write waits: the queue's write lock is held by {_names(frozen_writers)}. "
                "Nothing can take it from that process: continue it if it is stopped, end its "
                "transaction, or stop it (its open transaction is then rolled back).",
            )
        )
    if lock_blockers:
        # As first: the expired leases and waiting jobs that follow come from it.
        errors.append(Alert("error", f"Writes wait for a lock held by {_names(lock_blockers)}."))
    if stats.expired_leases:
        errors.append(
            Alert(
                "error",
                f"{count_jobs(stats.expired_leases)} PROCESSING with an expired lease: their worker died or froze; "
                "the rescuer will return them to PENDING.",
            )
        )
    due = {q: n for q, n in sorted(stats.due_by_queue.items()) if n > 0}
    if not live:
        if due:
            errors.append(Alert("error", f"No worker is alive, and {_due_text(due)}: nothing will run them."))
        else:
            warnings.append(Alert("warning", "No worker is alive: new jobs will wait until one starts."))
    else:
        served = {q for w in live for q in w.queues}
        unserved = {q: n for q, n in due.items() if q not in served}
        if unserved:
            errors.append(Alert("error", f"No live worker serves {_due_text(unserved)}."))
    crashed = [
        w
        for w in workers
        if states[id(w)] == WorkerState.CRASHED and now - (w.stopped_at or now) <= crash_alert_seconds
    ]
    if crashed:
        crashed.sort(key=lambda w: w.stopped_at or 0.0, reverse=True)
        names = _names(f"{plain(w.name)} (pid {w.pid}, {ago(w.stopped_at, now)})" for w in crashed)
        errors.append(
            Alert(
                "error",
                f"Worker{'s' if len(crashed) > 1 else ''} crashed (exited without stopping): {names}. "
                "Its jobs were returned to PENDING; see the program's log for why.",
            )
        )
    bad_programs = troubled(programs)
    if bad_programs:
        names = _names(
            f"{plain(p.name)} {p.state}" + (f" ({plain(p.description)})" if p.description else "") for p in bad_programs
        )
        errors.append(Alert("error", f"supervisord: {names}."))
    oldest = stats.oldest_due_by_queue or ({"": stats.oldest_pending_at} if stats.oldest_pending_at is not None else {})
    for queue, at in sorted(oldest.items()):
        age = max(0.0, now - at)
        if age > pending_alert_seconds:
            where = f"In queue {plain(queue)}, the" if queue else "The"
            warnings.append(
                Alert(
                    "warning",
                    f"{where} oldest due job has waited {duration_text(age)} "
                    f"(threshold {duration_text(pending_alert_seconds)}): are enough workers serving it?",
                )
            )
    lost = [
        w
        for w in latest_per_name(workers)
        if states[id(w)] == WorkerState.LOST and (w.stopped_at is None or now - w.stopped_at <= crash_alert_seconds)
    ]
    if lost:
        names = _names(f"{plain(w.name)} (pid {w.pid}, last seen {_last_seen(w, now)})" for w in lost)
        warnings.append(Alert("warning", f"Lost worker{'s' if len(lost) > 1 else ''} (no heartbeat): {names}."))
    off = [w for w in live if skewed(w)]
    if off:
        hosts = _names(
            f"{plain(w.host)} {clock_skew_text(w.clock_skew)} (worker {plain(w.name)})"
            for w in sorted(off, key=lambda w: -abs(w.clock_skew or 0.0))
        )
        warnings.append(
            Alert(
                "warning",
                f"Clock off against the database server's (ahead is +): {hosts}. jobq stamps by the "
                "server's time meanwhile, but the host's own logs and programs read its clock: keep "
                "it in sync (NTP).",
            )
        )
    if supervisor_error:
        warnings.append(Alert("warning", f"supervisord did not answer: {plain(supervisor_error)}"))
    return errors + warnings


def _due_text(due: dict[str, int]) -> str:
    return _names(f"{count_jobs(n)} due in queue {_queue_text(q)}" for q, n in due.items())


def _queue_text(queue: str) -> str:
    """A queue's name in an alert. One that no worker can be told to serve (empty, or beginning or
    ending with a space: stored by an older jobq, or by hand) is quoted and said to be so: shown
    plain, "queue ." and "queue mail ." told the operator nothing."""
    shown = plain(queue_text(queue))
    if names_a_queue(queue):
        return shown
    return f"{shown} (a name no worker can serve: jobq move --queue {shown} --to QUEUE moves its jobs)"


def _names(items: Iterable[str]) -> str:
    shown = list(items)
    rest = len(shown) - NAMES_SHOWN
    return ", ".join(shown[:NAMES_SHOWN]) + (f" and {rest} more" if rest > 0 else "")


def latest_per_name(workers: Sequence[WorkerInfo]) -> list[WorkerInfo]:
    """The newest process of each program name (older lost ones were restarted)."""
    latest: dict[str, WorkerInfo] = {}
    for w in workers:
        if w.name not in latest or w.started_at > latest[w.name].started_at:
            latest[w.name] = w
    return sorted(latest.values(), key=lambda w: w.name)


def flow_control_frame(stats: QueueStats) -> pd.DataFrame:
    """One row per paused or limited queue (docs/flow-control.md): paused or not, its limits, and
    its due jobs a limit holds back right now ("waiting on a limit"). Empty when no queue has any."""
    rows = []
    for queue, c in sorted(stats.controls.items()):
        limits = [
            f"concurrency {c.concurrency}" if c.concurrency is not None else "",
            f"per key {c.per_key}" if c.per_key is not None else "",
            f"rate {format_rate(c.rate_count, c.rate_window)}" if c.rate_count and c.rate_window else "",
        ]
        rows.append(
            {
                "queue": plain(queue_text(queue)),
                "paused": f"yes (by {plain(c.paused_by or '-')})" if c.paused else "no",
                "limits": ", ".join(x for x in limits if x) or "-",
                "waiting on a limit": stats.waiting_on_limit_by_queue.get(queue, 0),
            }
        )
    return pd.DataFrame(rows, columns=["queue", "paused", "limits", "waiting on a limit"])
