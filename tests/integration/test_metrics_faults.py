"""The metrics exporter's completion cursor against faults, and the counters of what moved jobs
outside jobq's own path.

- A finished job written by hand (an operator's ``sqlite3``/``psql``) with a ``finished_at`` far in
  the future: the cursor follows ``finished_at``, so a fold that took such a row in would put it
  past every real completion to come, and ``jobq_completed_total`` would stand still for good.
- A fold whose connection is cut, or whose last reply is lost (PostgreSQL, through ``faultproxy``):
  it fails as a whole and is folded again, each completion counted once.
- A status written by hand and jobs restamped after the clock was set back: counted by queue."""

from __future__ import annotations

import threading

import pytest
from faultproxy import proxied
from handwritten import write_by_hand
from polling import wait_for

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


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("fault", "statement"),
    [("cut", b"ORDER BY finished_at DESC, id DESC LIMIT 1"), ("lost reply", b"GROUP BY 1, 2")],
)
def test_a_fold_cut_off_or_its_reply_lost_counts_each_completion_once(
    postgres_url: str, fault: str, statement: bytes
) -> None:
    """The follower's fold over a connection cut before its first read, or whose transaction's
    last reply is lost: the fold fails as a whole (the cursor moves only with a fold's result),
    the follower logs it and folds again, and every completion is counted exactly once."""
    with proxied(postgres_url) as (url, proxy), jobq.Queue(postgres_url) as q, jobq.Queue(url) as seen:
        collector = JobqCollector(seen, settle_seconds=0.0, scrape_events=0)
        collector._take_events(seen.clock(), 0)  # the cursors start here
        for _ in range(5):
            complete_one(q)
        if fault == "cut":
            proxy.cut_next(before=statement)
        else:
            proxy.lose_next_commit_reply(after=statement)
        stop = threading.Event()
        follower = threading.Thread(target=collector.follow, args=(stop, 0.05), daemon=True)
        follower.start()
        try:
            wait_for(lambda: completed(collector) >= 5 and (proxy.cuts or proxy.lost_replies), timeout=30)
        finally:
            stop.set()
            follower.join(10)
        collector._take_events(seen.clock(), 10**6)  # nothing left: no completion counted twice
        assert completed(collector) == 5
        assert (proxy.cuts, proxy.lost_replies) == ((1, 0) if fault == "cut" else (0, 1))


def test_a_status_written_by_hand_and_a_restamp_are_counted_by_queue(backend_url: str) -> None:
    """An operator's ``UPDATE jobs SET status = ...`` (recorded by the external-status trigger)
    and waiting jobs restamped after the host's clock was set back each show in a counter of
    their own, by queue: both say that something outside jobq's own path moved jobs."""
    clock = FakeClock(1_800_000_000.0)
    with jobq.Queue(backend_url, clock=clock) as q:
        collector = JobqCollector(q, settle_seconds=0.0, scrape_events=0)
        collector._take_events(clock.now, 0)  # the cursors start here
        edited = q.enqueue("x")
        q.enqueue("x")
        q.enqueue("x", queue="mail")
        write_by_hand(backend_url, f"UPDATE jobs SET status = 'CANCELLED' WHERE id = {edited}")
        clock.now -= 100.0  # the host's clock set back: the two waiting jobs are 100 s ahead
        assert len(q.restamp_ahead(100.0, 1.0)) == 2
        collector._take_events(clock.now, 10**6)
        families = {f.name: f for f in collector.collect()}
        counts = {
            (family, s.labels["queue"]): s.value
            for family in ("jobq_restamped", "jobq_external_updates")
            for s in families[family].samples
            if s.name == f"{family}_total"
        }
        assert families["jobq_restamped"].type == "counter"
        assert counts == {
            ("jobq_restamped", "default"): 1,
            ("jobq_restamped", "mail"): 1,
            ("jobq_external_updates", "default"): 1,
            ("jobq_external_updates", "mail"): 0,
        }


def test_jobs_an_operator_moved_are_counted_in_the_queue_they_went_to(backend_url: str) -> None:
    with jobq.Queue(backend_url) as q:
        collector = JobqCollector(q, settle_seconds=0.0, scrape_events=0)
        collector._take_events(q.wall_time(), 0)  # the cursors start here
        ids = q.enqueue_many(["a", "b", "c"], queue="mial")
        assert all(r.ok for r in q.move_many("mail", ids=ids[:2]))
        collector._take_events(q.wall_time() + 1, 10**6)
        families = {f.name: f for f in collector.collect()}
        moved = {s.labels["queue"]: s.value for s in families["jobq_moved"].samples if s.name == "jobq_moved_total"}
    assert families["jobq_moved"].type == "counter"
    assert moved.get("mail") == 2 and moved.get("mial", 0) == 0
