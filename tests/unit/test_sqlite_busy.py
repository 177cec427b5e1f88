"""jobq's busy handler on SQLite (jobq.backends.sqlite.busy): its schedule, as data."""

from __future__ import annotations

import pytest

from jobq.backends.sqlite import busy
from jobq.backends.sqlite.busy import (
    BACKOFF_CAP_SECONDS,
    POLL_SECONDS,
    POLL_UNTIL_SECONDS,
    SQLITE_SLEEPS_SECONDS,
    BusyHandler,
    pause,
)

LOW, HIGH = POLL_SECONDS


def test_a_write_first_sleeps_as_sqlites_own_handler_does() -> None:
    waited = 0.0
    for count, sleep in enumerate(SQLITE_SLEEPS_SECONDS):
        assert pause(count, waited, 2.0, 0.5) == sleep
        waited += sleep
    assert SQLITE_SLEEPS_SECONDS == (0.001, 0.002, 0.005, 0.010, 0.015, 0.020)  # sqliteDefaultBusyCallback's


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_then_it_polls_as_often_as_a_batch_comes_back_for_the_lock(draw: float) -> None:
    first = len(SQLITE_SLEEPS_SECONDS)
    for count, waited in [
        (first, sum(SQLITE_SLEEPS_SECONDS)),
        (first + 50, 0.1),
        (first + 200, POLL_UNTIL_SECONDS - 1e-4),
    ]:
        wait = pause(count, waited, 2.0, draw)
        assert wait is not None and LOW <= wait <= HIGH, (count, waited, wait)


def test_past_its_polls_it_backs_off_as_sqlite_does() -> None:
    assert pause(300, POLL_UNTIL_SECONDS, 2.0, 0.5) == pytest.approx(min(BACKOFF_CAP_SECONDS, POLL_UNTIL_SECONDS / 2))
    assert pause(400, 1.0, 2.0, 0.5) == BACKOFF_CAP_SECONDS


def test_it_gives_up_at_the_timeout_and_never_sleeps_past_it() -> None:
    assert pause(100, 2.0, 2.0, 0.5) is None
    assert pause(100, 2.5, 2.0, 0.5) is None
    assert pause(100, 1.99, 2.0, 0.5) == pytest.approx(0.01)
    assert pause(3, 0.008, 0.010, 0.5) == pytest.approx(0.002)  # not SQLITE_SLEEPS_SECONDS[3]


def test_the_handler_times_its_wait_from_a_statements_first_try(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    slept: list[float] = []
    monkeypatch.setattr(busy.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(busy.time, "sleep", lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    handler = BusyHandler(1000)
    assert [handler(count) for count in range(len(SQLITE_SLEEPS_SECONDS))] == [True] * 6
    assert slept == list(SQLITE_SLEEPS_SECONDS)
    assert handler(6) and LOW <= slept[-1] <= HIGH
    now[0] += 5.0  # a second statement's wait starts again at its first try
    assert handler(0) and slept[-1] == SQLITE_SLEEPS_SECONDS[0]
    now[0] += 1.0  # ... and gives up a second after it
    assert handler(1) is False
    assert handler.tries == 9
