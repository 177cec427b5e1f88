"""What an enqueue costs, counted (issue 13): a regression fails `make test`, not only `make bench`.

An enqueue stores the job row and nothing else: its ``enqueued`` history entry, the ops chart's
count and the exporter's counter come from the row's ``created_at`` (``common.enqueued_event``,
``history_enqueued``, ``Queue.enqueue_totals``). The event row it used to write was about a
quarter of an SQLite enqueue's CPU (~20 of ~75 us measured with ``resource.getrusage``) and half
of its WAL pages. Round trips on PostgreSQL are counted in test_round_trips.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import apsw
import pytest
from pg import raw_connect
from test_sqlite_costs import start_counting, wal_frames

import jobq
from jobq.backends import ops

JOBS = 60
#: WAL pages per enqueue, one per transaction: measured 2.1 (the jobs table, its live index and
#: the odd split); 3.1 while AUTOINCREMENT also wrote sqlite_sequence (before SQLite schema 14);
#: 6.1 while it stored an `enqueued` event row and its index entry.
SQLITE_FRAMES_PER_ENQUEUE_MAX = 2.5
#: Measured on PostgreSQL 15: 437 bytes an enqueue (the row, the live index, the commit record);
#: 737 with the event row and its two index entries.
PG_WAL_BYTES_PER_ENQUEUE_MAX = 550


def _statements(conn: apsw.Connection, call: object) -> list[str]:
    seen: list[str] = []

    def trace(_cursor: apsw.Cursor, sql: str, _bindings: object) -> bool:
        seen.append(" ".join(sql.split()))
        return True

    conn.exec_trace = trace
    try:
        call()  # type: ignore[operator]
    finally:
        conn.exec_trace = None
    return seen


@pytest.mark.usefixtures("no_periodic_refresh")  # statements listed: no reload of the wake-up addresses
def test_an_sqlite_enqueue_is_one_insert_sent_alone_and_stores_no_event(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    with jobq.Queue(f"sqlite:///{db}") as q:
        q.enqueue({"warm": True})  # the schema and the cached statements exist
        conn = q.backend._connect()  # type: ignore[attr-defined]
        seen = _statements(conn, lambda: q.enqueue({"n": 1}))
        # Autocommit: SQLite makes the lone INSERT its own write transaction (no BEGIN, COMMIT).
        assert len(seen) == 1 and seen[0].startswith("INSERT INTO jobs"), seen
        assert conn.get_autocommit()
        # A keyed enqueue may read after its insert: it keeps its BEGIN IMMEDIATE transaction.
        seen = _statements(conn, lambda: q.enqueue({"n": 2}, key="k"))
        assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT", seen
        seen = _statements(conn, lambda: q.enqueue_many([{"n": n} for n in range(10)]))
        assert not [s for s in seen if "job_events" in s], seen
        assert conn.execute("SELECT count(*) FROM job_events").fetchall()[0][0] == 0
        ids = q.enqueue_many([{"n": n} for n in range(3)], keys=["a", "b", "a"])
        assert ids[0] == ids[2] != ids[1]  # keyed jobs in a batch keep their semantics
        assert conn.execute("SELECT count(*) FROM job_events").fetchall()[0][0] == 0
        assert [str(e.kind) for e in q.events(ids[0])] == ["enqueued"]


def test_an_sqlite_enqueue_sent_alone_waits_for_a_held_write_lock_or_gives_up_cleanly(tmp_path: Path) -> None:
    """The lone INSERT takes the write lock as BEGIN IMMEDIATE did: it waits for another
    process's transaction (the busy handler), and past the URL's busy_timeout fails in one line
    with nothing stored."""
    db = tmp_path / "q.db"
    holder = apsw.Connection(str(db))
    with jobq.Queue(f"sqlite:///{db}") as q:
        q.enqueue({"warm": True})
        holder.execute("BEGIN IMMEDIATE")
        box: list[int] = []
        t = threading.Thread(target=lambda: box.append(q.enqueue({"n": 1})))
        t.start()
        time.sleep(0.5)  # the fault: the lock is held for a while
        assert not box, "the enqueue wrote while another connection held the write lock"
        holder.execute("COMMIT")
        t.join(30)
        assert box and (job := q.get(box[0])) is not None and job.payload == {"n": 1}
    with jobq.Queue(f"sqlite:///{db}?busy_timeout=200") as q:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(jobq.StorageError, match="stayed locked"):
            q.enqueue({"n": 2})
        holder.execute("ROLLBACK")
        assert q.counts()["PENDING"] == 2
    holder.close()


def test_an_sqlite_operation_sends_no_statement_after_one_it_sent_alone(tmp_path: Path) -> None:
    """A statement sent alone has committed: a retry of the operation (SQLITE_BUSY) would repeat
    it, so nothing but wake-ups may follow it. Only an operation said to read no clock in its
    first step may start alone; any other begins its transaction first (its alone statement then
    runs inside it)."""
    with jobq.Queue(f"sqlite:///{tmp_path / 'q.db'}") as q:
        q.enqueue({})

        def two() -> ops.Op[None]:
            yield ops.Exec("UPDATE jobs SET priority = 1", alone=True)
            yield ops.Exec("UPDATE jobs SET priority = 2")

        backend: Any = q.backend
        with pytest.raises(RuntimeError, match="after one it sent alone"):
            backend._transaction(two, write=True, may_start_alone=True)
        backend._transaction(two, write=True)
        assert backend._connect().execute("SELECT priority FROM jobs").fetchall() == [(2,)]


def test_an_sqlite_enqueue_writes_a_bounded_number_of_wal_pages(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    with jobq.Queue(f"sqlite:///{db}") as q:
        q.enqueue({"warm": True})
        start_counting(q.backend._connect())  # type: ignore[attr-defined]
        for n in range(JOBS):
            q.enqueue({"n": n, "pad": "x" * 60})
        frames = wal_frames(db) / JOBS
        assert q.counts()["PENDING"] == JOBS + 1
    assert frames <= SQLITE_FRAMES_PER_ENQUEUE_MAX, f"{frames:.2f} WAL pages per enqueue"


@pytest.mark.postgres
def test_a_postgres_enqueue_stores_no_event_and_writes_a_bounded_amount_of_wal(postgres_url: str) -> None:
    with jobq.Queue(postgres_url) as q, raw_connect(postgres_url, autocommit=True) as conn:
        q.enqueue({"warm": True})
        conn.execute("CHECKPOINT")  # the count starts after the full-page writes of a checkpoint
        start = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        for n in range(JOBS):
            q.enqueue({"n": n, "pad": "x" * 60})
        end = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        written = float(conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end, start)).fetchone()[0])
        ids = q.enqueue_many([{"n": n} for n in range(5)])
        keyed = q.enqueue({"n": 1}, key="k")
        assert conn.execute("SELECT count(*) FROM job_events").fetchone()[0] == 0
        assert [str(e.kind) for e in q.events(ids[-1])] == ["enqueued"]
        assert [str(e.kind) for e in q.events(keyed)] == ["enqueued"]
    assert written / JOBS <= PG_WAL_BYTES_PER_ENQUEUE_MAX, f"{written / JOBS:.0f} WAL bytes per enqueue"
