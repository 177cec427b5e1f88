"""A purge frozen inside one of its chunks, then killed there (both backends).

``test_chunks_killed.py`` kills wherever the kill lands, mostly between chunks. Here the purger
is stopped inside its third chunk's transaction, deterministically:
- SQLite: a progress handler (called by SQLite while the chunk's DELETE runs) blocks for good once
  two chunks have committed: the purger is frozen holding the write lock, as a SIGSTOPped one is;
- PostgreSQL: the test holds the row lock of a job of the third chunk, so the chunk's DELETE
  waits inside its transaction.

What a frozen purger does to the others, then what its kill leaves:
- SQLite: it holds the one write lock, so a worker's claim waits and gives up with the lock
  named, after its ``busy_timeout`` (a frozen writer stops every writer; jobq keeps chunks short
  so that a live purge never holds it long). Once the purger is killed the same claim goes through;
- PostgreSQL: workers go on (the chunk holds only the rows it deletes, all of them finished jobs);
- both: the kill leaves whole chunks deleted, each job that is left with all its events, no event
  of a deleted job; the purge run again deletes the rest.
"""

from __future__ import annotations

import collections
import select
import signal
import subprocess
import sys
import time

import pytest
from children import stopped
from pg import raw_connect
from polling import wait_for

import jobq
from jobq import JobFilter, JobStatus

pytestmark = pytest.mark.slow

JOBS = 1_000
CHUNK = 100
#: SQLite: purges in chunks of CHUNK and freezes inside the third chunk's DELETE (its
#: transaction open, the write lock held), saying "frozen" once there.
FREEZE_SQLITE = """
import sys, time, jobq
from jobq.backends import base
base.PURGE_CHUNK_JOBS = {chunk}
q = jobq.Queue(sys.argv[1])
conn = q.backend._connect()
deletes = []
def trace(cursor, sql, bindings):
    if sql.lstrip().startswith("DELETE FROM jobs"):
        deletes.append(sql)
    return True
def progress():
    if len(deletes) == 3:  # inside the third chunk's DELETE, its transaction open
        print("frozen", flush=True)
        while True:
            time.sleep(60)
    return 0
conn.exec_trace = trace
conn.set_progress_handler(progress, 50)
q.purge(older_than=0, statuses=[jobq.JobStatus.CANCELLED])
"""
#: PostgreSQL: purges in chunks of CHUNK (the test's row lock stops the third).
PURGE = """
import sys, jobq
from jobq.backends import base
base.PURGE_CHUNK_JOBS = {chunk}
jobq.Queue(sys.argv[1]).purge(older_than=0, statuses=[jobq.JobStatus.CANCELLED])
"""
CANCELLED = JobFilter(statuses=(JobStatus.CANCELLED,))
#: The purge's statement as pg_stat_activity shows it.
_PURGE_SQL = "WITH gone AS (%DELETE FROM %jobs%"


def _cancelled_jobs(q: jobq.Queue) -> list[int]:
    """JOBS jobs cancelled (two events each)."""
    ids = q.enqueue_many([{"n": n} for n in range(JOBS)])
    assert all(r.ok for r in q.cancel_many(ids=ids, actor="ops"))
    return ids


def _whole_chunks_and_their_events(q: jobq.Queue, ids: list[int], deleted_chunks: set[int]) -> int:
    """Jobs left after a purge stopped part-way: whole chunks gone, each left job with its two
    events (as ``test_chunks_killed`` counts them), no event of a deleted job. Returns how many are left."""
    left = q.count(CANCELLED)
    assert (JOBS - left) % CHUNK == 0 and (JOBS - left) // CHUNK in deleted_chunks, left
    remaining = {j.id for j in q.list(CANCELLED, jobq.Page(limit=JOBS))}
    events = collections.Counter(e.job_id for e in q.recent_events(10 * JOBS) if e.job_id in ids)
    assert set(events) == remaining and set(events.values()) == {2}
    return left


def _read_line(proc: subprocess.Popen[str], seconds: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    return proc.stdout.readline().strip() if ready else ""


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()  # our own child, by its handle
    proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()


def test_sqlite_a_purger_frozen_inside_a_chunk_holds_the_write_lock_and_its_kill_loses_that_chunk_only(
    sqlite_url: str, request: pytest.FixtureRequest
) -> None:
    with jobq.Queue(sqlite_url) as q:
        ids = _cancelled_jobs(q)
        live = q.enqueue({"live": True})
        proc = subprocess.Popen(
            [sys.executable, "-c", FREEZE_SQLITE.format(chunk=CHUNK), sqlite_url], stdout=subprocess.PIPE, text=True
        )
        request.addfinalizer(lambda: _stop(proc))
        assert _read_line(proc, 60) == "frozen"
        # Frozen inside the third chunk: the two before committed, the third not visible.
        assert q.count(CANCELLED) == JOBS - 2 * CHUNK
        with jobq.Queue(f"{sqlite_url}?busy_timeout=1000") as worker:
            with pytest.raises(jobq.StorageError, match=rf"process pid {proc.pid} \(.*\) holds its write lock\)$"):
                worker.claim("w")
            # Frozen for real (SIGSTOP): named so, with the command that continues it.
            proc.send_signal(signal.SIGSTOP)
            wait_for(lambda: stopped(proc.pid), 30, "the purger to stop")
            with pytest.raises(jobq.StorageError, match=rf"which is stopped .*`kill -CONT {proc.pid}` continues it"):
                worker.claim("w")
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            job = worker.claim("w")  # the lock went with the process
            assert job is not None and job.id == live
            worker.complete(job)
        assert q.get(live).status == JobStatus.COMPLETED
        left = _whole_chunks_and_their_events(q, ids, {2})
        assert q.purge(older_than=0, statuses=[JobStatus.CANCELLED]) == left
        assert q.count(CANCELLED) == 0 and not [e for e in q.recent_events(10 * JOBS) if e.job_id in ids]


@pytest.mark.postgres
def test_postgres_a_purger_stuck_inside_a_chunk_holds_no_worker_and_its_kill_leaves_whole_chunks(
    postgres_url: str, request: pytest.FixtureRequest
) -> None:
    with jobq.Queue(postgres_url) as q, raw_connect(postgres_url, autocommit=True) as admin:
        ids = _cancelled_jobs(q)
        # Finish times one apart, by hand, so that the chunks are known: ids in order.
        admin.execute("UPDATE jobs SET finished_at = id WHERE id = ANY(%s)", (ids,))
        live = q.enqueue({"live": True})
        blocker = raw_connect(postgres_url)
        request.addfinalizer(blocker.close)
        blocker.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (ids[2 * CHUNK + CHUNK // 2],))
        proc = subprocess.Popen([sys.executable, "-c", PURGE.format(chunk=CHUNK), postgres_url], text=True)
        request.addfinalizer(lambda: _stop(proc))

        def waiting() -> bool:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s", (_PURGE_SQL,)
            ).fetchone()
            return bool(row and row[0])

        wait_for(waiting, timeout=60, what="the purge's third chunk waiting on the held row")
        assert q.count(CANCELLED) == JOBS - 2 * CHUNK
        # Workers go on meanwhile: the chunk holds only the finished jobs it deletes.
        started = time.monotonic()
        job = q.claim("w")
        assert job is not None and job.id == live
        q.complete(job)
        assert time.monotonic() - started < 30
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        blocker.rollback()  # the row lock goes: the dead client's chunk ends one way or the other

        def purger_gone() -> bool:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()", (_PURGE_SQL,)
            ).fetchone()
            return bool(row) and row[0] == 0

        wait_for(purger_gone, timeout=60, what="the killed purger's session to end")
        # Its chunk in flight rolled back whole (its transaction's COMMIT was never sent: two
        # chunks are left deleted, as measured); had the statement been sent alone, it would
        # have committed whole when it ended. Never part of a chunk.
        left = _whole_chunks_and_their_events(q, ids, {2, 3})
        assert q.purge(older_than=0, statuses=[JobStatus.CANCELLED]) == left
        assert q.count(CANCELLED) == 0 and q.get(live).status == JobStatus.COMPLETED
        assert not [e for e in q.recent_events(10 * JOBS) if e.job_id in ids]
