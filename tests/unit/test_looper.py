"""The one start/stop protocol of the worker's background loops (``jobq.worker.looper.Looper``)."""

from __future__ import annotations

import logging
import threading

import pytest
from polling import wait_for

from jobq.errors import StorageError
from jobq.worker.looper import Looper


class Counting(Looper):
    name = "counting"

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(interval, jitter=0.0)
        self.ticks = 0
        self.ticked = threading.Event()

    def tick(self) -> None:
        self.ticks += 1
        self.ticked.set()


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"jobq-{name}"]


def test_start_twice_runs_one_thread() -> None:
    loop = Counting()
    try:
        loop.start()
        loop.start()
        assert loop.wait_started(5)
        assert loop.running
        assert len(_threads("counting")) == 1
    finally:
        loop.stop()
    assert not loop.running
    assert _threads("counting") == []


def test_concurrent_starts_run_one_thread() -> None:
    loop = Counting()
    go = threading.Barrier(8)

    def start() -> None:
        go.wait(5)
        loop.start()

    starters = [threading.Thread(target=start) for _ in range(8)]
    try:
        for t in starters:
            t.start()
        for t in starters:
            t.join(5)
        assert loop.wait_started(5)
        assert len(_threads("counting")) == 1
    finally:
        loop.stop()


def test_the_started_signal_comes_with_the_thread() -> None:
    loop = Counting(interval=60.0)
    assert not loop.started.is_set() and not loop.wait_started(0.01)
    loop.start()
    try:
        assert loop.wait_started(5)
        assert loop.ticked.wait(5), "the first tick comes at once, not after one interval"
    finally:
        loop.stop()


def test_stop_before_start_and_twice_is_fine() -> None:
    loop = Counting()
    loop.stop()  # never started: nothing to wait for
    loop.start()  # stopped already: a loop runs once, so this starts nothing
    assert not loop.running and not loop.started.is_set()
    assert loop.ticks == 0
    loop.stop()


def test_stop_twice_after_start_is_fine_and_ends_the_thread() -> None:
    loop = Counting()
    loop.start()
    assert loop.ticked.wait(5)
    loop.stop()
    loop.stop()
    assert not loop.running
    loop.start()  # no restart after stop
    assert not loop.running


def test_stop_from_its_own_tick_does_not_wait_for_itself() -> None:
    class StopsItself(Looper):
        name = "stops-itself"

        def tick(self) -> None:
            self.stop()

    loop = StopsItself(0.01)
    loop.start()
    wait_for(lambda: not loop.running, 5, "the loop to end after stopping itself")


def test_a_tick_that_raises_does_not_end_the_loop() -> None:
    class Flaky(Counting):
        def tick(self) -> None:
            super().tick()
            if self.ticks == 1:
                raise RuntimeError("first tick fails")

    loop = Flaky()
    loop.start()
    try:
        wait_for(lambda: loop.ticks >= 3, 5, "ticks after the failing one")
    finally:
        loop.stop()


class Failing(Looper):
    name = "failing"

    def __init__(self, error: Exception) -> None:
        super().__init__(0.01, jitter=0.0)
        self.error = error
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        raise self.error


def _log_of_failing_ticks(error: Exception, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What a loop whose every tick raises ``error`` logs over three ticks (it keeps ticking)."""
    loop = Failing(error)
    with caplog.at_level(logging.WARNING, logger="jobq.worker"):
        try:
            loop.start()
            wait_for(lambda: loop.ticks >= 3, 5, "three failing ticks")
        finally:
            loop.stop()
    records = [r for r in caplog.records if r.name == "jobq.worker"]
    assert records, "the failure was not logged"
    return records


def test_a_storage_error_is_one_line_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """The database away during a restart is logged as one warning line, not a traceback."""
    error = StorageError("postgresql at host:5432/db: server closed the connection\nunexpectedly")
    records = _log_of_failing_ticks(error, caplog)
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in records)
    assert "server closed the connection unexpectedly" in records[0].getMessage()
    assert "\n" not in records[0].getMessage()


def test_a_bug_in_a_tick_keeps_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    records = _log_of_failing_ticks(KeyError("surprise"), caplog)
    assert all(r.levelno == logging.ERROR and r.exc_info is not None for r in records)
