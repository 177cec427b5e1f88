"""How jobq shows what it stores to people: one vocabulary for the ``jobq`` CLI and the web apps.

Pure functions of their arguments (no I/O, no terminal, no Streamlit): whether a worker is alive,
how long the oldest pending job has waited, a duration, a time relative to now, and the line of
an error that says what went wrong. Each
medium then makes the text safe in its own way before showing it: ``jobq.cli.output.clean`` for
a terminal, ``jobq.web.safety.plain`` / ``md_literal`` for the apps. Which operator action is
legal for a job is the model's (``jobq.job.operator_actions``), not a presentation rule.
"""

from __future__ import annotations

import enum
import math

from jobq.backends.base import Progress, QueueStats, WorkerEnd, WorkerInfo
from jobq.config import CLOCK_SKEW_CORRECTED_SECONDS, HEARTBEAT_FRACTION_OF_LEASE, LEASE_SECONDS_DEFAULT
from jobq.payloads import names_a_queue

#: A running worker counts as lost once its last heartbeat is older than this many heartbeat periods.
LOST_AFTER_HEARTBEATS = 3
#: The heartbeat period of the default settings (a third of the lease), in seconds.
HEARTBEAT_SECONDS_DEFAULT = LEASE_SECONDS_DEFAULT * HEARTBEAT_FRACTION_OF_LEASE
#: Shown for a missing time or duration.
MISSING = "-"

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_SHOWN_SECONDS_MAX = 100 * 365.25 * 86400
"""Longer durations read "over 100 years": a time written by hand (1e300) was shown as a count
of days with 290 digits."""


class WorkerState(enum.StrEnum):
    """What a registered worker process is doing, as judged from its row in ``workers``: the one
    word the CLI (``jobq workers``) and both apps use for it."""

    ALIVE = "alive"
    """It heartbeated within ``LOST_AFTER_HEARTBEATS`` heartbeat periods."""
    LOST = "lost"
    """No heartbeat for longer than that (killed on another host, frozen, cut off from the
    database), whether or not a rescuer has recorded it yet. Its jobs go back to PENDING when
    their leases expire; a heartbeat makes it alive again."""
    CRASHED = "crashed"
    """It exited without stopping (``kill -9``, a crash): a rescuer found its pid gone."""
    STOPPED = "stopped"
    """It shut down cleanly (said goodbye)."""


_ENDED = {
    WorkerEnd.STOPPED: WorkerState.STOPPED,
    WorkerEnd.CRASHED: WorkerState.CRASHED,
    WorkerEnd.LOST: WorkerState.LOST,
}


def worker_state(worker: WorkerInfo, now: float, heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT) -> WorkerState:
    """Whether ``worker`` is alive, lost, crashed or stopped at ``now`` (UNIX seconds).

    >>> w = WorkerInfo("w1", "consumer1", "host", 42, ("default",), started_at=0.0, last_seen_at=100.0)
    >>> worker_state(w, 125.0, heartbeat_seconds=10.0), worker_state(w, 131.0, heartbeat_seconds=10.0)
    (<WorkerState.ALIVE: 'alive'>, <WorkerState.LOST: 'lost'>)
    """
    if worker.stopped_at is not None:
        # Rows stopped by a jobq from before end reasons (SQLite schema 4, PostgreSQL 5) carry
        # no reason: they were stopped.
        return _ENDED.get(worker.end_reason or WorkerEnd.STOPPED, WorkerState.STOPPED)
    if now - worker.last_seen_at <= LOST_AFTER_HEARTBEATS * heartbeat_seconds:
        return WorkerState.ALIVE
    return WorkerState.LOST


def clock_skew_text(skew: float | None) -> str:
    """A worker's host clock against the store's (``WorkerInfo.clock_skew``), signed: ahead is +.

    >>> clock_skew_text(60.04), clock_skew_text(-0.2), clock_skew_text(None)
    ('+60.0 s', '-0.2 s', '-')
    """
    if skew is None or not math.isfinite(skew):
        return MISSING
    return f"{skew:+.1f} s"


def skewed(worker: WorkerInfo) -> bool:
    """Whether the worker's host clock is off by enough that jobq corrects it
    (``CLOCK_SKEW_CORRECTED_SECONDS``): a host whose NTP an operator should look at."""
    skew = worker.clock_skew
    return skew is not None and math.isfinite(skew) and abs(skew) >= CLOCK_SKEW_CORRECTED_SECONDS


def oldest_pending_age(stats: QueueStats, now: float) -> float | None:
    """Seconds the oldest due PENDING job has waited at ``now``, or None when nothing waits."""
    if stats.oldest_pending_at is None:
        return None
    return max(0.0, now - stats.oldest_pending_at)


def duration_text(seconds: float | None) -> str:
    """A duration for people, to the second: ``"45s"``, ``"3m 20s"``, ``"2h 5m"``, ``"7d"``.

    Two units at most, the second left out when it is zero. Negative durations count as 0;
    None (or NaN) gives ``"-"``.

    >>> duration_text(200), duration_text(7500), duration_text(3601)
    ('3m 20s', '2h 5m', '1h')
    """
    if seconds is None or math.isnan(seconds):
        return MISSING
    if seconds > _SHOWN_SECONDS_MAX:
        return "over 100 years"
    s = max(0, round(seconds))
    for i, (unit, size) in enumerate(_UNITS):
        if s >= size or unit == "s":
            text = f"{s // size}{unit}"
            if i + 1 < len(_UNITS):
                next_unit, next_size = _UNITS[i + 1]
                rest = s % size // next_size
                if rest:  # "2h 5m", but "2h" rather than "2h 0m"
                    text += f" {rest}{next_unit}"
            return text
    return "0s"  # unreachable: the "s" unit always matches


def queue_text(name: str) -> str:
    """A queue's name as shown: quoted when it is one no worker can serve (empty, or beginning or
    ending with a space; stored by an older jobq, or by hand), which showed as a blank cell or as
    the name it looks like."""
    return name if names_a_queue(name) else repr(name)


def ago(ts: float | None, now: float) -> str:
    """When ``ts`` was, relative to ``now``, in its largest unit: ``"12s ago"``, ``"3m ago"``,
    ``"2d ago"``, ``"in 10s"`` (a time to come), ``"now"`` (within a second) or ``"-"`` (None).

    >>> ago(815.0, 1000.0), ago(1010.0, 1000.0)
    ('3m ago', 'in 10s')
    """
    if ts is None:
        return MISSING
    delta = now - ts
    future = delta < 0
    seconds = abs(delta)
    if seconds < 1:
        return "now"
    if not seconds <= _SHOWN_SECONDS_MAX:  # also NaN
        return "in over 100 years" if future else "over 100 years ago"
    for unit, size in _UNITS:
        if seconds >= size:
            text = f"{int(seconds // size)}{unit}"
            return f"in {text}" if future else f"{text} ago"
    return "now"  # unreachable: seconds >= 1 matched "s"


def error_summary(text: str | None) -> str:
    """The line of an error that says what went wrong: the last line that is not blank (for a
    stored traceback, the exception), stripped; ``""`` when there is none.

    Not yet safe to show: pass it through the medium's cleaner (``clean``, ``plain``).

    >>> error_summary('Traceback (most recent call last):\\n  File "x.py", line 1\\nValueError: boom\\n')
    'ValueError: boom'
    """
    if not text:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def progress_text(progress: Progress | None, now: float) -> str:
    """A run's last reported progress for people: ``"40% - 4 of 10 files (3s ago)"``, or ``"-"``.

    >>> progress_text(Progress(1, 0.4, "4 of 10 files", 97.0), 100.0)
    '40% - 4 of 10 files (3s ago)'
    """
    if progress is None:
        return "-"
    parts = [f"{progress.fraction * 100:.0f}%"] if progress.fraction is not None else []
    if progress.message:
        parts.append(" ".join(progress.message.split()))
    return f"{' - '.join(parts) or 'reported'} ({duration_text(now - progress.at)} ago)"
