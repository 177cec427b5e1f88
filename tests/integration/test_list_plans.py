"""A job list of statuses other than COMPLETED reads the partial indexes of those statuses, never
the table (which holds every finished job), on both backends: the manager's first list (PENDING,
PROCESSING, FAILED) counted every stored job at each refresh, 0.11 s on SQLite and 0.2 s on
PostgreSQL at 1,000,000 stored jobs (11 and 32 ms since). Read from the plans of the very
statements ``Queue.list_page`` sends, with their values."""

from __future__ import annotations

from typing import Any

import pytest
from pg import raw_connect
from sqlite_trace import vm_steps

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


def _work(q: jobq.Queue, url: str, where: jobq.JobFilter, page: jobq.Page) -> int:
    """What one ``list_page`` costs the store: SQLite's virtual-machine steps (counted in
    hundreds by a progress handler), or PostgreSQL's rows read by the plan's scans (EXPLAIN
    ANALYZE of the count and the page, as ``ops.reads.list_page`` sends them past the window, with
    scans and sorts priced out as in ``_plans``)."""
    if url.startswith("sqlite"):
        return vm_steps(q.backend._connect(), lambda: q.list_page(where, page))  # type: ignore[attr-defined]
    d = q.backend.dialect  # type: ignore[attr-defined]
    up_to = None if page.window is None else page.window + 1
    reads = [next(ops.count_jobs(d, where, up_to)), next(ops.list_jobs(d, where, page))]
    total = 0
    with raw_connect(url) as pg:
        # Priced as at a large table (see _plans): a test's table is cheapest to read whole.
        pg.execute("SET enable_seqscan = off")
        pg.execute("SET enable_sort = off")
        for r in reads:
            (plan,) = pg.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + r.sql, r.params).fetchone()[0]
            nodes = [plan["Plan"]]
            while nodes:
                node = nodes.pop()
                nodes.extend(node.get("Plans", []))
                if "Scan" in node["Node Type"]:
                    total += int(node["Actual Rows"]) * int(node["Actual Loops"])
        pg.rollback()
    return total


@pytest.mark.parametrize(
    ("statuses", "sort"),
    [((), "created_at"), ((S.COMPLETED,), "finished_at"), ((S.COMPLETED,), "id")],
    ids=["every job by creation", "completed by finishing time", "completed oldest first"],
)
def test_a_windowed_list_costs_the_same_however_long_the_history(
    backend_url: str, statuses: tuple[jobq.JobStatus, ...], sort: str
) -> None:
    """``Page.window`` (the manager's list): a list that includes COMPLETED jobs, sorted by a
    column with no index, sorted all of them (every job of 10,000,000 by creation: 3.1 s on
    SQLite), and counted all of them; within a window it counts and reads the newest ``window``
    only. Measured at 2,000 and 4,000 completed jobs: with no window the work doubles (the check
    that the measure sees it), with one it stays."""
    where = jobq.JobFilter(statuses=statuses)
    windowed = jobq.Page(sort=sort, descending=False, limit=25, window=200)
    whole = jobq.Page(sort=sort, descending=False, limit=25)
    with jobq.Queue(backend_url) as q:

        def grow() -> None:
            q.enqueue_many([{"n": n} for n in range(2_000)])
            q.complete_many([(job, None) for job in q.claim_many("w", 2_000)])

        grow()
        small = (_work(q, backend_url, where, windowed), _work(q, backend_url, where, whole))
        grow()
        large = (_work(q, backend_url, where, windowed), _work(q, backend_url, where, whole))
        assert large[1] > 1.6 * small[1], (small, large)
        assert large[0] < 1.2 * small[0] + 2, (small, large)
        assert small[0] < small[1], (small, large)
        total, jobs = q.list_page(where, windowed)
        assert total == 201 and len(jobs) == 25
        assert min(j.id for j in jobs) > 4_000 - 200  # among the newest 200
