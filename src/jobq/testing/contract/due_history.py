"""The backend contract: due depth over time and per-queue waits, derived from job rows."""

from __future__ import annotations

import pytest

import jobq
from jobq.backends.base import QueueWait
from jobq.testing import FakeClock


def test_due_history_counts_due_jobs_over_time_and_waits_per_queue(queue: jobq.Queue, clock: FakeClock) -> None:
    start = clock.now
    done, cancelled = queue.enqueue_many(["done", "cancelled"])
    running = queue.enqueue("running", queue="mail")
    later = queue.enqueue("later", delay=100)  # scheduled: not due before start + 100
    clock.advance(20)
    job = queue.claim("w")
    assert job is not None and job.id == done
    clock.advance(15)
    queue.complete(job)
    clock.advance(35)  # start + 70
    job = queue.claim("w", queue="mail")
    assert job is not None and job.id == running
    clock.advance(20)  # start + 90
    assert queue.cancel(cancelled).ok
    clock.advance(60)  # now = start + 150: `later` has been due for 50 s

    history = queue.due_history(window=180, bucket=60)
    assert history.since == pytest.approx(start - 30) and history.sample_limit is None
    assert history.covers_since == pytest.approx(start - 30)
    # Buckets end at start + 30 (cancelled and running due), start + 90 (none: the cancel at
    # exactly the end no longer counts) and now (`later`), which equals stats' due count.
    assert history.due == [2, 0, 1] == [*history.due[:2], queue.stats().due]
    assert history.starts == pytest.approx([start - 30, start + 30, start + 90])
    assert history.waits == {"default": QueueWait(1, 20.0, 20.0), "mail": QueueWait(1, 70.0, 70.0)}
    assert queue.get(later).status == jobq.JobStatus.PENDING


def test_due_history_reads_a_bounded_sample_and_says_from_when_it_is_exact(queue: jobq.Queue, clock: FakeClock) -> None:
    start = clock.now
    queue.enqueue_many(["a", "b", "c"])
    for _ in range(3):
        clock.advance(10)
        job = queue.claim("w")
        assert job is not None
        clock.advance(1)
        queue.complete(job)  # claimed at start + 10, 21, 32 (waits 10, 21, 32); finished 1 s later
    retried = queue.enqueue("retried")
    clock.advance(5)
    job = queue.claim("w")
    assert job is not None and job.id == retried
    queue.fail_many([(job, "boom", True)], delays=[30])  # due again at start + 68: only this period is in its row
    clock.advance(60)  # now = start + 98

    history = queue.due_history(window=120, bucket=30, limit=2)
    assert history.sample_limit == 2
    assert history.covers_since == pytest.approx(start + 22)  # the older of the two newest finished
    # Buckets end at start + 8 (before the sample covers: unknown), + 38, + 68 (`retried` due
    # from exactly then) and now.
    assert history.due == [None, 0, 1, 1]
    # Only jobs claimed since start + 22: the third one, after 32 s.
    assert history.waits == {"default": QueueWait(1, 32.0, 32.0)}  # whole seconds: exact in floats
    full = queue.due_history(window=120, bucket=30)
    assert full.sample_limit is None and full.waits["default"].claimed == 3
    assert full.due == [3, 0, 1, 1]  # at start + 8 all three were still waiting
