"""Slots of schedules (``jobq.schedules``): cron in a time zone across DST, intervals, catch-up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import jobq
from jobq.schedules import Schedule


def _utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def _take(spec: Schedule, after: float, n: int) -> list[str]:
    slots = spec.slots(after)
    return [datetime.fromtimestamp(next(slots), UTC).strftime("%m-%d %H:%M") for _ in range(n)]


def test_a_slot_that_does_not_exist_is_skipped() -> None:
    # Paris springs forward on 2026-03-29 at 02:00 -> 03:00: there is no 02:30 that day.
    spec = Schedule("s", "t", cron="30 2 * * *", zone="Europe/Paris")
    assert _take(spec, _utc(2026, 3, 27), 4) == ["03-27 01:30", "03-28 01:30", "03-30 00:30", "03-31 00:30"]


def test_a_repeated_slot_runs_once() -> None:
    # Paris falls back on 2026-10-25 at 03:00 -> 02:00: 02:30 happens twice; it runs at the first.
    spec = Schedule("s", "t", cron="30 * * * *", zone="Europe/Paris")
    assert _take(spec, _utc(2026, 10, 24, 22), 6) == [
        "10-24 22:30",
        "10-24 23:30",
        "10-25 00:30",  # 02:30 CEST
        "10-25 02:30",  # 03:30 CET: the second 02:30 (01:30 UTC) is not a slot
        "10-25 03:30",
        "10-25 04:30",
    ]
    # Starting inside the repeated hour does not run its first 02:30 again.
    assert _take(spec, _utc(2026, 10, 25, 1, 10), 1) == ["10-25 02:30"]


def test_an_every_five_minutes_cron_runs_every_real_five_minutes_across_the_change() -> None:
    spec = Schedule("s", "t", cron="*/5 * * * *", zone="America/New_York")
    start = _utc(2026, 11, 1, 4)  # New York falls back at 06:00 UTC
    slots = spec.slots(start)
    taken = [next(slots) for _ in range(48)]
    # 4 hours of UTC time: the repeated hour's wall times run once, so one hour has no slots.
    assert taken[-1] - taken[0] == 47 * 300 + 3600


def test_interval_slots_are_multiples_of_the_interval() -> None:
    spec = Schedule("s", "t", every=30)
    assert list(zip(range(3), spec.slots(95), strict=False)) == [(0, 120.0), (1, 150.0), (2, 180.0)]
    assert spec.expression == "every 30s"


def test_a_sixth_leading_field_is_seconds() -> None:
    """cronsim reads six fields as seconds first (as Quartz does); docs/schedules.md says so."""
    spec = Schedule("s", "t", cron="*/20 * * * * *")
    assert list(zip(range(3), spec.slots(_utc(2026, 1, 1)), strict=False)) == [
        (n, _utc(2026, 1, 1) + 20 * (n + 1)) for n in range(3)
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "bad cron expression"),
        ({"cron": "* * * * *", "every": 5}, "not both or neither"),
        ({}, "not both or neither"),
        ({"every": 0.5}, "every= must be from 1 second to 100 years"),
        ({"every": 5, "zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"every": 5, "catchup": "some"}, "catchup must be one of latest, all, none"),
    ],
)
def test_bad_schedules_are_refused_in_one_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(jobq.ConfigError, match=message):
        Schedule("s", "t", **kwargs)  # type: ignore[arg-type]


def test_catchup_policies_pick_the_due_slots() -> None:
    # Down from slot 600 until 3,700: slots 600 ... 3,600 passed, the latest 100 s ago.
    for catchup, expected in [("latest", [3600.0]), ("all", [600.0 * n for n in range(1, 7)]), ("none", [])]:
        spec = Schedule("s", "t", every=600, catchup=catchup)
        assert spec.due(600, 3700) == (expected, 4200.0)
    # "none" still runs a slot that is only a little late: it is due, not missed.
    assert Schedule("s", "t", every=600, catchup="none").due(600, 630) == ([600.0], 1200.0)
