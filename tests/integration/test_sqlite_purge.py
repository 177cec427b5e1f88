"""A purge, or an operator's action over many jobs, on SQLite lets other writers in: it runs
``PURGE_CHUNK_JOBS`` (``OPERATOR_CHUNK_JOBS``) jobs per transaction and pauses after each, so a
worker's claim, heartbeat or completion (and an app's action, which waits 2 s at most) is never
held behind all of it. In one transaction, purging 979,020 finished jobs held the write lock for
3 s, and every other writer with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

import jobq
from jobq.backends import base
from jobq.backends.store import SqlStore


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
    assert changes >= 20  # one UPDATE a chunk (its jobs cancelled together), 20 transactions
    assert inside, "no other write got through while the operator's action ran"


def test_a_purge_that_meets_a_lock_held_for_seconds_says_what_it_purged_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection takes the write lock after the purge's second chunk and keeps it past
    the purge's patience (``busy_timeout``): the purge gives up with one line that says how many
    jobs its committed chunks purged; nothing else changed, and the purge run again does the rest."""
    monkeypatch.setattr(base, "PURGE_CHUNK_JOBS", 10)
    url = f"sqlite:///{tmp_path}/q.db?busy_timeout=200"
    holder = apsw.Connection(str(tmp_path / "q.db"))
    paused: list[float] = []

    def pause(self: SqlStore, began: float) -> None:
        paused.append(began)
        if len(paused) == 2:
            holder.execute("BEGIN IMMEDIATE")  # held until the purge has given up

    with jobq.Queue(url) as q:
        ids = q.enqueue_many([{"n": n} for n in range(50)])
        assert all(r.ok for r in q.cancel_many(ids=ids))
        monkeypatch.setattr(SqlStore, "_pause", pause)
        with pytest.raises(
            jobq.StorageError, match=r"stayed locked.* \(20 jobs were purged in the chunks before"
        ) as err:
            q.purge(older_than=0, statuses=[jobq.JobStatus.CANCELLED])
        assert "\n" not in str(err.value)
        holder.execute("ROLLBACK")
        assert q.count() == 30
        assert q.purge(older_than=0, statuses=[jobq.JobStatus.CANCELLED]) == 30
