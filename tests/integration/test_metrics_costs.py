"""What the metrics exporter pays per completed job, counted (issue 17): the fold of completions
is summed by the store (``Queue.completion_totals``), so its Python work must not grow with the
number of jobs folded in. Counted as Python function calls (``sys.setprofile``), which timing on
a shared machine cannot show: reading each completed row as before cost ~4 us of CPU per job,
8 % of a worker's own, and made about ten calls per job here."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import jobq
from jobq.observability.metrics import RUN_BUCKETS_SECONDS, JobqCollector
from jobq.testing import FakeClock

#: Calls a fold may make beyond those of a fold over a single job (a second queue's histograms,
#: a slot seen for the first time): a per-job cost would add thousands.
EXTRA_CALLS_MAX = 60


def python_calls(call: Callable[[], object], *, threads: bool = False) -> int:
    """Python function calls (``sys.setprofile``'s "call" events) made by ``call()``; with
    ``threads``, those of the threads it starts too."""
    calls = 0

    def profile(_frame: object, event: str, _arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    if threads:
        threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
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
