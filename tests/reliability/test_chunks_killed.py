"""Long writes killed half-way, with SIGKILL, on both backends: an operator's action over many
jobs (``cancel_many`` / ``resubmit_many`` with a filter) and a purge.

An action runs ``OPERATOR_CHUNK_JOBS`` jobs a transaction in id order, a purge ``PURGE_CHUNK_JOBS``
in the order the jobs finished. A kill between or inside chunks must leave whole chunks done, and
the same call run again does the rest:
- an action: every job in its old status with no event of the action, or in its new status with
  exactly one; done jobs the lowest ids; at the end, exactly one event per job;
- a purge: every job left with all its events, no event of a deleted job.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

import jobq
from jobq import JobFilter, JobStatus

pytestmark = pytest.mark.slow

JOBS = 3_000
CHUNK = 100
SCRIPT = """
import sys, time, jobq
from jobq.backends import base, store
base.OPERATOR_CHUNK_JOBS = base.PURGE_CHUNK_JOBS = {chunk}
# Each chunk takes a while (both backends alike: PostgreSQL runs them without a pause), so that
# the kill lands half-way through rather than after the end.
store.SqlStore._pause = lambda self, began: time.sleep(0.02)
q = jobq.Queue(sys.argv[1])
source = jobq.JobStatus.{source}
if sys.argv[2] == "purge":
    q.purge(older_than=0, statuses=[source])
else:
    getattr(q, sys.argv[2])(where=jobq.JobFilter(statuses=(source,)), actor="bulk")
"""

ACTIONS = {
    # action: (status before, status after, the event each job gets)
    "cancel_many": (JobStatus.PENDING, JobStatus.CANCELLED, "cancelled"),
    "resubmit_many": (JobStatus.CANCELLED, JobStatus.PENDING, "resubmitted"),
}


def _bulk_events(q: jobq.Queue, kind: str) -> collections.Counter[int]:
    """Per job, how many events of ``kind`` the bulk actor recorded."""
    return collections.Counter(e.job_id for e in q.recent_events(10 * JOBS, [kind]) if e.actor == "bulk")


def _kill_half_way(q: jobq.Queue, url: str, call: str, source: JobStatus, under_way: Callable[[], bool]) -> None:
    """Run ``call`` over the jobs in ``source`` in a process of its own, SIGKILLed once
    ``under_way()`` (polled) says that a few chunks are done."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(chunk=CHUNK, source=source.name), url, call])
    try:
        deadline = time.monotonic() + 60
        while not under_way() and time.monotonic() < deadline:
            assert proc.poll() is None, f"{call} ended before it was killed"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_a_bulk_action_killed_half_way_leaves_whole_chunks_and_finishes_when_run_again(
    backend_url: str, action: str
) -> None:
    source, target, kind = ACTIONS[action]
    with jobq.Queue(backend_url) as q:
        ids = q.enqueue_many([{"n": n} for n in range(JOBS)])
        if source is JobStatus.CANCELLED:
            assert all(r.ok for r in q.cancel_many(ids=ids, actor="setup"))
        _kill_half_way(q, backend_url, action, source, lambda: q.count(JobFilter(statuses=(target,))) >= 3 * CHUNK)

        done = [j.id for j in q.list(JobFilter(statuses=(target,)), jobq.Page(limit=JOBS, descending=False))]
        left = [j.id for j in q.list(JobFilter(statuses=(source,)), jobq.Page(limit=JOBS, descending=False))]
        assert 0 < len(done) < JOBS and len(done) % CHUNK == 0, len(done)  # whole chunks, killed on the way
        assert done == sorted(ids)[: len(done)] and sorted(done + left) == sorted(ids)  # in id order
        events = _bulk_events(q, kind)
        assert set(events) == set(done) and set(events.values()) == {1}  # one event per job done

        results = getattr(q, action)(where=JobFilter(statuses=(source,)), actor="bulk")
        assert sorted(r.job_id for r in results if r.ok) == left
        assert q.count(JobFilter(statuses=(target,))) == JOBS
        events = _bulk_events(q, kind)
        assert set(events) == set(ids) and set(events.values()) == {1}


def test_a_purge_killed_half_way_leaves_whole_chunks_and_every_event_of_what_is_left(backend_url: str) -> None:
    """Each chunk deletes its jobs and their events in one transaction (the oldest finished
    first): a purge killed while it runs leaves whole chunks deleted, every job that is left with
    its events and no event of a deleted one; the next purge deletes the rest."""
    cancelled = JobFilter(statuses=(JobStatus.CANCELLED,))
    with jobq.Queue(backend_url) as q:
        ids = q.enqueue_many([{"n": n} for n in range(JOBS)])
        assert all(r.ok for r in q.cancel_many(ids=ids, actor="ops"))  # two stored events each
        _kill_half_way(q, backend_url, "purge", JobStatus.CANCELLED, lambda: q.count(cancelled) <= JOBS - 3 * CHUNK)
        left = q.count(cancelled)
        assert 0 < left < JOBS and (JOBS - left) % CHUNK == 0, left  # whole chunks, killed on the way
        remaining = {j.id for j in q.list(cancelled, jobq.Page(limit=JOBS))}
        events = collections.Counter(e.job_id for e in q.recent_events(10 * JOBS))
        assert set(events) == remaining and set(events.values()) == {2}  # enqueued and cancelled
        assert q.purge(older_than=0, statuses=[JobStatus.CANCELLED]) == left
        assert q.count() == 0 and q.recent_events(10 * JOBS) == []
