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


class Monotonic:
    """time.monotonic() for the watch, moved by the test (a host's suspend: the clock moves alone)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        monkeypatch.setattr("jobq.worker.stall.time.monotonic", lambda: self.now)


def test_the_rescue_own_wait_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, monotonic = Clock(), Monotonic(monkeypatch)
    w = watch(clock)
    cutoff = w.rescue_cutoff()  # asked at 1000, the lock granted 5 s later
    clock.now += 5.0
    monotonic.now += 5.0
    assert cutoff(clock.now) == pytest.approx(1005.0 - 5.0 - 3.0)


def test_a_clock_jumping_ahead_excuses_leases_from_before_the_jump_until_grace_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host slept 300 s: its clock moved, the monotonic one did not. A lease that expired an
    instant before the jump (its worker dead) is not excused; one the jump expired is."""
    clock, monotonic = Clock(), Monotonic(monkeypatch)
    w = watch(clock)
    clock.now += 300.0
    assert w.rescue_cutoff()(clock.now) == pytest.approx(1000.0 - 3.0)
    clock.now += 10.0
    monotonic.now += 10.0
    assert w.rescue_cutoff()(clock.now) == pytest.approx(997.0)
    clock.now += 0.5
    monotonic.now += 0.5  # grace over: every expired lease counts again
    assert w.rescue_cutoff()(clock.now) == clock.now


def test_a_clock_set_back_or_slewing_excuses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, monotonic = Clock(), Monotonic(monkeypatch)
    w = watch(clock)
    clock.now -= 120.0  # leases read longer: no one taken wrongly
    assert w.rescue_cutoff()(clock.now) == clock.now
    assert w.stepped_back() == pytest.approx(120.0)  # kept for the rows written before it
    w.restamped(120.0)
    for _ in range(100):  # NTP's slewing: 0.5 ms a second, 3 s in all, one look every 60 s
        clock.now += 60.03
        monotonic.now += 60.0
        assert w.rescue_cutoff()(clock.now) == clock.now
    assert w.stepped_back() == 0.0


def test_steps_back_add_up_until_seen_to_and_one_noted_meanwhile_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, monotonic = Clock(), Monotonic(monkeypatch)
    w = watch(clock)
    clock.now -= 0.9  # within the threshold: no step
    w.rescue_cutoff()(clock.now)
    assert w.stepped_back() == 0.0
    clock.now -= 60.0
    w.rescue_cutoff()(clock.now)
    clock.now -= 30.0
    w.rescue_cutoff()(clock.now)
    assert w.stepped_back() == pytest.approx(90.0)
    taken = w.stepped_back()
    clock.now -= 5.0  # while the restamp of the first 90 s ran
    w.rescue_cutoff()(clock.now)
    w.restamped(taken)
    assert w.stepped_back() == pytest.approx(5.0)
    monotonic.now += 1.0
    by_hand = StallWatch(clock, threshold=1.0, margin=3.0, grace=10.0, steps=False)
    clock.now -= 300.0
    by_hand.rescue_cutoff()(clock.now)
    assert by_hand.stepped_back() == 0.0


def test_a_clock_moved_by_hand_is_no_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """``steps=False`` (a ``clock=`` of the caller's, as ``FakeClock``): moved past a lease by a
    test, it is not a host that slept, and the lease counts as expired at once."""
    clock, _ = Clock(), Monotonic(monkeypatch)
    w = StallWatch(clock, threshold=1.0, margin=3.0, grace=10.0, steps=False)
    clock.now += 300.0
    assert w.rescue_cutoff()(clock.now) == clock.now


def test_a_jump_before_this_process_started_is_read_from_the_bases_of_live_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker starting after the host's clock jumped 300 s ahead did not see the jump itself:
    the registry says it, a live worker's clock base (wall less monotonic at its last beat, 990)
    being 300 s behind this process's. Leases expired since that beat (less the margin) wait the
    grace for their heartbeats; bases within the threshold, or none, excuse nothing."""
    clock, monotonic = Clock(), Monotonic(monkeypatch)
    clock.now = 1300.0  # the jump came before this watch
    w = watch(clock)
    base = 5000.0  # this process's wall less monotonic now
    w.stepped_before_start(base, [(base - 0.5, 1299.0), (base - 300.0, 990.0)])
    assert w.rescue_cutoff()(clock.now) == pytest.approx(990.0 - 3.0)
    clock.now += 10.5
    monotonic.now += 10.5  # grace over
    assert w.rescue_cutoff()(clock.now) == clock.now

    assert w.stepped_back() == 0.0

    quiet = watch(clock)
    quiet.stepped_before_start(base, [(base - 0.5, 1299.0), (base + 300.0, 1299.0)])  # set back: no stall
    quiet.stepped_before_start(base, [])
    assert quiet.excused_since(clock.now) is None
    assert quiet.stepped_back() == pytest.approx(300.0)  # but the rows written before are ahead
    by_hand = StallWatch(clock, threshold=1.0, margin=3.0, grace=10.0, steps=False)
    by_hand.stepped_before_start(base, [(base - 300.0, 990.0), (base + 300.0, 1299.0)])
    assert by_hand.excused_since(clock.now) is None and by_hand.stepped_back() == 0.0


def test_the_newest_job_written_ahead_of_the_clock_is_a_step_back_no_worker_saw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, _ = Clock(), Monotonic(monkeypatch)
    w = watch(clock)
    w.written_ahead(clock.now + 0.5)  # within the threshold: a write an instant ago
    assert w.stepped_back() == 0.0
    w.written_ahead(clock.now + 3600.0)
    assert w.stepped_back() == pytest.approx(3600.0)
    assert w.excused_since(clock.now) is None
    by_hand = StallWatch(clock, threshold=1.0, margin=3.0, grace=10.0, steps=False)
    by_hand.written_ahead(clock.now + 3600.0)
    assert by_hand.stepped_back() == 0.0


def test_a_step_back_read_at_start_is_not_counted_again_by_the_next_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch is made, the clock is set back an hour, and only then does the first rescue read
    the newest row an hour ahead (the worker was frozen, or slow to start): one step of 3600 s,
    not 3600 from the row and 3600 more from the look at the clock that follows."""
    clock, _ = Clock(), Monotonic(monkeypatch)
    w = watch(clock)
    written = clock.now
    clock.now -= 3600.0
    w.written_ahead(written)
    w.rescue_cutoff()(clock.now)
    assert w.stepped_back() == pytest.approx(3600.0)
    clock.now -= 60.0  # a later step back still counts
    w.rescue_cutoff()(clock.now)
    assert w.stepped_back() == pytest.approx(3660.0)

    peers = watch(clock)
    base = 5000.0  # this process's wall less monotonic, after the step
    clock.now -= 300.0
    peers.stepped_before_start(base, [(base + 300.0, 1299.0)])  # a live worker's base from before it
    peers.rescue_cutoff()(clock.now)
    assert peers.stepped_back() == pytest.approx(300.0)
