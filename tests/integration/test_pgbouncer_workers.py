"""Real workers behind PgBouncer in transaction pooling mode: with a direct ``listen_url`` they
sleep on LISTEN there; without one they poll, and no LISTEN reaches the server through the pooler.
Either way every job completes exactly once."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from pg import raw_connect
from pgbouncer import Bouncer, through_pgbouncer
from polling import wait_for
from processes import Procs, effects

import jobq

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

JOBS = 200


def _listening_sessions(postgres_url: str) -> int:
    with raw_connect(postgres_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = 'LISTEN \"jobq_wakeup_jobq\"' AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("listen", [True, False], ids=["listen_url", "polling"])
def test_workers_behind_a_transaction_pooler_complete_every_job_once(
    pgbouncer_server: Bouncer, postgres_url: str, procs: Procs, tmp_path: Path, listen: bool
) -> None:
    url = through_pgbouncer(pgbouncer_server, postgres_url, listen=listen)
    with jobq.Queue(url) as q:
        q.enqueue("open the schema before the workers race to")
        workers = [procs.start("worker", "--db", url, "--batch", "5", "--concurrency", "2") for _ in range(3)]
        wait_for(lambda: len(q.workers()) == 3, 120, "three workers to register")
        if listen:  # each idle worker sleeps on a direct session of its own
            wait_for(lambda: _listening_sessions(postgres_url) == 3, 60, "three direct LISTEN sessions")
        q.enqueue_many([{"n": n} for n in range(JOBS)])
        wait_for(lambda: q.counts()["COMPLETED"] == JOBS + 1, 180, f"{JOBS + 1} completed jobs")
        if not listen:
            assert _listening_sessions(postgres_url) == 0
        counts = q.counts()
    for w in workers:
        w.terminate()
    for w in workers:
        assert w.wait(30) == 0, procs.logs()[-3000:]
    assert counts["COMPLETED"] == JOBS + 1 and counts["PROCESSING"] == counts["FAILED"] == 0
    done = effects(tmp_path)
    assert len(done) == JOBS + 1 and max(collections.Counter(done).values()) == 1
    logs = procs.logs().lower()
    assert "prepared statement" not in logs and "traceback" not in logs, logs[-3000:]
