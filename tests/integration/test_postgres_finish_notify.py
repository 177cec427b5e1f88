"""PostgreSQL sends a finish NOTIFY only for jobs someone waits for (``job_waiters``): every NOTIFY
takes the server's global notify-queue lock at commit, listened to or not (bench/notify_cost.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

import jobq
from jobq.backends.postgres.url import split_url

pytestmark = pytest.mark.postgres


@contextlib.contextmanager
def _listening(postgres_url: str) -> Iterator[tuple[jobq.Queue, psycopg.Connection]]:
    """A queue, and a connection listening on its finish channel."""
    options = split_url(postgres_url)
    with jobq.Queue(postgres_url) as q, psycopg.connect(options.libpq_url, autocommit=True) as listen:
        listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(options.done_channel)))
        yield q, listen


def test_a_finish_notifies_only_the_jobs_someone_waits_for(postgres_url: str) -> None:
    options = split_url(postgres_url)
    with _listening(postgres_url) as (q, listen):
        ids = q.enqueue_many(range(6))
        now = time.time()
        waited = {ids[1], ids[3], ids[5]}
        registrations = {i: q.backend.register_waiter(i, now, now + 60) for i in waited}
        q.backend.unregister_waiter(registrations.pop(ids[5]))  # stopped waiting: no NOTIFY
        jobs = {}
        for _ in ids:
            job = q.claim("w1")
            assert job is not None
            jobs[job.id] = job
        q.complete(jobs[ids[0]])  # the one-statement completion, nobody waits
        q.complete(jobs[ids[1]])  # ... someone waits
        q.complete_many([(jobs[ids[2]], None), (jobs[ids[3]], None)])  # a batch: one of two waited
        q.fail(jobs[ids[4]], "x", retry=False)  # nobody waits
        q.fail(jobs[ids[5]], "x", retry=False)  # unregistered
        # Notifications arrive in commit order: had any unwaited job been notified, it would
        # come first, before the ones expected.
        got = [n.payload for n in listen.notifies(timeout=10, stop_after=2)]
        assert got == [str(ids[1]), str(ids[3])]
        # Registrations go, and expired ones are cleared by the next registration.
        for registration in registrations.values():
            q.backend.unregister_waiter(registration)
        q.backend.register_waiter(ids[0], now, now - 1)  # already expired
        q.backend.register_waiter(ids[0], now, now + 60)
        count = listen.execute(sql.SQL("SELECT count(*) FROM {}.job_waiters").format(sql.Identifier(options.schema)))
        assert count.fetchone() == (1,)


def test_the_worker_s_completions_and_claim_notify_the_jobs_someone_waits_for(postgres_url: str) -> None:
    # complete_set_and_claim wakes waiters in its own statement, as complete_one does.
    with _listening(postgres_url) as (q, listen):
        ids = q.enqueue_many(range(4))
        now = time.time()
        q.backend.register_waiter(ids[1], now, now + 60)
        jobs = q.claim_many("w1", 2)
        done, more = q.complete_many_and_claim([(j, None) for j in jobs], "w1", 2)
        assert done == [True, True] and sorted(j.id for j in more) == ids[2:]
        assert [n.payload for n in listen.notifies(timeout=10, stop_after=1)] == [str(ids[1])]
        assert list(listen.notifies(timeout=0.2)) == []  # ids[0]: nobody waits, no NOTIFY


def test_the_wake_up_function_names_its_own_table_whatever_the_search_path(postgres_url: str) -> None:
    # jobq_notify_waited runs in every completion: it has no SET search_path (saved and restored
    # around each call, half its cost), so its names are qualified. A session whose search_path
    # finds another job_waiters first, or another pg_notify, still reads and calls jobq's.
    options = split_url(postgres_url)
    schema = sql.Identifier(options.schema)
    with jobq.Queue(postgres_url) as q, psycopg.connect(options.libpq_url, autocommit=True) as conn:
        job = q.enqueue("x")
        config = conn.execute(
            "SELECT p.proconfig FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
            " WHERE p.proname = 'jobq_notify_waited' AND n.nspname = %s",
            (options.schema,),
        ).fetchall()
        assert config == [(None,)]
        conn.execute("DROP SCHEMA IF EXISTS decoy CASCADE")
        conn.execute("CREATE SCHEMA decoy")
        try:
            conn.execute("CREATE TABLE decoy.job_waiters (job_id bigint)")
            conn.execute("INSERT INTO decoy.job_waiters VALUES (%s)", (job,))
            conn.execute(
                "CREATE FUNCTION decoy.pg_notify(text, text) RETURNS void LANGUAGE sql"
                " AS $$ INSERT INTO decoy.job_waiters VALUES (-1) $$"
            )
            conn.execute("SET search_path = decoy, pg_catalog")
            call = sql.SQL("SELECT {}.jobq_notify_waited('jobq_test', %s)").format(schema)
            assert conn.execute(call, (job,)).fetchone() == (0,)  # nobody waits in jobq's table
            now = time.time()
            q.backend.register_waiter(job, now, now + 60)
            assert conn.execute(call, (job,)).fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM decoy.job_waiters WHERE job_id = -1").fetchone() == (0,)
        finally:
            conn.execute("RESET search_path")
            conn.execute("DROP SCHEMA decoy CASCADE")
