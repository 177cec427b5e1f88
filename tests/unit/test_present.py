"""Unit tests of the words, durations and ages the CLI and the web apps share (jobq.present)."""

from __future__ import annotations

import dataclasses
import doctest

import pytest

from jobq import present
from jobq.backends.base import QueueStats, WorkerEnd, WorkerInfo
from jobq.cli import output
from jobq.config import Settings
from jobq.present import WorkerState, ago, duration_text, error_summary, oldest_pending_age, worker_state
from jobq.web import views


@pytest.mark.parametrize(
    ("delta", "text"),
    [(0.2, "now"), (12, "12s ago"), (185, "3m ago"), (7300, "2h ago"), (3 * 86400, "3d ago"), (-10, "in 10s")],
)
def test_ago(delta: float, text: str) -> None:
    assert ago(1000.0 - delta, 1000.0) == text
    assert ago(None, 1000.0) == "-"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (5, "5s"),
        (45, "45s"),
        (185, "3m 5s"),
        (200, "3m 20s"),
        (3601, "1h"),
        (7500, "2h 5m"),
        (7 * 86400, "7d"),
        (90061, "1d 1h"),
        (200_000, "2d 7h"),
        (-3, "0s"),  # a worker's clock ahead of ours
    ],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_duration_text_of_nothing() -> None:
    assert duration_text(None) == duration_text(float("nan")) == present.MISSING == "-"


def test_error_summary_takes_the_last_line_of_a_traceback() -> None:
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n'
    assert error_summary(tb) == "ValueError: boom"
    assert error_summary("plain") == "plain"
    assert error_summary("Traceback ...\n  File x\nValueError: boom\n\n  \n") == "ValueError: boom"
    assert error_summary(None) == error_summary("") == error_summary(" \n ") == ""


def test_worker_state() -> None:
    w = WorkerInfo(id="w", name="n", host="h", pid=1, queues=("default",), started_at=0.0, last_seen_at=100.0)
    assert worker_state(w, 100.0 + 29, heartbeat_seconds=10.0) == "alive"
    assert worker_state(w, 100.0 + 31, heartbeat_seconds=10.0) == "lost"
    stopped = dataclasses.replace(w, stopped_at=120.0)
    assert (
        worker_state(stopped, 121.0, heartbeat_seconds=10.0) == "stopped"
    )  # no reason: a row from before end reasons were recorded
    for reason in WorkerEnd:
        ended = dataclasses.replace(w, stopped_at=120.0, end_reason=reason)
        assert worker_state(ended, 121.0, heartbeat_seconds=10.0) == reason.value  # one word for the end and the state
    # the default heartbeat is the default settings' (a third of a 30 s lease)
    assert Settings().heartbeat_seconds == present.HEARTBEAT_SECONDS_DEFAULT
    assert worker_state(w, 100.0 + 3 * Settings().heartbeat_seconds) == WorkerState.ALIVE
    assert worker_state(w, 100.0 + 3 * Settings().heartbeat_seconds + 1) == WorkerState.LOST


def test_oldest_pending_age() -> None:
    assert oldest_pending_age(QueueStats({}, {}, 900.0, 0, 0, 0), 1000.0) == 100.0
    assert oldest_pending_age(QueueStats({}, {}, 900.0, 0, 0, 0), 800.0) == 0.0  # our clock behind
    assert oldest_pending_age(QueueStats({}, {}, None, 0, 0, 0), 1000.0) is None


def test_the_examples_in_the_docstrings_hold() -> None:
    result = doctest.testmod(present)
    assert result.attempted >= 4 and result.failed == 0


@pytest.mark.parametrize("ts", [1e300, -1e300, 1e20])
def test_a_time_no_calendar_holds_is_shown_not_raised(ts: float) -> None:
    """A time written by hand (``run_at = 1e300``): the manager's list raised OverflowError on it,
    ``jobq show`` printed a count of days with 290 digits."""
    now = 1_800_000_000.0
    assert ago(ts, now) in ("in over 100 years", "over 100 years ago")
    assert duration_text(abs(ts - now)) == "over 100 years"
    if abs(ts) > 1e19:
        assert views.fmt_short_time(ts, now) == views.fmt_time(ts) == views.NOT_A_DATE
        assert output.local_iso(ts) == f"{ts!r} (not a date)"
    assert ago(now + 3 * 86400, now) == "in 3d" and duration_text(7 * 86400) == "7d"  # ordinary times as before
