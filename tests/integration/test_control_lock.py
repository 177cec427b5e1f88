"""A queue's control row locked for seconds (PostgreSQL): an operator's transaction, a stuck
claim or a hand-run ``SELECT ... FOR UPDATE`` holds the ``queue_controls`` row of a limited queue.
Claims of that queue wait for the lock (they must: the count of what runs is only right under it);
claims of other queues, limited or not, go on; once the lock goes the waiting claim gets its job."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from polling import wait_for
from psycopg import sql

import jobq
from jobq.backends.postgres.url import split_url

pytestmark = pytest.mark.postgres


def _waiting_on_locks(admin: psycopg.Connection) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


def _lock_control_row(holder: psycopg.Connection, schema: str, queue: str) -> None:
    """``queue``'s control row locked (FOR UPDATE) by ``holder``'s open transaction."""
    statement = sql.SQL("SELECT 1 FROM {}.queue_controls WHERE queue = %s FOR UPDATE").format(sql.Identifier(schema))
    holder.execute(statement, (queue,))


def test_a_held_control_row_stalls_only_its_own_queue(postgres_url: str) -> None:
    options = split_url(postgres_url)
    with jobq.Queue(postgres_url) as q, psycopg.connect(options.libpq_url) as holder:
        for name in ("locked", "other"):
            q.set_limits(name, concurrency=2)
        ids = {name: q.enqueue({"q": name}, queue=name) for name in ("locked", "other", "free")}
        _lock_control_row(holder, options.schema, "locked")  # held until the rollback below
        got: list[jobq.Job | None] = []
        claimer = threading.Thread(target=lambda: got.append(q.claim("w-locked", queue="locked")), daemon=True)
        claimer.start()
        try:
            with psycopg.connect(options.libpq_url, autocommit=True) as admin:
                wait_for(lambda: _waiting_on_locks(admin) == 1, 30, "the claim to wait on the row lock")
                # Meanwhile the other queues' claims do not wait (a limited one locks its own row).
                for name in ("other", "free"):
                    job = q.claim(f"w-{name}", queue=name)
                    assert job is not None and job.id == ids[name]
                    q.complete(job)
                assert claimer.is_alive() and not got
                assert _waiting_on_locks(admin) == 1
        finally:
            holder.rollback()  # the lock goes
            claimer.join(30)
        assert not claimer.is_alive()
        assert len(got) == 1 and got[0] is not None and got[0].id == ids["locked"]
        q.complete(got[0])
        assert q.counts()["COMPLETED"] == 3


def test_a_claim_that_waited_for_a_held_control_row_grants_a_full_lease(postgres_url: str) -> None:
    """A claim of a queue limited by its concurrency alone locks the control row and claims in one
    pipeline (claim_concurrency_locked), with the clock read before sending: a lease must still
    run from when the lock was granted, or a wait past the lease hands out an expired job."""
    options = split_url(postgres_url)
    with jobq.Queue(postgres_url) as q, psycopg.connect(options.libpq_url) as holder:
        q.set_limits("lim", concurrency=2)
        job_id = q.enqueue({}, queue="lim")
        _lock_control_row(holder, options.schema, "lim")
        got: list[jobq.Job | None] = []
        claimer = threading.Thread(target=lambda: got.append(q.claim("w", queue="lim", lease=1.0)), daemon=True)
        claimer.start()
        try:
            with psycopg.connect(options.libpq_url, autocommit=True) as admin:
                wait_for(lambda: _waiting_on_locks(admin) == 1, 30, "the claim to wait on the row lock")
            time.sleep(2.0)  # the fault: the row stays locked for twice the lease
        finally:
            holder.rollback()
            claimer.join(30)
        granted_at = time.time()
        assert len(got) == 1 and got[0] is not None and got[0].id == job_id
        assert (got[0].lease_expires_at or 0) > granted_at - 0.5, "the lease was already expired when handed out"
