"""How many jobs the default worker claims ahead (jobq.worker.prefetch): pure decisions, no I/O."""

from __future__ import annotations

from jobq.worker.prefetch import PREFETCH_MAX_JOBS, Prefetch


def test_nothing_ahead_before_a_run_time_is_known() -> None:
    assert Prefetch(0.005, 1).ahead(0.0) == 0


def test_short_runs_claim_ahead_within_the_planned_wait_and_the_cap() -> None:
    p = Prefetch(0.005, 2)
    p.observe(0.001)
    assert p.ahead(0.0) == 10  # 10 jobs on 2 threads at 1 ms drain in 5 ms
    fast = Prefetch(0.005, 1)
    fast.observe(0.000_001)
    assert fast.ahead(0.0) == PREFETCH_MAX_JOBS


def test_long_runs_claim_nothing_ahead() -> None:
    p = Prefetch(0.005, 4)
    p.observe(7.0)  # the seed's jobs
    assert p.ahead(0.0) == 0
    for _ in range(5):
        p.observe(0.0001)
    assert p.ahead(0.0) == 0  # the moving average still remembers the long one


def test_a_long_running_handler_or_few_due_jobs_stop_claiming_ahead() -> None:
    p = Prefetch(0.005, 1)
    p.observe(0.0001)
    assert p.ahead(0.0) > 0
    assert p.ahead(0.006) == 0
    p.claimed(asked=50, got=3)
    assert p.ahead(0.0) == 0
    p.claimed(asked=1, got=1)
    assert p.ahead(0.0) > 0


def test_zero_wait_turns_it_off() -> None:
    p = Prefetch(0.0, 1)
    p.observe(0.0001)
    assert p.ahead(0.0) == 0
