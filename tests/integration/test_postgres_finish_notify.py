"""PostgreSQL sends a finish NOTIFY only for jobs someone waits for (``job_waiters``): every NOTIFY
takes the server's global notify-queue lock at commit, listened to or not (bench/notify_cost.py)."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg import sql

import jobq
from jobq.backends.postgres.url import split_url

pytestmark = pytest.mark.postgres


def test_a_finish_notifies_only_the_jobs_someone_waits_for(postgres_url: str) -> None:
    options = split_url(postgres_url)
    with jobq.Queue(postgres_url) as q, psycopg.connect(options.libpq_url, autocommit=True) as listen:
        listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(options.done_channel)))
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
