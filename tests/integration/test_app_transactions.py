"""``conn=`` with real workers and real connections: handlers that complete in their own
transaction, wake-ups at the caller's commit, and what each backend refuses (one line each).

The contract suite (``jobq.testing.contract.transactions``) holds the storage rules; this file
holds what needs a running worker, a second database, or a driver's own modes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from polling import wait_for

import jobq
from jobq.backends.sqlite import caller
from jobq.backends.sqlite.caller import shares_apsws_sqlite
from jobq.testing.appconn import AppConnection, app_connections

FAST = {"lease_seconds": 3.0, "rescue_interval_seconds": 0.2, "backoff_base_seconds": 0.05}


@pytest.fixture
def apps(backend_url: str) -> Iterator[list[AppConnection]]:
    made = app_connections(backend_url)
    yield made
    for app in made:
        app.close()


def _run_worker(q: jobq.Queue, handler: Any, **options: Any) -> tuple[jobq.Worker, threading.Thread]:
    worker = jobq.Worker(q, handler, **options)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.started.wait(30)
    return worker, thread


def _stop(worker: jobq.Worker, thread: threading.Thread) -> None:
    worker.stop()
    thread.join(30)
    assert not thread.is_alive()


def test_handlers_complete_in_their_own_transaction_and_the_worker_writes_nothing_more(
    backend_url: str, apps: list[AppConnection]
) -> None:
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url, **FAST))
    try:
        for app in apps:
            lock = threading.Lock()  # one application connection, shared by the runner threads

            def handler(ctx: jobq.JobContext, app: AppConnection = app, lock: threading.Lock = lock) -> str:
                with lock:
                    app.begin()
                    try:
                        app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (ctx.job.id, "ran"))
                        ctx.complete({"row": ctx.job.id}, conn=app.conn)
                    except BaseException:
                        app.rollback()
                        raise
                    app.commit()
                return "not stored: complete(conn=) stored the result"

            ids = q.enqueue_many(list(range(20)), queue=app.kind)
            worker, thread = _run_worker(q, handler, queues=[app.kind], concurrency=2, batch=4)
            try:
                wait_for(lambda ids=ids: all(q.get(i).status == jobq.JobStatus.COMPLETED for i in ids), 60, "all jobs")
                wait_for(lambda worker=worker: worker.jobs_done == 20 and not worker.active(), 30, "the runs to end")
            finally:
                _stop(worker, thread)
            for job_id in ids:
                assert q.get(job_id).result == {"row": job_id}, app
                kinds = [str(e.kind) for e in q.events(job_id)]
                # A job claimed ahead and given back unrun (jobq.worker.prefetch) shows as an extra
                # claimed/released pair before its run; nothing else may come between.
                assert kinds[0] == "enqueued" and kinds[-2:] == ["claimed", "completed"], (app, kinds)
                assert set(kinds[1:-2]) <= {"claimed", "released"} and kinds.count("completed") == 1, (app, kinds)
                assert app.rows(job_id) == 1
            assert worker.jobs_failed == 0
    finally:
        q.close()


def test_a_handler_whose_transaction_rolls_back_fails_the_attempt_and_runs_again(
    backend_url: str, apps: list[AppConnection]
) -> None:
    app = apps[0]
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url, **FAST))
    try:

        def handler(ctx: jobq.JobContext) -> None:
            app.begin()
            try:
                app.execute("INSERT INTO app_rows (job_id, note) VALUES (?, ?)", (ctx.job.id, "ran"))
                ctx.complete(conn=app.conn)
                if ctx.job.attempts == 1:
                    raise RuntimeError("the application's commit failed")
            except BaseException:
                app.rollback()
                raise
            app.commit()

        job_id = q.enqueue("x")
        worker, thread = _run_worker(q, handler)
        try:
            wait_for(lambda: q.get(job_id).status == jobq.JobStatus.COMPLETED, 60, "the retry")
        finally:
            _stop(worker, thread)
        job = q.get(job_id)
        assert job.attempts == 2 and app.rows(job_id) == 1
        assert [str(e.kind) for e in q.events(job_id)] == [
            "enqueued",
            "claimed",
            "retry_scheduled",
            "claimed",
            "completed",
        ]
    finally:
        q.close()


def test_an_idle_worker_is_woken_by_the_callers_commit(backend_url: str, apps: list[AppConnection]) -> None:
    """Polling every 30 s: a job seen in a few seconds came from the wake-up, sent with the commit
    (PostgreSQL: NOTIFY at COMMIT; SQLite: a datagram whose claim waits for the commit's lock)."""
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url, poll_interval_seconds=30.0, **FAST))
    done: list[str] = []
    try:
        worker, thread = _run_worker(q, lambda ctx: done.append(ctx.payload))
        try:
            for app in apps:
                wait_for(lambda: q.workers()[0].wake_address is not None or backend_url.startswith("postgres"), 10)
                app.begin()
                q.enqueue(f"rolled back {app}", conn=app.conn)
                app.rollback()
                app.begin()
                q.enqueue(f"committed {app}", conn=app.conn)
                app.commit()
                wait_for(lambda app=app: f"committed {app}" in done, 10, f"the wake-up at the commit ({app})")
                assert f"rolled back {app}" not in done
        finally:
            _stop(worker, thread)
    finally:
        q.close()


# -- what each backend refuses -------------------------------------------------------------------
def test_sqlite_refuses_another_file_and_connections_that_would_commit_on_their_own(
    sqlite_url: str, tmp_path: Path
) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    with jobq.Queue(sqlite_url) as q:
        other = apsw.Connection(str(tmp_path / "other.db"))
        other.execute("BEGIN IMMEDIATE")
        memory = apsw.Connection(":memory:")
        memory.execute("BEGIN")
        autocommit = apsw.Connection(path)
        for conn, says in ((other, "not on this queue's"), (memory, "a memory database"), (autocommit, "no open")):
            with pytest.raises(jobq.ConfigError, match=says) as error:
                q.enqueue("x", conn=conn)
            assert "\n" not in str(error.value)
        # The same file by another name (a symlink) is the same database.
        (tmp_path / "link.db").symlink_to(path)
        linked = apsw.Connection(str(tmp_path / "link.db"))
        linked.set_busy_timeout(10_000)
        linked.execute("BEGIN IMMEDIATE")
        # The application's row tracer does not change what jobq reads back, and is kept.
        linked.row_trace = lambda cursor, row: {"row": row}
        job_id = q.enqueue("x", conn=linked)
        assert linked.execute("SELECT 1").fetchall() == [{"row": (1,)}]
        linked.execute("COMMIT")
        assert q.get(job_id).status == jobq.JobStatus.PENDING and q.count() == 1
        for conn in (other, memory, autocommit, linked):
            conn.close()


def test_sqlite_refuses_a_stdlib_connection_beside_jobqs_own_copy_of_sqlite(sqlite_url: str) -> None:
    """Two copies of SQLite in one process do not lock each other out (measured: a stdlib
    connection took the write lock that jobq's apsw connection held): refused, nothing written."""
    path = sqlite_url.removeprefix("sqlite:///")
    with jobq.Queue(sqlite_url) as q:
        mine = apsw.Connection(path)
        mine.set_busy_timeout(0)
        theirs = sqlite3.connect(path, timeout=0, isolation_level=None)
        mine.execute("BEGIN IMMEDIATE")
        if apsw.using_amalgamation:
            # What the refusal is about: the stdlib copy is not excluded by apsw's write lock.
            theirs.execute("BEGIN IMMEDIATE")
            theirs.execute("ROLLBACK")
        mine.execute("ROLLBACK")
        if shares_apsws_sqlite():
            pytest.skip("the stdlib module and apsw run one SQLite library here")
        with pytest.raises(jobq.ConfigError, match="second copy of SQLite") as error:
            q.enqueue("x", conn=sqlite3.connect(path))
        assert "\n" not in str(error.value) and q.count() == 0
        mine.close()
        theirs.close()


def test_the_stdlib_driver_where_it_shares_apsws_sqlite(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where apsw runs the system's SQLite, a stdlib connection is accepted: its implicit
    transactions, autocommit mode and row factories. (Here the copies differ: the check is
    patched, and the connection is used from one thread, with no other writer, so the missing
    mutual exclusion cannot bite.)"""
    monkeypatch.setattr(caller, "shares_apsws_sqlite", lambda: True)
    path = sqlite_url.removeprefix("sqlite:///")
    with jobq.Queue(sqlite_url) as q:
        legacy = sqlite3.connect(path)
        legacy.row_factory = sqlite3.Row
        job_id = q.enqueue("x", conn=legacy)  # begins the caller's transaction implicitly
        assert legacy.in_transaction and q.count() == 0
        legacy.commit()
        assert q.get(job_id).status == jobq.JobStatus.PENDING
        q.enqueue_many(["y", "z"], conn=legacy)
        legacy.rollback()
        assert q.count() == 1
        autocommit = sqlite3.connect(path, isolation_level=None)
        with pytest.raises(jobq.ConfigError, match="autocommit mode"):
            q.enqueue("x", conn=autocommit)
        job = q.claim("w")  # before BEGIN: jobq's apsw connection must not write while it is open
        assert job is not None
        autocommit.execute("BEGIN IMMEDIATE")
        q.complete(job, {"ok": 1}, conn=autocommit)
        autocommit.execute("COMMIT")
        assert q.get(job_id).result == {"ok": 1}
        legacy.close()
        autocommit.close()


@pytest.mark.postgres
def test_postgres_refuses_failed_autocommit_async_and_foreign_connections(postgres_url: str, tmp_path: Path) -> None:
    import psycopg
    from pg import with_database
    from psycopg.rows import dict_row

    with jobq.Queue(postgres_url) as q:
        failed = psycopg.connect(postgres_url)
        with pytest.raises(psycopg.errors.DivisionByZero):
            failed.execute("SELECT 1/0")
        with pytest.raises(jobq.StorageError, match="has failed") as error:
            q.enqueue("x", conn=failed)
        assert "\n" not in str(error.value)
        failed.rollback()

        autocommit = psycopg.connect(postgres_url, autocommit=True)
        with pytest.raises(jobq.ConfigError, match="autocommit"):
            q.enqueue("x", conn=autocommit)
        with autocommit.transaction():  # an explicit transaction is one to join
            job_id = q.enqueue("x", conn=autocommit)
        assert q.get(job_id).status == jobq.JobStatus.PENDING

        with pytest.raises(jobq.ConfigError, match=r"conn must be a psycopg\.Connection"):
            q.enqueue("x", conn=sqlite3.connect(":memory:"))
        other_db = psycopg.connect(with_database(postgres_url, "postgres"))
        with pytest.raises(jobq.ConfigError, match="not "):
            q.enqueue("x", conn=other_db)
        other_db.rollback()

        # The application's row factory does not change what jobq reads back.
        rows = psycopg.connect(postgres_url, row_factory=dict_row)
        assert isinstance(q.enqueue("y", conn=rows), int)
        rows.rollback()
        assert q.count() == 1
        for conn in (failed, autocommit, other_db, rows):
            conn.close()


@pytest.mark.postgres
def test_postgres_refuses_an_async_connection(postgres_url: str) -> None:
    import asyncio

    import psycopg

    async def main() -> None:
        aconn = await psycopg.AsyncConnection.connect(postgres_url)
        try:
            with jobq.Queue(postgres_url) as q, pytest.raises(jobq.ConfigError, match="AsyncConnection"):
                q.enqueue("x", conn=aconn)
        finally:
            await aconn.close()

    asyncio.run(main())
