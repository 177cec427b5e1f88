"""The metrics exporter against a finished job written by hand (an operator's ``sqlite3``/``psql``):
a ``finished_at`` far in the future must not stop the counting of the completions after it. The
completion cursor follows ``finished_at``: a fold that took such a row in would put the cursor
past every real completion to come, and ``jobq_completed_total`` would stand still for good."""

from __future__ import annotations

from handwritten import write_by_hand

import jobq
from jobq.observability.metrics import JobqCollector
from jobq.testing import FakeClock


def completed(collector: JobqCollector) -> int:
    return sum(n for (name, _q), n in collector._totals.counters.items() if name == "completed")


def complete_one(q: jobq.Queue) -> int:
    q.enqueue("x")
    job = q.claim("w")
    assert job is not None
    q.complete(job)
    return job.id


def test_a_finished_at_in_the_future_does_not_stop_the_completion_counter(backend_url: str) -> None:
    clock = FakeClock(1_800_000_000.0)
    with jobq.Queue(backend_url, clock=clock) as q:
        collector = JobqCollector(q, scrape_events=0)
        collector._take_events(clock.now, 0)  # the cursors start here
        moved = complete_one(q)
        write_by_hand(backend_url, f"UPDATE jobs SET finished_at = {clock.now + 86_400} WHERE id = {moved}")
        clock.advance(10)  # past PostgreSQL's settle time
        collector._take_events(clock.now, 10**6)
        assert completed(collector) == 0  # the moved job counts when its time comes, not before
        for _ in range(3):
            complete_one(q)
            clock.advance(10)
            collector._take_events(clock.now, 10**6)
        assert completed(collector) == 3
        clock.advance(86_400)
        collector._take_events(clock.now, 10**6)
        assert completed(collector) == 4  # counted once, at its (hand-written) time
