"""The ops console's model, computed without Streamlit: rates and ages from stats and history,
the workers table, and the alerts that need an operator.

A worker is alive, silent or stopped as ``jobq.present.worker_state`` says (the words
``jobq workers`` prints too); an older process of a program that started again shows as
restarted, not silent.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from jobq import QueueStats, WorkerInfo
from jobq.backends.base import Bucket
from jobq.present import HEARTBEAT_SECONDS_DEFAULT, WorkerState, ago, duration_text, oldest_pending_age, worker_state
from jobq.web.safety import plain
from jobq.web.views import RESTARTED, count_jobs, database_line, fmt_time

PENDING_ALERT_SECONDS_DEFAULT = 300.0
"""Alert when the oldest due pending job has waited longer than this."""


def ops_caption(url: str) -> str:
    """The tail of the ops console's caption (plain text), never with a password in it."""
    return f"{database_line(url)} · read-only"


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
            "name": plain(w.name),
            "state": _shown_state(w, now, heartbeat_seconds, id(w) in latest),
            "host": plain(w.host),
            "pid": w.pid,
            "started": fmt_time(w.started_at),
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
    # An older process of a program that started again was restarted (e.g. killed, then brought
    # back by supervisord): it is history, not a silent worker.
    return RESTARTED if state == WorkerState.SILENT and not is_latest else state.value


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
) -> list[Alert]:
    """What needs an operator: expired leases, jobs waiting too long, silent workers."""
    alerts: list[Alert] = []
    if stats.expired_leases:
        alerts.append(
            Alert(
                "error",
                f"{count_jobs(stats.expired_leases)} PROCESSING with an expired lease: their worker died or froze; "
                "the rescuer will return them to PENDING.",
            )
        )
    age = oldest_pending_age(stats, now)
    if age is not None and age > pending_alert_seconds:
        alerts.append(
            Alert(
                "warning",
                f"The oldest pending job has waited {duration_text(age)} "
                f"(threshold {duration_text(pending_alert_seconds)}): "
                "are enough consumers running?",
            )
        )
    silent = [w for w in _latest_per_name(workers) if worker_state(w, now, heartbeat_seconds) == WorkerState.SILENT]
    if silent:
        names = ", ".join(f"{plain(w.name)} (pid {w.pid}, last seen {_last_seen(w, now)})" for w in silent[:5])
        alerts.append(Alert("warning", f"Silent worker{'s' if len(silent) > 1 else ''}: {names}."))
    return alerts


def _latest_per_name(workers: Sequence[WorkerInfo]) -> list[WorkerInfo]:
    """The newest process of each program name (older ones were restarted, not silent)."""
    latest: dict[str, WorkerInfo] = {}
    for w in workers:
        if w.name not in latest or w.started_at > latest[w.name].started_at:
            latest[w.name] = w
    return sorted(latest.values(), key=lambda w: w.name)
