"""An operator's action on many jobs (``cancel_many``/``resubmit_many`` with a filter: `jobq cancel
--status pending`, the manager's "Cancel all matching") reads each row once on SQLite.

Each chunk of ``OPERATOR_CHUNK_JOBS`` took the first jobs past its cursor in id order through their
status's index, which for PENDING is in claim order: it read and sorted every match left, once per
chunk. 1,000,000 PENDING jobs were cancelled in 4 min 23 s (60-90 ms a chunk), 36 s since; the
work grew with the square of the jobs. Past ``TARGETS_SORTED_MAX`` matches a chunk now walks the
table's ids (``ops.operator._walk_targets``)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from handwritten import write_by_hand
from sqlite_trace import vm_steps

import jobq
from jobq.backends import base
from jobq.backends.ops import operator
from jobq.backends.store import SqlStore

S = jobq.JobStatus


def _cancelled_events(q: jobq.Queue, ids: list[int]) -> collections.Counter[int]:
    seen: collections.Counter[int] = collections.Counter()
    for job_id in ids:
        seen[job_id] += sum(e.kind == "cancelled" for e in q.events(job_id))
    return seen


def test_a_walked_action_acts_on_each_match_once(backend_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk's chunks, made small: windows of ids with no row (a purged range), windows with
    fewer matches than a chunk, a filter that leaves every other job; then the sorted chunks
    finish what is left (at most TARGETS_SORTED_MAX)."""
    monkeypatch.setattr(operator, "TARGETS_SORTED_MAX", 40)
    monkeypatch.setattr(operator, "TARGETS_WALK_IDS", 150)
    monkeypatch.setattr(base, "OPERATOR_CHUNK_JOBS", 25)
    with jobq.Queue(backend_url) as q:
        # Ids 301-700 left no job (completed and purged): windows of the walk with no row.
        ids = q.enqueue_many([{"n": n, "tag": "odd" if n % 2 else "even"} for n in range(300)])
        gone = q.enqueue_many([{"gone": n} for n in range(400)], queue="gone")
        q.complete_many([(j, None) for j in q.claim_many("w", 400, queue="gone")])
        assert q.purge(older_than=0, statuses=[S.COMPLETED]) == 400
        ids += q.enqueue_many([{"n": n, "tag": "odd" if n % 2 else "even"} for n in range(300, 1_200)])
        assert min(ids[300:]) > max(gone) and q.count(jobq.JobFilter(statuses=(S.PENDING,))) == 1_200
        left = ids

        where = jobq.JobFilter(statuses=(S.PENDING,), search='"tag":"odd"')
        results = q.cancel_many(where=where)
        odd = [i for n, i in enumerate(ids) if n % 2]
        assert sorted(r.job_id for r in results if r.ok) == sorted(odd)
        assert len(results) == len(odd) and len({r.job_id for r in results}) == len(odd)
        assert q.count(jobq.JobFilter(statuses=(S.CANCELLED,))) == len(odd)
        assert q.count(jobq.JobFilter(statuses=(S.PENDING,))) == len(left) - len(odd)
        assert set(_cancelled_events(q, odd[:50] + odd[-50:]).values()) == {1}

        again = q.resubmit_many(where=jobq.JobFilter(statuses=(S.CANCELLED,)))
        assert sorted(r.job_id for r in again if r.ok) == sorted(odd) and all(r.ok for r in again)
        assert q.count(jobq.JobFilter(statuses=(S.PENDING,))) == len(left)


def test_cancelling_a_large_backlog_costs_in_proportion_to_it(tmp_path: Path) -> None:
    """Measured at 6,000 and 24,000 PENDING jobs (above TARGETS_SORTED_MAX): four times the jobs
    cost four times the work (measured 4.0x; the old chunks, each sorting every match left: 6.2x
    here, and ever more as the backlog grows)."""
    costs = []
    for n in (6_000, 24_000):
        with jobq.Queue(f"sqlite:///{tmp_path}/q{n}.db") as q:
            q.enqueue_many([{"n": i} for i in range(n)])
            where = jobq.JobFilter(statuses=(S.PENDING,))
            conn = q.backend._connect()  # type: ignore[attr-defined]
            costs.append(vm_steps(conn, lambda q=q, where=where: q.cancel_many(where=where)))
            assert q.counts()["CANCELLED"] == n
    assert costs[1] < 5 * costs[0], costs


@pytest.mark.parametrize("walked", [False, True], ids=["sorted", "walked"])
def test_rows_edited_by_hand_between_chunks_are_taken_as_they_are_then(
    backend_url: str, monkeypatch: pytest.MonkeyPatch, walked: bool
) -> None:
    """An operator's `sqlite3`/`psql` edits while `jobq cancel --status pending` runs: each chunk
    reads the rows as they are when it runs. A job of a later chunk completed or set running by
    hand is not cancelled; a job of an earlier chunk set back to PENDING is not cancelled twice
    (the chunks go forward in id order); every other job is cancelled once, and the results name
    exactly the jobs cancelled."""
    if walked:  # the walk by ids (many matches) rather than the sorted chunks
        monkeypatch.setattr(operator, "TARGETS_SORTED_MAX", 5)
        monkeypatch.setattr(operator, "TARGETS_WALK_IDS", 12)
    monkeypatch.setattr(base, "OPERATOR_CHUNK_JOBS", 10)
    with jobq.Queue(backend_url) as q:
        ids = q.enqueue_many([{"n": n} for n in range(50)])
        first, done_by_hand, running_by_hand = ids[3], ids[35], ids[41]
        edits: list[int] = []
        pause = SqlStore._pause

        def edit_after_the_first_chunk(self: SqlStore, began: float) -> None:
            if not edits:
                edits.append(1)
                write_by_hand(
                    backend_url,
                    f"UPDATE jobs SET status = 'PENDING' WHERE id = {first}",
                    f"UPDATE jobs SET status = 'COMPLETED' WHERE id = {done_by_hand}",
                    f"UPDATE jobs SET status = 'PROCESSING' WHERE id = {running_by_hand}",
                )
            pause(self, began)

        monkeypatch.setattr(SqlStore, "_pause", edit_after_the_first_chunk)
        results = q.cancel_many(where=jobq.JobFilter(statuses=(S.PENDING,)))
        assert edits, "the action ran in one chunk: nothing was edited between chunks"
        cancelled = [r.job_id for r in results if r.ok]
        assert first in cancelled  # by the first chunk, before the edit
        assert sorted(cancelled) == [i for i in ids if i not in (done_by_hand, running_by_hand)]
        assert q.get(first).status is S.PENDING  # type: ignore[union-attr]
        assert q.get(done_by_hand).status is S.COMPLETED  # type: ignore[union-attr]
        assert q.get(running_by_hand).status is S.PROCESSING  # type: ignore[union-attr]
        seen = _cancelled_events(q, ids)
        assert all(seen[i] == (1 if i in cancelled else 0) for i in ids), seen


def test_an_action_on_many_jobs_holds_its_results_compactly(backend_url: str) -> None:
    """The results of a filtered action are gathered chunk by chunk into ``ActionResults`` (an id
    and a code a job), not a list of ActionResult objects: `jobq cancel --status pending` of
    1,000,000 jobs peaked at 160 MB, of which ~110 MB were its results. Python's allocations over
    the call, counted by tracemalloc, for 40,000 jobs: a list of results alone holds ~4.5 MB."""
    import tracemalloc

    with jobq.Queue(backend_url) as q:
        q.enqueue_many([{"n": n} for n in range(40_000)])
        q.cancel_many(where=jobq.JobFilter(queues=("none",)))  # statements prepared, caches warm
        tracemalloc.start()
        try:
            results = q.cancel_many(where=jobq.JobFilter(statuses=(S.PENDING,)))
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert isinstance(results, jobq.ActionResults) and len(results) == 40_000
        assert all(r.ok and r.status is S.CANCELLED for r in results)
        assert held < 1_000_000 and peak < 2_500_000, f"held {held:,} B, peak {peak:,} B"
        assert q.counts()["CANCELLED"] == 40_000
