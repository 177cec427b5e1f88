"""The contract suite (``jobq.testing.contract``) on both backends, and the tests of what each
backend does beyond it (its schema history, its file)."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
from typing import Any

import pytest
from handwritten import write_past_controls_checks

import jobq
from jobq.testing.contract import *  # noqa: F403 - every contract test, collected here
from jobq.testing.contract.common import P, R
from jobq.testing.contract.workers import DEAD_PID, _worker
from jobq.worker.rescuer import Rescuer


def test_create_false_refuses_a_missing_sqlite_file(tmp_path) -> None:
    with pytest.raises(jobq.StorageError, match="no database at"):
        jobq.Queue(f"sqlite:///{tmp_path}/absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def _raw(url: str, sql: str) -> list[Any]:
    """Run SQL as another program would, not through jobq (here: what an older jobq wrote)."""
    if url.startswith("sqlite:///"):
        import apsw

        conn = apsw.Connection(url.removeprefix("sqlite:///"))
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    from pg import raw_connect

    with raw_connect(url, autocommit=True) as pg:
        cur = pg.execute(sql)
        return cur.fetchall() if cur.description else []


def test_a_schema_1_database_migrates_and_its_old_workers_wait_for_their_lease(
    backend_url: str, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite = backend_url.startswith("sqlite:///")
    module = importlib.import_module("jobq.backends.sqlite" if sqlite else "jobq.backends.postgres")
    current = module.MIGRATIONS
    assert len(current) == module.SCHEMA_VERSION
    settings = jobq.Settings(database_url=backend_url)
    monkeypatch.setattr(module, "MIGRATIONS", current[:1])  # the jobq that wrote schema 1
    with jobq.Queue(settings=settings, clock=clock) as old:
        # Inserted as the old jobq did (today's insert names columns schema 1 lacks), with a key.
        _raw(
            backend_url,
            "INSERT INTO jobs (payload, run_at, created_at, updated_at, idempotency_key) "
            f"VALUES ('\"held by a worker of the old jobq\"', {clock.now}, {clock.now}, {clock.now}, 'old-key')",
        )
        # Claimed as the old jobq's claim did (today's claim reads queue_controls and columns schema 1 lacks).
        (job_id,) = _raw(backend_url, "SELECT id FROM jobs")[0]
        claimed_at = clock.now
        _raw(
            backend_url,
            "UPDATE jobs SET status = 'PROCESSING', attempts = 1, rev = rev + 1, lease_owner = 'old-worker', "
            f"lease_token = 'old-token', lease_expires_at = {clock.now + 300}, started_at = {clock.now}, "
            f"updated_at = {clock.now} WHERE id = {job_id}",
        )
        assert old.counts()["PROCESSING"] == 1  # (get() reads columns schema 1 lacks)
    # The old jobq stored a `claimed` event per claim (before schema 8 on SQLite, 10 on PostgreSQL).
    _raw(
        backend_url,
        "INSERT INTO job_events (job_id, at, kind, actor, attempt) "
        f"VALUES ({job_id}, {claimed_at}, 'claimed', 'old-worker', 1)",
    )
    # Its worker row, as the old jobq wrote it: this host's name and a pid that is gone here.
    _raw(
        backend_url,
        "INSERT INTO workers (id, name, host, pid, queues, started_at, last_seen_at) "
        f"VALUES ('old-worker', 'consumer1', '{socket.gethostname()}', {DEAD_PID}, '[\"default\"]', "
        f"{clock.now}, {clock.now})",
    )
    monkeypatch.setattr(module, "MIGRATIONS", current)

    with jobq.Queue(settings=settings, clock=clock) as q:
        assert _raw(backend_url, "SELECT max(version) FROM jobq_schema") == [(module.SCHEMA_VERSION,)]
        assert q.enqueue("again", key="old-key") == job_id  # an old key is held as before ('all')
        (old_worker,) = q.workers()
        assert (old_worker.id, old_worker.pid, old_worker.process_table) == ("old-worker", DEAD_PID, None)
        assert old_worker.clock_skew is None  # nothing measured: no CLOCK shown, no alert
        rescuer = Rescuer(q, "new-worker", 1.0)
        assert rescuer.gone_workers() == []  # unknown identity: its pid is never checked
        rescuer.tick()
        assert q.get(job_id).status == R and q.workers()[0].stopped_at is None
        clock.advance(301)  # only the lease decides
        rescuer.tick()
        assert q.get(job_id).status == P and "lease expired" in (q.get(job_id).last_error or "")
        # History shows the stored claim once, though the rescue carries it too.
        claims = [(e.actor, e.attempt, e.at) for e in q.events(job_id) if e.kind == "claimed"]
        assert claims == [("old-worker", 1, claimed_at)]
        q.backend.register_worker(_worker("new-worker", "h", os.getpid(), "table", clock.now))
        assert {w.id: w.process_table for w in q.workers()} == {"old-worker": None, "new-worker": "table"}
    if sqlite and shutil.which("sqlite3"):
        # The seed's demo uses Debian's sqlite3 shell (3.40): it must still read the migrated file.
        shell = subprocess.run(
            [
                "sqlite3",
                backend_url.removeprefix("sqlite:///"),
                "PRAGMA integrity_check; SELECT id, coalesce(process_table, '-') FROM workers ORDER BY id;",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shell.stdout.split() == ["ok", "new-worker|table", "old-worker|-"]


def test_hand_edits_of_status_keep_an_active_key_unique(backend_url: str, clock) -> None:
    with jobq.Queue(settings=jobq.Settings(database_url=backend_url), clock=clock) as q:
        old = q.enqueue("a", key="k", key_scope="active")
        _raw(backend_url, f"UPDATE jobs SET status = 'COMPLETED' WHERE id = {old}")  # releases the key
        new = q.enqueue("b", key="k", key_scope="active")
        assert new != old
        # Back to PENDING by hand while the newer job holds the key: the unique index refuses it.
        with pytest.raises(Exception, match=r"(?i)unique"):
            _raw(backend_url, f"UPDATE jobs SET status = 'PENDING' WHERE id = {old}")
        assert q.get(old).status == jobq.JobStatus.COMPLETED
        _raw(backend_url, f"UPDATE jobs SET status = 'CANCELLED' WHERE id = {new}")
        assert q.enqueue("c", key="k", key_scope="active") not in (old, new)


def test_a_control_row_that_cannot_be_enforced_holds_its_queue_back(backend_url: str, clock) -> None:
    """A ``queue_controls`` row written by hand that got past the CHECKs before the write-time
    checks (SQLite: text in a number column; PostgreSQL: a NaN window) and is refused now: the
    claim takes none of the queue's jobs (they stay PENDING and due, counted as waiting on a
    limit, and idle workers are not told a time), the other queues go on, and setting the limits
    again lets it go."""
    bad = (
        "UPDATE queue_controls SET concurrency = 'lots'"
        if backend_url.startswith("sqlite:///")
        else "UPDATE queue_controls SET rate_count = 5, rate_window = 'NaN'"
    )
    with jobq.Queue(settings=jobq.Settings(database_url=backend_url), clock=clock) as q:
        q.set_limits("lim", concurrency=2)
        held = q.enqueue({"q": "lim"}, queue="lim")
        free = q.enqueue({"q": "free"}, queue="free")
        with pytest.raises(Exception, match=r"(?i)queue_controls"):  # refused when written today
            _raw(backend_url, bad)
        write_past_controls_checks(backend_url, bad)  # as an older schema let it in
        assert [j.id for j in q.claim_many("w1", 5, queue=["lim", "free"])] == [free]
        assert q.get(held).status == jobq.JobStatus.PENDING
        assert q.stats().waiting_on_limit_by_queue == {"lim": 1}
        assert q.next_due_at("lim") is None
        q.clear_limits("lim")
        job = q.claim("w1", queue="lim")
        assert job is not None and job.id == held
