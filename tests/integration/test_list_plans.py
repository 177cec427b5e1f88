"""A job list of statuses other than COMPLETED reads the partial indexes of those statuses, never
the table (which holds every finished job), on both backends: the manager's first list (PENDING,
PROCESSING, FAILED) counted every stored job at each refresh, 0.11 s on SQLite and 0.2 s on
PostgreSQL at 1,000,000 stored jobs (11 and 32 ms since). Read from the plans of the very
statements ``Queue.list_page`` sends, with their values."""

from __future__ import annotations

from typing import Any

import pytest
from pg import raw_connect

import jobq
from jobq.backends import ops

S = jobq.JobStatus


def _plans(q: jobq.Queue, url: str, where: jobq.JobFilter) -> list[str]:
    """The plan of each read ``q.list_page(where)`` sends (its count, and its page)."""
    if url.startswith("sqlite"):
        conn = q.backend._connect()  # type: ignore[attr-defined]
        sent: list[tuple[str, Any]] = []
        conn.exec_trace = lambda _c, sql, bindings: sent.append((sql, bindings)) is None
        q.list_page(where, jobq.Page(limit=25))
        conn.exec_trace = None
        # The bound values decide whether a partial index applies: the plans are read with them.
        reads = [(sql, b) for sql, b in sent if sql.lstrip().upper().startswith("SELECT")]
        return [" ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, b)) for sql, b in reads]
    d = q.backend.dialect  # type: ignore[attr-defined]
    # The statements of ops.reads.list_page's two reads, as those operations send them.
    reads = [next(ops.count_jobs(d, where)), next(ops.list_jobs(d, where, jobq.Page(limit=25)))]
    assert all(isinstance(r, ops.Exec) for r in reads), reads
    with raw_connect(url) as pg:
        # A test's table is small, and a scan of it cheapest: with scans priced out, the planner
        # still scans only where no plan of the indexes exists. With sorts priced out too, a sort
        # is left only where no index gives the order.
        pg.execute("SET enable_seqscan = off")
        pg.execute("SET enable_sort = off")
        plans = ["\n".join(str(r[0]) for r in pg.execute("EXPLAIN " + r.sql, r.params)) for r in reads]
        pg.rollback()
    return plans


@pytest.mark.parametrize(
    "statuses",
    [[S.PENDING, S.PROCESSING, S.FAILED], [S.FAILED], [S.CANCELLED, S.PENDING]],
    ids=["the manager's first list", "failed", "cancelled or pending"],
)
def test_a_list_of_statuses_other_than_completed_reads_no_finished_history(
    backend_url: str, statuses: list[jobq.JobStatus]
) -> None:
    with jobq.Queue(backend_url) as q:
        q.enqueue_many([{"n": n} for n in range(3)])
        plans = _plans(q, backend_url, jobq.JobFilter(statuses=statuses))
        assert len(plans) == 2 or (len(plans) == 1 and S.PENDING not in statuses)  # no page when none match
        for plan in plans:
            assert "SCAN jobs" not in plan.replace("SCAN jobs USING", "") and "Seq Scan on jobs" not in plan, plan
        if not backend_url.startswith("sqlite"):  # the page, newest first: read along an index, not sorted
            assert "Sort" not in plans[-1], plans[-1]
        total, jobs = q.list_page(jobq.JobFilter(statuses=statuses), jobq.Page(limit=25))
        assert total == len(jobs) == (3 if S.PENDING in statuses else 0)
