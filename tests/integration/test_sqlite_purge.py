"""A purge, or an operator's action over many jobs, on SQLite lets other writers in: it runs
``PURGE_CHUNK_JOBS`` (``OPERATOR_CHUNK_JOBS``) jobs per transaction and pauses after each, so a
worker's claim, heartbeat or completion (and an app's action, which waits 2 s at most) is never
held behind all of it. In one transaction, purging 979,020 finished jobs held the write lock for
3 s, and every other writer with it."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import jobq
from jobq.backends import base


def _writes_inside(url: str, q: jobq.Queue, long_write: Callable[[], object]) -> tuple[int, int]:
    """Run ``long_write()`` on ``q`` while another connection enqueues in a loop: (how many
    DELETE or UPDATE statements it sent, how many of the other writer's enqueues returned between
    its first statement and its last COMMIT)."""
    written: list[float] = []  # when each of the other writer's enqueues returned
    stop = threading.Event()

    def write() -> None:
        with jobq.Queue(url) as other:
            while not stop.wait(0.005):  # a worker's pace, not a flood that starves the long write
                other.enqueue({"other": True})
                written.append(time.monotonic())

    statements: list[tuple[float, str]] = []  # on the long write's own connection
    conn = q.backend._connect()  # type: ignore[attr-defined]
    conn.exec_trace = lambda _c, sql, _b: statements.append((time.monotonic(), sql.split()[0].upper())) is None
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while not written and time.monotonic() < deadline:  # the writer is writing
            time.sleep(0.001)
        long_write()
    finally:
        stop.set()
        writer.join(timeout=30)
        conn.exec_trace = None
    changes = [t for t, word in statements if word in ("DELETE", "UPDATE")]
    ended = max(t for t, word in statements if word == "COMMIT")
    return len(changes), sum(min(changes) < t < ended for t in written)


def test_another_writer_gets_through_while_a_long_purge_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "PURGE_CHUNK_JOBS", 200)
    url = f"sqlite:///{tmp_path}/q.db"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": n} for n in range(4_000)])
        assert len(q.complete_many([(job, None) for job in q.claim_many("w", 4_000)])) == 4_000
        gone: list[int] = []
        changes, inside = _writes_inside(
            url, q, lambda: gone.append(q.purge(older_than=0, statuses=[jobq.JobStatus.COMPLETED]))
        )
        assert gone == [4_000] and q.count(jobq.JobFilter(statuses=(jobq.JobStatus.COMPLETED,))) == 0
    assert changes >= 20  # a chunk at a time
    assert inside, "no other write got through while the purge ran"


def test_another_writer_gets_through_while_an_operator_cancels_many_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for an operator's action (``OPERATOR_CHUNK_JOBS`` a transaction): the manager's
    "Cancel all 50,000+ matching..." on a big store held the lock for the whole action."""
    monkeypatch.setattr(base, "OPERATOR_CHUNK_JOBS", 50)
    url = f"sqlite:///{tmp_path}/q.db"
    with jobq.Queue(url) as q:
        ids = q.enqueue_many([{"n": n} for n in range(1_000)], queue="bulk")
        results: list[list[jobq.ActionResult]] = []
        where = jobq.JobFilter(statuses=(jobq.JobStatus.PENDING,), queues=("bulk",))
        changes, inside = _writes_inside(url, q, lambda: results.append(q.cancel_many(where=where, actor="ops")))
        assert [r.job_id for r in results[0]] == ids and all(r.ok for r in results[0])
    assert changes >= 1_000  # one UPDATE a job, 20 transactions
    assert inside, "no other write got through while the operator's action ran"


def test_a_purge_killed_half_way_leaves_whole_chunks_and_every_event_of_what_is_left(tmp_path: Path) -> None:
    """Each chunk deletes its jobs and their events in one transaction: a purge killed (SIGKILL)
    while it runs leaves whole chunks deleted, every job that is left with its events and no event
    of a deleted one; the next purge deletes the rest."""
    url = f"sqlite:///{tmp_path}/q.db"
    with jobq.Queue(url) as q:
        ids = q.enqueue_many([{"n": n} for n in range(6_000)])
        assert all(r.ok for r in q.cancel_many(ids=ids, actor="ops"))  # a stored event each
    script = (
        "import sys, jobq\n"
        "from jobq.backends import base\n"
        "base.PURGE_CHUNK_JOBS = 100\n"
        "jobq.Queue(sys.argv[1]).purge(older_than=0, statuses=[jobq.JobStatus.CANCELLED])\n"
    )
    cancelled = jobq.JobFilter(statuses=(jobq.JobStatus.CANCELLED,))
    purger = subprocess.Popen([sys.executable, "-c", script, url])
    try:
        with jobq.Queue(url) as q:
            deadline = time.monotonic() + 60
            while q.count(cancelled) == 6_000 and purger.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            purger.send_signal(signal.SIGKILL)
            purger.wait(30)
            left = q.count(cancelled)
            assert 0 < left < 6_000 and (6_000 - left) % 100 == 0, left  # 60 chunks: killed on the way
            remaining = {j.id for j in q.list(cancelled, jobq.Page(limit=6_000))}
            assert {e.job_id for e in q.recent_events(10_000)} == remaining
            assert q.purge(older_than=0, statuses=[jobq.JobStatus.CANCELLED]) == left
            assert q.count() == 0 and q.recent_events(10_000) == []
    finally:
        if purger.poll() is None:
            purger.kill()
            purger.wait(30)
