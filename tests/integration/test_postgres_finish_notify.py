"""PostgreSQL sends a finish NOTIFY only for jobs someone waits for (``job_waiters``): every NOTIFY
takes the server's global notify-queue lock at commit, listened to or not (bench/notify_cost.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from faultproxy import proxied
from polling import wait_for
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


# -- the gate: the waiters' check only while anyone waits -----------------------------------------
# A finishing statement calls jobq_notify_waited (a plpgsql call for its fresh snapshot, ~35 us of
# a completion's server time) only while registrations made outnumber those gone (waiters.sql).
# The check is counted here by a wrapper of the same name that records each call, then runs the
# real one.


@contextlib.contextmanager
def _counted_checks(postgres_url: str) -> Iterator[tuple[jobq.Queue, psycopg.Connection, Callable[[], list[int]]]]:
    """A queue, a connection listening on its finish channel, and the jobs the waiters' check was
    called for so far (the wrapper is made before the queue's statements are first prepared)."""
    options = split_url(postgres_url)
    schema = sql.Identifier(options.schema)
    with _listening(postgres_url) as (q, listen):
        listen.execute(sql.SQL("CREATE TABLE {}.checked (job bigint)").format(schema))
        listen.execute(
            sql.SQL("ALTER FUNCTION {}.jobq_notify_waited(text, bigint) RENAME TO real_check").format(schema)
        )
        listen.execute(
            sql.SQL(
                "CREATE FUNCTION {s}.jobq_notify_waited(channel text, job bigint) RETURNS integer"
                " LANGUAGE plpgsql VOLATILE AS $$ BEGIN INSERT INTO {s}.checked VALUES (job);"
                " RETURN {s}.real_check(channel, job); END $$"
            ).format(s=schema)
        )

        def checked() -> list[int]:
            rows = listen.execute(sql.SQL("SELECT job FROM {}.checked ORDER BY job").format(schema)).fetchall()
            return [int(r[0]) for r in rows]

        yield q, listen, checked


def _claimed(q: jobq.Queue, n: int) -> list[jobq.Job]:
    jobs = q.claim_many("w1", n)
    assert len(jobs) == n
    return sorted(jobs, key=lambda j: j.id)


def test_a_finish_looks_for_waiters_only_while_someone_waits(postgres_url: str) -> None:
    with _counted_checks(postgres_url) as (q, listen, checked):
        q.enqueue_many(range(7))
        j = _claimed(q, 7)
        q.complete(j[0])  # no one has ever waited
        q.complete_many([(j[1], None), (j[2], None)])
        q.fail(j[3], "x", retry=False)
        assert checked() == []
        registration = q.backend.register_waiter(j[5].id, time.time(), time.time() + 60)
        q.complete(j[4])  # someone waits (for another job): looked for, not notified
        q.complete(j[5])
        assert checked() == [j[4].id, j[5].id]
        assert [n.payload for n in listen.notifies(timeout=10, stop_after=1)] == [str(j[5].id)]
        q.backend.unregister_waiter(registration)
        q.complete(j[6])  # no one waits any more
        assert checked() == [j[4].id, j[5].id]


def test_a_registration_made_while_a_finish_waits_for_the_row_is_seen(postgres_url: str) -> None:
    """The case the fresh snapshot is for: the completion's statement began (and took its
    snapshot) before the waiter registered, and waited for the row's lock meanwhile; the waiter's
    read got past that lock holder and saw the job running. The gate must see the registration."""
    options = split_url(postgres_url)
    with _counted_checks(postgres_url) as (q, listen, _checked), jobq.Queue(postgres_url) as waiter:
        job_id = q.enqueue({"n": 1})
        job = q.claim("w1")
        assert job is not None and job.id == job_id
        with psycopg.connect(options.libpq_url) as holder:
            # A lock a waiter's FOR KEY SHARE read passes, a finish's FOR UPDATE waits for.
            holder.execute(
                sql.SQL("SELECT id FROM {}.jobs WHERE id = %s FOR NO KEY UPDATE").format(
                    sql.Identifier(options.schema)
                ),
                (job_id,),
            )
            finishing = threading.Thread(target=q.complete, args=(job,))
            finishing.start()
            try:
                wait_for(
                    lambda: (
                        holder.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND datname = current_database()"
                        ).fetchone()
                        == (1,)
                    ),
                    what="the completion to wait for the row",
                )
                waiter.backend.register_waiter(job_id, time.time(), time.time() + 60)
                found = waiter.backend.get_after_writers(job_id)
                assert found is not None and found.status == jobq.JobStatus.PROCESSING
            finally:
                holder.rollback()
                finishing.join(timeout=30)
        assert not finishing.is_alive()
        assert [n.payload for n in listen.notifies(timeout=10, stop_after=1)] == [str(job_id)]


def test_a_killed_waiters_registration_keeps_the_check_on_until_it_expires_and_is_settled(
    postgres_url: str,
) -> None:
    """kill -9 of a process inside Queue.wait: its registration stays, so every finish looks for
    waiters (never wrongly skips) until the rescuer's settle finds it expired (made so by hand
    here: it lasts WAITER_ROW_SECONDS)."""
    options = split_url(postgres_url)
    with _counted_checks(postgres_url) as (q, listen, checked):
        ids = q.enqueue_many(range(4))
        waited = ids[3]
        child = subprocess.Popen(
            [sys.executable, "-c", f"import jobq; jobq.Queue({postgres_url!r}).wait({waited})"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            table = sql.SQL("{}.job_waiters").format(sql.Identifier(options.schema))
            count = sql.SQL("SELECT count(*) FROM {}").format(table)
            wait_for(lambda: listen.execute(count).fetchone() == (1,), what="the waiter's registration")
        finally:
            child.kill()
            child.wait(timeout=30)
        j = _claimed(q, 3)
        q.complete(j[0])
        assert checked() == [j[0].id]
        assert q.settle_waiters() is False  # the row has not expired: it may be a live waiter's
        q.complete(j[1])
        assert checked() == [j[0].id, j[1].id]
        listen.execute(sql.SQL("UPDATE {} SET expires_at = %s").format(table), (time.time() - 1,))
        assert q.settle_waiters() is True
        assert listen.execute(count).fetchone() == (0,)
        q.complete(j[2])
        assert checked() == [j[0].id, j[1].id]
        assert q.settle_waiters() is False  # nothing more to settle
        # The next registration opens the gate again, and its job is told.
        registration = q.backend.register_waiter(waited, time.time(), time.time() + 60)
        last = q.claim("w1")
        assert last is not None and last.id == waited
        q.complete(last)
        assert checked() == [j[0].id, j[1].id, waited]
        assert [n.payload for n in listen.notifies(timeout=10, stop_after=1)] == [str(waited)]
        q.backend.unregister_waiter(registration)


def test_a_settle_leaves_the_gate_open_while_a_registration_has_not_expired(postgres_url: str) -> None:
    with _counted_checks(postgres_url) as (q, _listen, checked):
        ids = q.enqueue_many(range(2))
        now = time.time()
        live = q.backend.register_waiter(ids[0], now, now + 60)
        q.backend.register_waiter(ids[1], now, now - 1)  # expired: its waiter crashed long ago
        q.backend.unregister_waiter(live)
        assert q.settle_waiters() is True  # the expired one deleted, none left
        j = _claimed(q, 2)
        q.complete(j[0])
        assert checked() == []
        again = q.backend.register_waiter(ids[1], now, now + 60)
        assert q.settle_waiters() is False
        q.complete(j[1])
        assert checked() == [j[1].id]
        q.backend.unregister_waiter(again)


def test_the_rescuers_first_tick_settles_a_crashed_waiters_expired_registration(postgres_url: str) -> None:
    from jobq.worker.rescuer import Rescuer

    with _counted_checks(postgres_url) as (q, _listen, checked):
        ids = q.enqueue_many(range(2))
        q.backend.register_waiter(ids[0], time.time(), time.time() - 1)  # never unregistered
        j = _claimed(q, 2)
        q.complete(j[0])
        assert checked() == [j[0].id]
        Rescuer(q, "rescuer-1", 1.0).tick()
        q.complete(j[1])
        assert checked() == [j[0].id]


def test_a_settle_whose_client_reads_no_reply_holds_no_lock(postgres_url: str) -> None:
    """The settle's lock on job_waiters (EXCLUSIVE: no registration in flight across it) is
    taken and let go by the server alone: LOCK, the settle and COMMIT go in one round trip. Sent
    as two, a client that stopped reading after the LOCK (a rescuer frozen there: SIGSTOP, a
    stall) kept the lock, and every Queue.wait's registration waited, until the server ended the
    session. Here the proxy holds back every reply from the LOCK on."""
    options = split_url(postgres_url)
    table = sql.SQL("{}.job_waiters").format(sql.Identifier(options.schema))
    with jobq.Queue(postgres_url) as direct, proxied(postgres_url) as (url, proxy), jobq.Queue(url) as q:
        (job,) = direct.enqueue_many([0])
        now = time.time()
        direct.backend.register_waiter(job, now, now - 1)  # a crashed waiter's: expired, to settle
        proxy.hold_replies_after(b"LOCK TABLE")
        settled: list[bool] = []
        settling = threading.Thread(target=lambda: settled.append(q.settle_waiters()), daemon=True)
        settling.start()
        try:
            assert proxy.holding.wait(30), "the settle's LOCK was never sent"
            with psycopg.connect(options.libpq_url, autocommit=True) as conn:
                rows = sql.SQL("SELECT count(*) FROM {}").format(table)
                wait_for(lambda: conn.execute(rows).fetchone() == (0,), 30, "the settle to commit with no reply read")
                conn.execute("SET lock_timeout = '10s'")  # the old way: the registration waited here
                conn.execute(
                    sql.SQL("INSERT INTO {} (job_id, expires_at) VALUES (%s, %s)").format(table), (job, now + 60)
                )
            assert settling.is_alive() and settled == []  # its replies are still held back
        finally:
            proxy.release_replies()
            settling.join(30)
        assert settled == [True]
