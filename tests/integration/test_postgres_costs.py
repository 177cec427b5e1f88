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
