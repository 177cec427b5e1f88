"""StallWatch: which expired leases a stall excuses, and for how long (no I/O, a fake clock)."""

from __future__ import annotations

import threading

import pytest

from jobq.worker.stall import StallWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch(clock: Clock) -> StallWatch:
    return StallWatch(clock, threshold=1.0, margin=3.0, grace=10.0)


def test_no_stall_excuses_nothing() -> None:
    clock = Clock()
    w = watch(clock)
    assert w.excused_since(clock.now) is None
    assert w.rescue_cutoff()(clock.now) == clock.now


def test_a_short_write_is_not_a_stall() -> None:
    clock = Clock()
    w = watch(clock)
    with w.write():
        pass
    w.loop_late(0.5)
    assert w.excused_since(clock.now) is None


def test_a_late_loop_excuses_leases_expired_since_it_froze_until_grace_ends() -> None:
    clock = Clock()
    w = watch(clock)
    w.loop_late(20.0)  # frozen from 980 to 1000
    assert w.excused_since(clock.now) == pytest.approx(980.0 - 3.0)
    assert w.rescue_cutoff()(clock.now) == pytest.approx(977.0)
    clock.now += 10.0
    assert w.excused_since(clock.now) == pytest.approx(977.0)
    clock.now += 0.5  # grace over: every expired lease counts again
    assert w.excused_since(clock.now) is None


def test_a_write_waiting_now_excuses_from_when_it_began() -> None:
    clock = Clock()
    w = watch(clock)
    entered, release = threading.Event(), threading.Event()

    def blocked_write() -> None:
        with w.write():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=blocked_write)
    t.start()
    assert entered.wait(10)
    assert w.excused_since(clock.now + 0.5) is None  # not (yet) longer than the threshold
    clock.now += 5.0
    assert w.excused_since(clock.now) == pytest.approx(1000.0 - 3.0)
    release.set()
    t.join(10)


def test_failing_writes_excuse_until_one_succeeds_then_grace() -> None:
    clock = Clock()
    w = watch(clock)
    with pytest.raises(OSError), w.write():
        raise OSError("server gone")
    clock.now += 60.0
    with pytest.raises(OSError), w.write():
        raise OSError("still gone")
    assert w.excused_since(clock.now) == pytest.approx(997.0)  # from the first failure
    with w.write():
        pass
    assert w.excused_since(clock.now) == pytest.approx(997.0)
    clock.now += 10.5
    assert w.excused_since(clock.now) is None


def test_the_rescue_own_wait_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    w = watch(clock)
    ticks = iter([100.0, 105.0])  # asked at 100, the lock granted 5 s later
    monkeypatch.setattr("jobq.worker.stall.time.monotonic", lambda: next(ticks))
    cutoff = w.rescue_cutoff()
    assert cutoff(clock.now) == pytest.approx(1000.0 - 5.0 - 3.0)
