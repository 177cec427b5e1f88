"""What the metrics exporter pays per completed job, counted (issue 17): the fold of completions
is summed by the store (``Queue.completion_totals``), so its Python work must not grow with the
number of jobs folded in. Counted as Python function calls (``sys.setprofile``), which timing on
a shared machine cannot show: reading each completed row as before cost ~4 us of CPU per job,
8 % of a worker's own, and made about ten calls per job here."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

import jobq
from jobq.observability.metrics import _BOUNDS, RUN_BUCKETS_SECONDS, JobqCollector
from jobq.testing import FakeClock

#: Calls a fold may make beyond those of a fold over a single job (a second queue's histograms,
#: a slot seen for the first time): a per-job cost would add thousands.
EXTRA_CALLS_MAX = 60


def python_calls(call: Callable[[], object], *, threads: bool = False) -> int:
    """Python function calls (``sys.setprofile``'s "call" events) made by ``call()``; with
    ``threads``, those of the threads it starts too.

    The cyclic garbage collector is run before and kept off during ``call()``: a collection that
    falls inside it runs the finalizers (``__del__``) of garbage that earlier tests in the process
    left, and each of their calls was counted. One PostgreSQL claim of five counted 58 calls
    against 48 in a ``make test`` run, where each process runs many files; this is the likely
    cause, not a proven one."""
    calls = 0

    def profile(_frame: object, event: str, _arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    if threads:
        threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        if collecting:
            gc.enable()
    return calls


def fold_calls(q: jobq.Queue, clock: FakeClock, jobs: int) -> tuple[int, JobqCollector]:
    collector = JobqCollector(q, settle_seconds=0.0, scrape_events=0)
    collector._take_events(clock.now, 0)  # the cursors start here
    q.enqueue_many(list(range(jobs)))
    clock.advance(1)
    while claimed := q.claim_many("w", 500):
        clock.advance(0.5)
        q.complete_many([(j, None) for j in claimed])
    return python_calls(lambda: collector._take_events(clock.now, 10**9)), collector


def completed(collector: JobqCollector) -> int:
    return sum(n for (name, _q), n in collector._totals.counters.items() if name == "completed")


def test_folding_completions_costs_no_python_per_job(backend_url: str) -> None:
    clock = FakeClock(1_800_000_000.0)
    with jobq.Queue(backend_url, clock=clock) as q:
        one, c1 = fold_calls(q, clock, 1)
        many, c2 = fold_calls(q, clock, 2_000)
    assert (completed(c1), completed(c2)) == (1, 2_000)
    slot = RUN_BUCKETS_SECONDS.index(0.5)  # each ran 0.5 s
    assert c2._totals.run["default"].counts[slot] == 2_000
    assert many <= one + EXTRA_CALLS_MAX, (one, many)


def test_the_usual_fold_walks_its_completions_once(tmp_path: Path) -> None:
    """A fold of no more completions than its limit (the exporter keeping up) reads the last
    one, then sums them: one walk of the range, no probe along it first (that walk was 8 % of the
    fold's VM steps, issue 17). Only a fold with more left than its limit reads more. Traced on
    the exporter's connection with SQLite's VM steps per statement (deterministic, unlike time)."""
    clock = FakeClock(1_800_000_000.0)
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db", clock=clock) as q:
        start = q.completion_cursor()
        q.enqueue_many(list(range(2_000)))
        clock.advance(1)
        while claimed := q.claim_many("w", 500):
            clock.advance(0.5)
            q.complete_many([(j, None) for j in claimed])
        conn = q.backend._connect()  # type: ignore[attr-defined]
        steps: list[tuple[str, int]] = []

        def profile(event: dict[str, Any]) -> None:
            if not event["sql"].startswith(("BEGIN", "COMMIT")):
                steps.append((event["sql"], event["stmt_status"]["SQLITE_STMTSTATUS_VM_STEP"]))

        conn.trace_v2(apsw.SQLITE_TRACE_PROFILE, profile)
        try:
            _, usual = q.completion_totals(start, _BOUNDS, limit=2_000)
            usual_steps = list(steps)
            steps.clear()
            _, behind = q.completion_totals(start, _BOUNDS, limit=1_999)
        finally:
            conn.trace_v2(0, None)
    assert usual["default"].completed == 2_000 and behind["default"].completed == 1_500  # up to the 4th instant
    # The last one (it walks back over its own instant only: 500 jobs completed together), then
    # the sums; nothing walks the range but the sums.
    assert [sql.split()[-1] for sql, _ in usual_steps] == ["1", "1"], [sql[:60] for sql, _ in usual_steps]
    (last, last_steps), (fold, fold_steps) = usual_steps
    assert "ORDER BY finished_at DESC, id DESC LIMIT 1" in last and "GROUP BY" in fold
    assert last_steps < fold_steps / 2
    assert not any("OFFSET" in sql for sql, _ in usual_steps)
    assert any("OFFSET" in sql for sql, _ in steps)  # behind: the probe, then the bounded fold


class _Cyclic:
    """Garbage only the cyclic collector frees, with a finalizer that makes Python calls."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        sum(range(3))


def test_the_counts_leave_out_the_finalizers_of_garbage_made_before() -> None:
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(20)  # a collection falls inside the counted call
    try:
        for _ in range(5):
            _Cyclic()
        counted = python_calls(lambda: [[] for _ in range(100)])
    finally:
        gc.set_threshold(*thresholds)
    assert counted == 2  # the lambda and its list comprehension; 7 with the five finalizers
