"""Job ids are never reused, and SQLite's schema 14 (the jobs table rebuilt without AUTOINCREMENT
and without IN-list checks) keeps every row, index, trigger and check of schema 13.

An id names its job for good: the demo's stamps (``job=<id>`` in a file: a second job with the
same id on the same file would be taken as already done), links, logs, the exporter's cursors.
The purge's case is in the contract suite; here are deletes by hand and the upgrade."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import apsw
import pytest
from cli_errors import one_line_error, run_jobq
from handwritten import NOT_A_STATUS_OR_KEY_SCOPE, write_by_hand
from polling import wait_for

import jobq
import jobq.backends.sqlite as sqlite_backend
from jobq.testing import FakeClock
from jobq.testing.contract.common import kinds


def test_ids_are_never_reused_after_the_newest_rows_are_deleted_by_hand(backend_url: str, clock: FakeClock) -> None:
    """An operator's ``DELETE`` of the newest jobs, then of every job, as ``sqlite3``/``psql`` runs
    it: every way of enqueueing starts above the highest id the table ever held."""
    settings = jobq.Settings(database_url=backend_url)
    with jobq.Queue(settings=settings, clock=clock) as q:
        ids = q.enqueue_many(["a", "b", "c", "d"])
        write_by_hand(backend_url, f"DELETE FROM jobs WHERE id >= {ids[2]}")
        assert q.enqueue("after the newest") > ids[-1]
        write_by_hand(backend_url, "DELETE FROM jobs")
        assert q.count() == 0
        again = [
            q.enqueue("one"),
            *q.enqueue_many(["many1", "many2"]),
            q.enqueue("keyed", key="k"),
            *q.enqueue_many(["keyed1", "keyed2"], keys=["k1", "k2"]),
        ]
        assert again[0] > ids[-1] + 1 and again == sorted(set(again))


def _columns(db: Path) -> list[tuple[object, ...]]:
    conn = apsw.Connection(str(db))
    try:
        return list(conn.execute("PRAGMA table_info(jobs)"))
    finally:
        conn.close()


def test_a_schema_13_database_is_rebuilt_with_its_rows_and_ids_kept(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upgrade copies every row as it was (every column), keeps the columns' order, types,
    defaults and NOT NULLs, makes the indexes and the hand-edit trigger again, and starts new ids
    above the highest AUTOINCREMENT handed out, also when the rows that had it were deleted."""
    db = tmp_path / "queue.db"
    settings = jobq.Settings(database_url=f"sqlite:///{db}")
    current = sqlite_backend.MIGRATIONS
    assert len(current) == sqlite_backend.SCHEMA_VERSION
    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", current[:13])
    with jobq.Queue(settings=settings, clock=clock) as old:
        # Inserted as the jobq of schema 13 did (today's insert names the floor of schema 14).
        insert = "INSERT INTO jobs (payload, run_at, created_at, updated_at, idempotency_key) VALUES "
        now = clock.now
        write_by_hand(
            f"sqlite:///{db}",
            insert + f"('\"keyed\"', {now}, {now}, {now}, 'held')",
            *(insert + f"('{{\"n\": {i}}}', {now}, {now}, {now}, NULL)" for i in range(6)),
        )
        keyed, *ids = [j.id for j in old.list(page=jobq.Page(sort="id", descending=False))]
        job = old.claim("w")
        assert job is not None
        old.complete(job, result={"done": True})
        old.cancel(ids[1], actor="ops")
    top = ids[-1]
    write_by_hand(f"sqlite:///{db}", f"DELETE FROM jobs WHERE id >= {ids[-2]}")  # the two newest
    conn = apsw.Connection(str(db))
    rows_before = sorted(conn.execute("SELECT * FROM jobs"))
    assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchall() == [(top,)]
    conn.close()
    columns_before = _columns(db)
    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", current)

    with jobq.Queue(settings=settings, clock=clock) as q:
        conn = apsw.Connection(str(db))
        try:
            assert conn.execute("SELECT max(version) FROM jobq_schema").fetchall() == [(sqlite_backend.SCHEMA_VERSION,)]
            assert sorted(conn.execute("SELECT * FROM jobs")) == rows_before
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'jobs'")}
            assert names == {
                "jobs",
                "jobs_key",
                "jobs_finished",
                "jobs_status_rare",
                "jobs_live",
                "jobs_external_status",
                "jobs_id_floor",
                "jobs_id_moved",
            }
            (table_sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'jobs'").fetchone()
            assert "AUTOINCREMENT" not in table_sql and " IN (" not in table_sql
        finally:
            conn.close()
        assert _columns(db) == columns_before
        assert q.enqueue("keyed again", key="held") == keyed  # the key index came back
        new = q.enqueue("new")
        assert new == top + 1  # above the deleted rows' ids, as AUTOINCREMENT was
        write_by_hand(f"sqlite:///{db}", f"UPDATE jobs SET status = 'FAILED' WHERE id = {ids[0]}")
        assert kinds(q, ids[0])[-1] == "external_update"  # the trigger came back
        assert q.get(ids[0]).status == jobq.JobStatus.FAILED
        job = q.claim("w2")
        assert job is not None and job.id == ids[2]  # jobs_live: the claim order kept


@pytest.mark.parametrize("write", NOT_A_STATUS_OR_KEY_SCOPE)
def test_the_rebuilt_checks_still_refuse_a_status_or_key_scope_that_is_not_one(sqlite_url: str, write: str) -> None:
    """Schema 14 spells the checks as equalities (no temporary b-tree of the IN list per row
    written): the same values pass, any other is refused with SQLite's one-line error, and the
    row stays as it was."""
    with jobq.Queue(sqlite_url) as q:
        job_id = q.enqueue("x")
        with pytest.raises(apsw.ConstraintError, match="CHECK constraint failed"):
            write_by_hand(sqlite_url, write)
        assert q.get(job_id).status == jobq.JobStatus.PENDING and q.count() == 1


def _empty_schema_13(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new database at ``url`` made by the migrations up to schema 13, as the jobq before made it."""
    current = sqlite_backend.MIGRATIONS
    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", current[:13])
    with jobq.Queue(url):
        pass
    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", current)


MIGRATE = """
import sys, jobq
with jobq.Queue(sys.argv[1]) as q:
    print("migrated", flush=True)
"""


def test_a_kill_during_the_rebuild_leaves_schema_13_whole_and_the_next_open_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild is one transaction: a process killed (SIGKILL) while it copies the table leaves
    the database at schema 13 with every row; the next open migrates it, ids continuing above
    the highest one ever handed out."""
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    _empty_schema_13(url, monkeypatch)
    rows = 400_000  # a copy of a second or so: the kill lands inside it
    write_by_hand(
        url,
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
        "INSERT INTO jobs (payload, run_at, created_at, updated_at) SELECT '{\"n\": ' || i || '}', i, i, i FROM n",
        f"DELETE FROM jobs WHERE id > {rows - 10}",  # the newest ids are gone, AUTOINCREMENT remembers them
    )
    wal = db.with_name("queue.db-wal")
    wal_before = wal.stat().st_size if wal.exists() else 0
    proc = subprocess.Popen([sys.executable, "-c", MIGRATE, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # The copy's pages reach the WAL as it runs: kill once it has written a few megabytes.
        wait_for(lambda: (wal.exists() and wal.stat().st_size > wal_before + (8 << 20)) or proc.poll() is not None)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"migrated" not in out, "the migration finished before the kill: make the table larger"
    conn = apsw.Connection(str(db))
    try:
        assert conn.execute("SELECT max(version) FROM jobq_schema").fetchall() == [(13,)]
        assert conn.execute("SELECT count(*), max(id) FROM jobs").fetchall() == [(rows - 10, rows - 10)]
        assert "jobq_id_floor" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    with jobq.Queue(url) as q:
        assert q.count() == rows - 10
        assert q.enqueue("next") == rows + 1
    conn = apsw.Connection(str(db))
    try:
        assert conn.execute("SELECT max(version) FROM jobq_schema").fetchall() == [(sqlite_backend.SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_an_upgrade_that_meets_a_held_write_lock_waits_for_it_or_gives_up_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock while a process opens a schema-13 database: with
    ``?busy_timeout=300`` the open gives up in one line and the database stays at schema 13 with
    every row; with the default wait, the open waits for the lock and then migrates."""
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    _empty_schema_13(url, monkeypatch)
    # The rows as schema 13's jobq wrote them (this jobq's statements need schema 14's floor).
    write_by_hand(url, *(f"INSERT INTO jobs (payload, run_at, created_at, updated_at) VALUES ('\"{n}\"', 0, 0, 0)"
                         for n in "abc"))  # fmt: skip
    holder = apsw.Connection(str(db))
    holder.execute("BEGIN IMMEDIATE")  # the fault: a writer that holds the lock for seconds
    try:
        with pytest.raises(jobq.StorageError, match="stayed locked"):
            jobq.Queue(f"{url}?busy_timeout=300")
        assert holder.execute("SELECT max(version) FROM jobq_schema").fetchall() == [(13,)]
        opened: list[jobq.Queue] = []
        opener = threading.Thread(target=lambda: opened.append(jobq.Queue(url)), daemon=True)
        opener.start()
        opener.join(0.5)
        assert opener.is_alive() and not opened  # waiting for the lock, not failing
    finally:
        holder.execute("COMMIT")
        holder.close()
    opener.join(60)
    assert len(opened) == 1
    with opened[0] as q:
        assert q.count() == 3
        assert q.enqueue("d") == 4
    conn = apsw.Connection(str(db))
    try:
        assert conn.execute("SELECT max(version) FROM jobq_schema").fetchall() == [(sqlite_backend.SCHEMA_VERSION,)]
    finally:
        conn.close()


#: The largest id either backend can store (a signed 64-bit integer).
ID_MAX = 2**63 - 1


def _newest_id_by_hand(url: str, newest: int, value: int) -> None:
    """Make ``value`` the newest id by hand: SQLite's newest row takes it, PostgreSQL's sequence."""
    if url.startswith("sqlite:"):
        write_by_hand(url, f"UPDATE jobs SET id = {value} WHERE id = {newest}")
    else:
        write_by_hand(url, f"SELECT setval(pg_get_serial_sequence('jobs', 'id'), {value})")


def test_no_id_left_is_one_clear_line_and_loses_nothing(backend_url: str, tmp_path: Path, clock: FakeClock) -> None:
    """The newest id at the largest integer the store holds (only a hand can put it there: 2^63
    enqueues would take millennia): every enqueue refuses in one line naming the limit, from the
    API and the CLI, and the stored jobs stay as they were. SQLite said "datatype mismatch"
    (the next id, one above the largest integer, is a REAL)."""
    settings = jobq.Settings(database_url=backend_url)
    with jobq.Queue(settings=settings, clock=clock) as q:
        first, newest = q.enqueue_many(["a", "b"])
        _newest_id_by_hand(backend_url, newest, ID_MAX)
        before = [(j.id, j.payload, j.status) for j in q.list()]
        for enqueue in (lambda: q.enqueue("c"), lambda: q.enqueue_many(["d", "e"]), lambda: q.enqueue("k", key="k")):
            with pytest.raises(jobq.StorageError) as raised:
                enqueue()
            message = str(raised.value)
            assert "\n" not in message and str(ID_MAX) in message, message
        line = one_line_error(run_jobq("--db", backend_url, "enqueue", "--json", '"f"', cwd=tmp_path), str(ID_MAX))
        assert "mismatch" not in line
        assert [(j.id, j.payload, j.status) for j in q.list()] == before and q.count() == 2
        job = q.claim("w")  # the stored jobs still run
        assert job is not None and job.id == first
        q.complete(job)


def test_a_deleted_id_floor_falls_back_to_one_above_the_newest_job(sqlite_url: str, clock: FakeClock) -> None:
    """The floor of schema 14 (``jobq_id_floor``, its one row) deleted by hand: enqueues go on,
    each id one above the newest job's (SQLite's own choice, as a table without the floor), and
    none is refused or repeated."""
    settings = jobq.Settings(database_url=sqlite_url)
    with jobq.Queue(settings=settings, clock=clock) as q:
        ids = q.enqueue_many(["a", "b", "c"])
        write_by_hand(sqlite_url, "DELETE FROM jobq_id_floor")
        made = [q.enqueue("one"), *q.enqueue_many(["many1", "many2"]), q.enqueue("keyed", key="k")]
        assert made == list(range(ids[-1] + 1, ids[-1] + 5))
        assert sorted(j.id for j in q.list()) == [*ids, *made]


def test_a_batch_that_would_pass_the_largest_id_is_refused_whole(backend_url: str, clock: FakeClock) -> None:
    """Three ids left: a batch of two takes two of them, in order; a batch of two more stores
    none. SQLite handed the rows past the top random unused ids (maybe purged jobs' ids), and
    the batch's ids came back paired with the wrong jobs."""
    settings = jobq.Settings(database_url=backend_url)
    with jobq.Queue(settings=settings, clock=clock) as q:
        _, newest = q.enqueue_many(["a", "b"])
        _newest_id_by_hand(backend_url, newest, ID_MAX - 3)
        assert q.enqueue_many(["c", "d"]) == [ID_MAX - 2, ID_MAX - 1]
        assert [q.get(i).payload for i in (ID_MAX - 2, ID_MAX - 1)] == ["c", "d"]
        with pytest.raises(jobq.StorageError, match=str(ID_MAX)):
            q.enqueue_many(["e", "f"])
        assert sorted(j.payload for j in q.list()) == ["a", "b", "c", "d"]


def test_ids_are_never_reused_after_an_id_is_changed_by_hand(sqlite_url: str, clock: FakeClock) -> None:
    """``UPDATE jobs SET id = ...`` by hand, as ``sqlite3`` runs it: the newest job moved down
    to a free id, then another job moved up and back. Every way of enqueueing starts above every
    id the table held; jobq's own writes, which never set an id, leave the floor alone."""
    settings = jobq.Settings(database_url=sqlite_url)
    with jobq.Queue(settings=settings, clock=clock) as q:
        ids = q.enqueue_many(["a", "b", "c", "d"])
        write_by_hand(sqlite_url, f"DELETE FROM jobs WHERE id = {ids[1]}")
        write_by_hand(sqlite_url, f"UPDATE jobs SET id = {ids[1]} WHERE id = {ids[-1]}")  # the newest, moved down
        made = [q.enqueue("one"), *q.enqueue_many(["many1", "many2"]), q.enqueue("keyed", key="k")]
        assert made[0] == ids[-1] + 1 and made == sorted(set(made))
        write_by_hand(sqlite_url, f"UPDATE jobs SET id = {made[-1] + 100} WHERE id = {ids[0]}")
        write_by_hand(sqlite_url, f"UPDATE jobs SET id = {ids[0]} WHERE id = {made[-1] + 100}")
        assert q.enqueue("after") == made[-1] + 101
        floor = _floor(sqlite_url)
        job = q.claim("w")
        assert job is not None
        q.complete(job)
        q.cancel(q.enqueue("x"))
        assert _floor(sqlite_url) == floor


def _floor(url: str) -> int:
    conn = apsw.Connection(url.removeprefix("sqlite:///"))
    try:
        return int(conn.execute("SELECT floor FROM jobq_id_floor").fetchall()[0][0])
    finally:
        conn.close()
