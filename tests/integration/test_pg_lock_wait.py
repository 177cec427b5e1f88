"""A PostgreSQL write behind a row lock that another session holds says, once, who holds it.

An application's connection left inside a transaction (``SELECT ... FOR UPDATE`` in psql, a
process frozen mid-transaction) held up `jobq cancel 5` for as long as it stayed open, without a
word (19 s measured, and without end if nobody ends it). SQLite's writes name their lock's holder
from /proc/locks; on PostgreSQL the server knows whom a backend waits for (lockwatch.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pg import raw_connect
from polling import wait_for

import jobq
import jobq.backends.postgres.lockwatch as lockwatch
from jobq.backends.ops.core import Exec
from jobq.backends.postgres.lockwatch import describe_holder

pytestmark = pytest.mark.postgres


@pytest.fixture
def held_row(postgres_url: str) -> Iterator[tuple[int, Any]]:
    """Job 1's row locked by another session, as psql would (``application_name`` "holder"),
    idle inside its transaction; rolled back at the end, whatever the test did."""
    with jobq.Queue(postgres_url) as q:
        job_id = q.enqueue({"n": 1})
    holder = raw_connect(postgres_url, application_name="holder")
    try:
        holder.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
        yield job_id, holder
    finally:
        holder.rollback()
        holder.close()


def _waiting_for_a_lock(url: str) -> bool:
    """Whether a session of the database waits for a lock (asked on a connection of its own:
    pg_stat_activity stays as it was read for the rest of a transaction)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    with raw_connect(url, autocommit=True) as conn:
        return bool(conn.execute(query).fetchone()[0])


def _counted_checks(q: jobq.Queue) -> list[float]:
    """The times of the lock watch's looks at the transactions in flight, from now on."""
    q.backend.start_lock_watch()
    watch = q.backend._watch
    assert watch is not None
    checks: list[float] = []
    check = watch.check

    def counted(now: float) -> None:
        check(now)
        checks.append(now)

    watch.check = counted  # type: ignore[method-assign]
    return checks


def test_a_write_behind_a_held_row_lock_names_the_holder_once_and_then_succeeds(
    postgres_url: str, held_row: tuple[int, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(lockwatch, "LOCK_WAIT_NOTICE_SECONDS", 0.3)
    monkeypatch.setattr(lockwatch, "CHECK_SECONDS", 0.1)
    job_id, holder = held_row
    with jobq.Queue(postgres_url) as q:
        checks = _counted_checks(q)
        done: list[jobq.ActionResult] = []
        writer = threading.Thread(target=lambda: done.append(q.cancel(job_id)))
        with caplog.at_level(logging.WARNING, logger="jobq.postgres"):
            writer.start()
            wait_for(lambda: caplog.records, 30, "the waiting write's notice")
            told_at = len(checks)
            wait_for(lambda: len(checks) >= told_at + 3, 30, "three more looks at the waiting write")
            assert writer.is_alive() and len(caplog.records) == 1  # still waiting, told once
            holder.rollback()
            writer.join(30)
        assert not writer.is_alive() and [r.ok for r in done] == [True]
        assert q.get(job_id).status == jobq.JobStatus.CANCELLED
    text = caplog.records[0].getMessage()
    pid = holder.info.backend_pid
    assert text.startswith("a transaction has waited ")
    assert f"held by PostgreSQL backend pid {pid} (application 'holder', user " in text
    assert ", idle in transaction for " in text
    assert "(its last statement: SELECT id FROM jobs WHERE id = $1 FOR UPDATE)" in text
    assert text.endswith(f"or SELECT pg_terminate_backend({pid}); it waits as long as that is held")


def test_a_queue_closed_and_reopened_while_a_write_waits_loses_no_track_of_it(
    postgres_url: str, held_row: tuple[int, Any]
) -> None:
    """close() ends the watch's thread; the next call opens a new pool and a new watch, while a
    write of the old pool still waits: its entry stays until it ends (clearing it made that
    write's end raise KeyError)."""
    job_id, holder = held_row
    with jobq.Queue(postgres_url) as q:
        done: list[jobq.ActionResult] = []
        writer = threading.Thread(target=lambda: done.append(q.cancel(job_id)))
        # The write on a connection of the pool: close() waits for a write on the backend's
        # sticky connection (PostgresBackend._take), and this test is of one that goes on.
        assert q.counts()["PENDING"] == 1  # the pool made (a first one makes a new sticky lock)
        with q.backend._sticky_lock:
            writer.start()
            wait_for(lambda: _waiting_for_a_lock(postgres_url), 30, "the write to wait for the row's lock")
        q.close()
        assert q.counts()["PENDING"] == 1  # opened anew
        holder.rollback()
        writer.join(30)
        assert not writer.is_alive() and [r.ok for r in done] == [True]
        assert not q.backend.in_flight


def test_a_slow_transaction_that_waits_for_no_lock_says_nothing(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch asks the server: a transaction that is merely long (here the server sleeps in
    it) holds no lock of another session's and is not reported."""
    monkeypatch.setattr(lockwatch, "LOCK_WAIT_NOTICE_SECONDS", 0.2)
    monkeypatch.setattr(lockwatch, "CHECK_SECONDS", 0.05)
    with jobq.Queue(postgres_url) as q, caplog.at_level(logging.DEBUG, logger="jobq.postgres"):
        backend = q.backend
        backend.start_lock_watch()
        watch = backend._watch
        assert watch is not None
        asked: list[float] = []
        connect = watch._connect

        def connect_counted() -> Any:
            asked.append(time.monotonic())
            return connect()

        watch._connect = connect_counted

        def slow() -> Iterator[Exec]:
            yield Exec("SELECT pg_sleep(1.0)")

        backend._run(slow, write=True)
        assert len(asked) >= 2  # asked about, again after each span, while it ran
        assert not backend.in_flight
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_cli_prints_one_warning_line_naming_the_holder(postgres_url: str, held_row: tuple[int, Any]) -> None:
    """`jobq cancel` behind the held lock: one `jobq: warning:` line on stderr while it waits
    (at the default 2 s), then the cancel goes through once the holder ends its transaction."""
    job_id, holder = held_row
    env = {**os.environ, "JOBQ_DATABASE_URL": postgres_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobq.cli", "cancel", str(job_id)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            assert sel.select(timeout=60), "no warning within 60 s"
            line = proc.stderr.readline()
        assert line.startswith("jobq: warning: a transaction has waited ")
        assert f"PostgreSQL backend pid {holder.info.backend_pid} (application 'holder'" in line
        assert proc.poll() is None  # still waiting
        holder.rollback()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "cancelled" in out
    assert err == ""  # once
    with jobq.Queue(postgres_url) as q:
        assert q.get(job_id).status == jobq.JobStatus.CANCELLED


def _with_option(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option}"


def test_a_write_past_the_urls_lock_timeout_gives_up_naming_the_holder_and_changes_nothing(
    postgres_url: str, held_row: tuple[int, Any]
) -> None:
    job_id, holder = held_row
    pid = holder.info.backend_pid
    with jobq.Queue(_with_option(postgres_url, "lock_timeout=300")) as q:
        with pytest.raises(jobq.StorageError) as raised:
            q.cancel(job_id)
        text = str(raised.value)
        assert "gave up after 0.3 s waiting for a lock held, most likely, by " in text
        assert f"PostgreSQL backend pid {pid} (application 'holder'" in text
        assert "idle in transaction for " in text and f"pg_terminate_backend({pid})" in text
        assert text.endswith("Nothing was changed; try again when that transaction ends")
        assert "\n" not in text
        holder.rollback()
        assert q.get(job_id).status == jobq.JobStatus.PENDING
        assert q.cancel(job_id).ok  # the lock gone, the same call goes through


def test_a_lock_timeout_set_in_pgoptions_gives_up_the_same_way_without_a_number_it_cannot_know(
    postgres_url: str, held_row: tuple[int, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, holder = held_row
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=300")
    with jobq.Queue(postgres_url) as q, pytest.raises(jobq.StorageError) as raised:
        q.cancel(job_id)
    text = str(raised.value)
    assert "gave up at the session's lock_timeout waiting for a lock held, most likely, by " in text
    assert f"PostgreSQL backend pid {holder.info.backend_pid} (application 'holder'" in text


def test_an_async_write_past_the_lock_timeout_gives_up_the_same_way(
    postgres_url: str, held_row: tuple[int, Any]
) -> None:
    job_id, holder = held_row

    async def main() -> str:
        async with jobq.AsyncQueue(_with_option(postgres_url, "lock_timeout=300")) as q:
            with pytest.raises(jobq.StorageError) as raised:
                await q.cancel(job_id)
            return str(raised.value)

    text = asyncio.run(main())
    assert f"most likely, by PostgreSQL backend pid {holder.info.backend_pid} (application 'holder'" in text


def test_an_apps_action_behind_a_held_row_gives_up_and_says_who_holds_it(
    postgres_url: str, held_row: tuple[int, Any]
) -> None:
    """The apps open PostgreSQL with lock_timeout=2000 (health.app_url): the manager's cancel
    behind a row left locked in psql froze the page for as long as it stayed locked."""
    from jobq.web import health

    job_id, holder = held_row
    q = health.WatchedQueue(postgres_url)
    try:
        with pytest.raises(jobq.StorageError, match=rf"gave up after 2 s .* backend pid {holder.info.backend_pid} "):
            q.cancel(job_id)
        assert q.get(job_id).status == jobq.JobStatus.PENDING
    finally:
        q.close()


def test_the_queue_names_the_session_that_holds_up_its_writes_and_the_ops_app_raises_it(
    postgres_url: str, held_row: tuple[int, Any]
) -> None:
    """A worker's completion behind a row left locked in psql: its lease runs out, the ops app
    said "PROCESSING with an expired lease" and nothing of why. ``Queue.blockers`` names the
    session that has kept a write waiting; the ops app raises it first."""
    from jobq.web import ops_model

    job_id, holder = held_row
    with jobq.Queue(postgres_url) as q:
        assert q.blockers() == []  # the lock is held, but nobody waits for it
        writer = threading.Thread(target=lambda: q.cancel(job_id))
        writer.start()
        try:
            wait_for(lambda: q.blockers(), 30, "the write, waiting 2 s, to be seen")
            (text,) = q.blockers()
            assert text.startswith(f"PostgreSQL backend pid {holder.info.backend_pid} (application 'holder'")
            assert not q.single_host  # the ops page passes them as lock_blockers (web/ops.py)
            stats = q.stats()
            alerts = ops_model.compute_alerts(stats, [], q.wall_time(), lock_blockers=q.blockers())
            assert alerts[0].level == "error" and alerts[0].message == f"Writes wait for a lock held by {text}."
            # `jobq stats` says it too: the line why jobs stand still, and the JSON's list.
            env = {**os.environ, "JOBQ_DATABASE_URL": postgres_url}
            stats_cli = [sys.executable, "-m", "jobq.cli", "stats"]
            shown = subprocess.run(stats_cli, env=env, capture_output=True, text=True, timeout=60)
            pid = holder.info.backend_pid
            line = shown.stdout.splitlines()[-1]  # the seconds it has been idle move on: not compared
            assert shown.returncode == 0 and line.startswith(f"writes held up by: PostgreSQL backend pid {pid} (")
            assert line.endswith(f"or SELECT pg_terminate_backend({pid})")
            as_json = subprocess.run([*stats_cli, "--json"], env=env, capture_output=True, text=True, timeout=60)
            (listed,) = json.loads(as_json.stdout)["blockers"]
            assert listed.startswith(f"PostgreSQL backend pid {pid} (application 'holder'")
        finally:
            holder.rollback()
            writer.join(30)
        assert q.blockers() == [] and q.get(job_id).status == jobq.JobStatus.CANCELLED


def test_behind_a_transaction_pooler_no_watch_asks_about_a_pid_the_server_never_gave(
    postgres_url: str, request: pytest.FixtureRequest
) -> None:
    """PgBouncer hands each client a backend pid of its own making: asked about it, the server
    could name the blockers of some other session. Behind ``pooler=transaction`` no watch runs;
    ``Queue.blockers`` (the server's own view) still does."""
    from pgbouncer import through_pgbouncer

    url = through_pgbouncer(request.getfixturevalue("pgbouncer_server"), postgres_url, listen=False)
    with jobq.Queue(url) as q:
        q.enqueue({"n": 1})
        assert q.counts()["PENDING"] == 1
        assert q.backend._watch is None and not q.backend.in_flight
        assert q.blockers() == []


def test_a_holder_described_without_the_rights_to_see_its_session() -> None:
    """A role without pg_read_all_stats sees another role's session without its state, user or
    statement: the text names the pid alone, and no advice it cannot back."""
    assert describe_holder((77, None, None, None, None, None, "<insufficient privilege>")) == (
        "PostgreSQL backend pid 77"
    )
    active = describe_holder((78, "active", "ann", "etl", "10.0.0.5", 12.4, "UPDATE jobq.jobs SET x = 1"))
    assert active == (
        "PostgreSQL backend pid 78 (application 'etl', user ann, from 10.0.0.5), active for 12 s "
        "(its last statement: UPDATE jobq.jobs SET x = 1)"
    )
