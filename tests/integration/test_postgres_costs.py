"""What PostgreSQL's hot path writes, counted (issue 13): WAL bytes per claimed+completed job
through the per-job API. Timings on a shared machine are noise; the WAL a statement writes is not.

Measured on PostgreSQL 15: 2,229 bytes a job while claims and completions wrote event rows (each
with two index entries) and every status change added an entry to ``jobs_status``; 1,313 since
schema 9 (no event rows on the normal path, ``jobs_status`` for FAILED/CANCELLED only, one index
of the live rows).
"""

from __future__ import annotations

import pytest
from pg import raw_connect

import jobq

pytestmark = pytest.mark.postgres

JOBS = 200
PG_WAL_BYTES_PER_JOB_MAX = 1_600


def test_per_job_claim_and_complete_write_a_bounded_amount_of_wal(postgres_url: str) -> None:
    with jobq.Queue(postgres_url) as q, raw_connect(postgres_url, autocommit=True) as conn:
        q.enqueue_many([{"n": n, "pad": "x" * 60} for n in range(JOBS)])
        conn.execute("CHECKPOINT")  # both sides of the count start with the same full-page writes
        start = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        done = 0
        while (job := q.claim("counter")) is not None:
            q.complete(job)
            done += 1
        end = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        written = float(conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end, start)).fetchone()[0])
    assert done == JOBS
    assert written / JOBS <= PG_WAL_BYTES_PER_JOB_MAX, f"{written / JOBS:.0f} WAL bytes per job"


def test_the_jobs_table_carries_no_check_constraint(postgres_url: str) -> None:
    """A table's CHECK is made ready again by every statement that writes one of its rows (the
    executor reads the stored expression and plans it per statement): with the checks of status and
    key_scope on ``jobs``, ~25 us of each claim and of each completion on the server, a sixth of
    each (``python -m bench.pg_calls --anatomy``). Schema 18 checks both in domains, planned once a
    session. A CHECK added to ``jobs`` again fails here; ``test_postgres_schemas`` tests that the
    domains still refuse what the checks refused."""
    with jobq.Queue(postgres_url), raw_connect(postgres_url, autocommit=True) as conn:
        checks = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'jobs'::regclass AND contype = 'c'"
        ).fetchall()
        domains = conn.execute(
            "SELECT a.attname, t.typname FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid"
            " WHERE a.attrelid = 'jobs'::regclass AND t.typtype = 'd' ORDER BY a.attname"
        ).fetchall()
    assert checks == []
    assert domains == [("key_scope", "jobq_key_scope"), ("status", "jobq_status")]
