"""The Queue's default clock follows the store's (``Queue.clock_offset``, ``Queue.sync_clock``):
measured against a store whose clock runs ``ahead`` seconds ahead of this host's (a stub: the
real store's offset is measured in tests/integration/test_clock_skew.py, across processes)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import jobq
from jobq.backends.common import clock_offset_of
from jobq.config import CLOCK_SKEW_CORRECTED_SECONDS


class _RemoteStore:
    """What Queue asks of a store about time: a clock ``ahead`` of this host's, on other hosts."""

    single_host = False

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead
        self.clock_reading: tuple[float, float] | None = (ahead, 0.0)  # as measured when opened
        self.reads = 0

    def store_time(self) -> float:
        self.reads += 1
        return time.time() + self.ahead

    def close(self) -> None:
        pass


def _queue(store: _RemoteStore, **kwargs: Any) -> jobq.Queue:
    return jobq.Queue(backend=store, **kwargs)  # type: ignore[arg-type]


def test_a_host_clock_a_minute_off_reads_the_store_time(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="jobq.clock"):
        q = _queue(_RemoteStore(-60.0))
    assert q.clock_offset == -60.0
    assert abs(q.clock() - (time.time() - 60.0)) < 0.01
    assert q.wall_time() == pytest.approx(q.clock(), abs=0.01)
    assert "clock is 60.0 s ahead of the database server's" in caplog.text


def test_the_offset_follows_each_measurement(caplog: pytest.LogCaptureFixture) -> None:
    store = _RemoteStore(120.0)
    q = _queue(store)
    store.ahead = -30.0
    with caplog.at_level(logging.INFO, logger="jobq.clock"):
        measured = q.sync_clock()
    assert measured == pytest.approx(-30.0, abs=0.01)
    assert q.clock_offset == pytest.approx(-30.0, abs=0.01)
    assert store.reads == jobq.config.CLOCK_SAMPLES
    assert "clock is 30.0 s ahead of" in caplog.text
    # Back within the threshold: the host's own clock again, said once.
    store.ahead = CLOCK_SKEW_CORRECTED_SECONDS / 2
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jobq.clock"):
        q.sync_clock()
        q.sync_clock()
    assert q.clock_offset == 0.0
    assert caplog.text.count("agrees with the database server's again") == 1
    assert abs(q.clock() - time.time()) < 0.01


def test_noise_in_the_measurement_does_not_move_the_clock() -> None:
    store = _RemoteStore(10.0)
    q = _queue(store)
    store.ahead = 10.03  # within _CLOCK_OFFSET_KEPT_WITHIN_SECONDS
    q.sync_clock()
    assert q.clock_offset == 10.0
    store.ahead = 10.5
    q.sync_clock()
    assert q.clock_offset == pytest.approx(10.5, abs=0.01)


def test_a_skew_below_the_threshold_is_left_alone() -> None:
    q = _queue(_RemoteStore(CLOCK_SKEW_CORRECTED_SECONDS * 0.9))
    assert q.clock_offset == 0.0
    assert q.clock == q.wall_time


def test_a_clock_of_the_callers_is_used_as_it_is() -> None:
    store = _RemoteStore(300.0)
    q = _queue(store, clock=lambda: 5.0)
    assert q.clock() == 5.0 and q.clock_offset == 0.0
    assert q.sync_clock() == pytest.approx(300.0, abs=0.01)  # measured, told, not applied
    assert q.clock() == 5.0 and q.clock_offset == 0.0


def test_a_store_on_this_host_is_never_read_for_its_time() -> None:
    store = _RemoteStore(300.0)
    store.single_host = True
    store.clock_reading = None
    q = _queue(store)
    assert q.sync_clock() == 0.0
    assert store.reads == 0


def test_the_measurement_keeps_the_read_with_the_shortest_round_trip() -> None:
    # Three reads: slow (0.06 s: the midpoint 0.03 off), fast (exact), slow again.
    delays = iter([0.06, 0.0, 0.06])

    def read() -> float:
        delay = next(delays)
        now = time.time()
        time.sleep(delay)
        return now + 50.0  # the store's time as it was when the read began

    offset, trip = clock_offset_of(read, 3)
    assert offset == pytest.approx(50.0, abs=0.01) and trip < 0.03


def test_a_measurement_of_slow_reads_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every read of the store's clock takes 4 s (a busy server): the midpoint may be off by 2 s,
    # which would pass for skew. The host's clock is left as it is.
    host = [1000.0]
    monkeypatch.setattr(time, "time", lambda: host[0])

    class _Busy(_RemoteStore):
        def store_time(self) -> float:
            host[0] += 4.0
            return host[0] - 4.0  # answered as the read began: 2 s "behind" the midpoint

    store = _Busy(0.0)
    q = _queue(store)
    assert q.sync_clock() == pytest.approx(-2.0)
    assert q.clock_offset == 0.0


def test_a_measurement_of_slow_reads_is_made_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    # The measurement made at open met a busy server (every read 1 s or more) and was not used,
    # on a host a minute ahead: it is made again CLOCK_RETRY_SECONDS later, not a minute later,
    # which would stamp by this host's clock that long.
    store = _RemoteStore(-60.0)
    store.clock_reading = (-60.0, 1.5)
    q = _queue(store)
    assert q.clock_offset == 0.0
    true_time, true_monotonic = time.time, time.monotonic
    later = jobq.config.CLOCK_RETRY_SECONDS + 0.1
    monkeypatch.setattr(time, "monotonic", lambda: true_monotonic() + later)
    monkeypatch.setattr(time, "time", lambda: true_time() + later)
    q._check_clock()
    assert store.reads == jobq.config.CLOCK_SAMPLES
    assert q.clock_offset == pytest.approx(-60.0, abs=0.05)


def test_a_step_of_this_hosts_clock_is_measured_before_the_next_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    # The store's clock is the true one; this host's is set back two minutes while the Queue is
    # open (a VM resumed from a snapshot). The next call that stamps a lease measures first.
    true_time = time.time

    class _TrueClock(_RemoteStore):
        def store_time(self) -> float:
            self.reads += 1
            return true_time()

    store = _TrueClock(0.0)
    q = _queue(store)
    q._check_clock()
    assert store.reads == 0  # nothing due: two clock reads, no round trip
    monkeypatch.setattr(time, "time", lambda: true_time() - 120.0)
    q._check_clock()
    assert store.reads == jobq.config.CLOCK_SAMPLES
    assert q.clock_offset == pytest.approx(120.0, abs=0.05)
    assert abs(q.clock() - true_time()) < 0.05
    q._check_clock()
    assert store.reads == jobq.config.CLOCK_SAMPLES  # measured once per step


def test_the_clock_is_measured_again_every_sync_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _RemoteStore(30.0)
    q = _queue(store)
    true_time, true_monotonic = time.time, time.monotonic

    def later(seconds: float) -> None:  # both clocks run on together: no step
        monkeypatch.setattr(time, "time", lambda: true_time() + seconds)
        monkeypatch.setattr(time, "monotonic", lambda: true_monotonic() + seconds)

    later(jobq.config.CLOCK_SYNC_SECONDS / 2)
    q._check_clock()
    assert store.reads == 0
    store.ahead = 45.0
    later(jobq.config.CLOCK_SYNC_SECONDS + 1)
    q._check_clock()
    assert store.reads == jobq.config.CLOCK_SAMPLES and q.clock_offset == pytest.approx(45.0, abs=0.01)


def test_the_asyncio_queue_measures_a_step_before_a_native_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    class _Native:  # the native asyncio store (PostgreSQL's): a claim that finds nothing
        async def claim(self, *args: object) -> list[object]:
            return []

        def finish_hub(self) -> None:
            return None

        async def aclose(self) -> None:
            pass

    true_time = time.time
    store = _RemoteStore(0.0)
    store.store_time = true_time  # type: ignore[method-assign]
    store.async_store = _Native  # type: ignore[attr-defined]
    aq = jobq.AsyncQueue(backend=store)
    assert aq.native and aq.sync.clock_offset == 0.0
    monkeypatch.setattr(time, "time", lambda: true_time() - 120.0)
    assert asyncio.run(aq.claim_many("w", 1)) == []
    assert aq.sync.clock_offset == pytest.approx(120.0, abs=0.05)


def test_a_measurement_that_cannot_read_the_store_is_tried_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reply to the clock read is lost (StorageError, as the backend reports a dropped
    # connection) right after this host's clock stepped back two minutes: the call goes on (it
    # meets the server itself), the offset stays, and the measurement is tried again after
    # CLOCK_RETRY_SECONDS, not a whole sync interval.
    true_time, true_monotonic = time.time, time.monotonic
    later = [0.0]  # how far the test moved both clocks on

    class _Lost(_RemoteStore):
        lost = True

        def store_time(self) -> float:
            self.reads += 1
            if self.lost:
                raise jobq.StorageError("PostgreSQL at h/db: connection lost (server closed the connection)")
            return true_time() + later[0]

    store = _Lost(0.0)
    q = _queue(store)
    monkeypatch.setattr(time, "time", lambda: true_time() - 120.0)
    q._check_clock()
    assert store.reads == 1 and q.clock_offset == 0.0
    q._check_clock()
    assert store.reads == 1  # not at every call while the server is away
    store.lost = False
    later[0] = jobq.config.CLOCK_RETRY_SECONDS + 0.1
    monkeypatch.setattr(time, "monotonic", lambda: true_monotonic() + later[0])
    monkeypatch.setattr(time, "time", lambda: true_time() - 120.0 + later[0])
    q._check_clock()
    assert q.clock_offset == pytest.approx(120.0, abs=0.05)
