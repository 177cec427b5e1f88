"""Which waiting runs the worker gives back (``Runs.withdraw``): pure decisions, no I/O."""

from __future__ import annotations

import time
from typing import Any

from jobq.job import Job, JobStatus
from jobq.worker.context import JobContext
from jobq.worker.prefetch import GIVE_BACK_AFTER_SECONDS
from jobq.worker.runs import Runs


def _run(runs: Runs, job_id: int, *, age: float, begun: bool = False, on_loop: bool = False) -> JobContext:
    job = Job(job_id, "default", "", None, JobStatus.PROCESSING, 0, 0.0, 1, 3, 0.0, 0.0, lease_token=f"t-{job_id}")
    queue: Any = None  # withdraw never reaches the queue
    ctx = JobContext(job, queue, "w")
    ctx.on_loop = on_loop
    runs.add(ctx)
    if begun:
        assert runs.begin(ctx)
    ctx.started = time.monotonic() - age  # claimed (or begun) ``age`` seconds ago
    return ctx


def test_jobs_waiting_behind_a_long_handler_are_withdrawn() -> None:
    runs = Runs()
    _run(runs, 1, age=1.0, begun=True)
    waiting = [_run(runs, i, age=1.0) for i in (2, 3)]
    assert runs.withdraw(GIVE_BACK_AFTER_SECONDS) == waiting
    assert all(ctx.withdrawn for ctx in waiting)


def test_jobs_waiting_while_no_handler_runs_long_stay() -> None:
    """A claimed batch whose first handler has not begun yet (its thread not scheduled on a loaded
    machine) waits for the CPU, not behind a long job: giving it back would only make another
    worker claim it later (issue 13)."""
    runs = Runs()
    waiting = [_run(runs, i, age=1.0) for i in range(1, 101)]
    assert runs.withdraw(GIVE_BACK_AFTER_SECONDS) == []
    _run(runs, 101, age=GIVE_BACK_AFTER_SECONDS / 10, begun=True)  # a short job runs
    assert runs.withdraw(GIVE_BACK_AFTER_SECONDS) == []
    assert not any(ctx.withdrawn for ctx in waiting)


def test_at_shutdown_every_job_not_begun_is_withdrawn() -> None:
    runs = Runs()
    waiting = [_run(runs, i, age=0.0) for i in (1, 2)]
    assert runs.withdraw(0.0) == waiting


def test_async_runs_not_begun_while_the_event_loop_has_a_free_slot_stay() -> None:
    """1,000 ``async def`` jobs handed to the event loop at once: the last began after 50 ms,
    beside the first ones' long sleeps. They waited for the loop to reach them, not behind a long
    job: a third of them were given back, then claimed again only after the first second of sleeps
    (the run took 2.1 s, not 1.1)."""
    runs = Runs()
    sleeping = [_run(runs, i, age=1.0, begun=True, on_loop=True) for i in range(1, 4)]
    late = [_run(runs, i, age=1.0, on_loop=True) for i in (4, 5)]
    assert runs.withdraw(GIVE_BACK_AFTER_SECONDS, async_slots=5) == []  # 3 of 5 slots taken
    assert not any(ctx.withdrawn for ctx in late)
    # All the loop's slots taken by long handlers: the waiting ones wait behind them.
    assert runs.withdraw(GIVE_BACK_AFTER_SECONDS, async_slots=len(sleeping)) == late
    # A thread's run is still given back beside a free slot of the loop: it waits for a thread.
    runs = Runs()
    _run(runs, 1, age=1.0, begun=True)
    on_thread = _run(runs, 2, age=1.0)
    _run(runs, 3, age=1.0, on_loop=True)
    assert runs.withdraw(GIVE_BACK_AFTER_SECONDS, async_slots=4) == [on_thread]
