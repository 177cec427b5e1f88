"""jobq.testing: what users get to test their own code with jobq."""

from __future__ import annotations

from pathlib import Path

import jobq
from jobq.testing import FakeClock, drain


def test_drain_runs_what_is_due_and_leaves_what_is_not(tmp_path: Path) -> None:
    clock = FakeClock()
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db", clock=clock) as q:
        now = q.enqueue_many([{"n": n} for n in range(3)])
        later = q.enqueue({"n": 99}, delay=3600)
        seen: list[int] = []
        worker = drain(q, lambda ctx: seen.append(ctx.payload["n"]))
        assert sorted(seen) == [0, 1, 2] and worker.jobs_done == 3
        assert all(q.get(i).status == jobq.JobStatus.COMPLETED for i in now)
        assert q.get(later).status == jobq.JobStatus.PENDING
        clock.advance(3600)
        assert drain(q, lambda ctx: None).jobs_done == 1


def test_the_contract_suite_is_importable_with_its_tests() -> None:
    import jobq.testing.contract as contract

    tests = [name for name in dir(contract) if name.startswith("test_")]
    assert len(tests) > 40 and "test_fencing_stale_worker_is_refused" in tests
