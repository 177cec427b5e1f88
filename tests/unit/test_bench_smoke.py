"""Keeps the benchmark harness from rotting: its quick path on jobq with a handful of jobs.

No timing assertion: only that every measurement produced a value and the safety counters and
the report hold together.
"""

from __future__ import annotations

import datetime
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.core import Bench, RowResult, Sizes  # noqa: E402
from bench.run import systems  # noqa: E402

TINY = Sizes(
    repeats=1,
    enqueue_one=20,
    enqueue_one_seconds=5.0,
    batches=1,
    batch_size=20,
    prefill=30,
    claim_seconds=20.0,
    latency_jobs=5,
    latency_rate=200.0,
    idle_seconds=0.2,
)


@pytest.mark.slow
def test_quick_path_on_jobq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the spawned workers import bench
    # multiprocessing's spawn re-runs the parent's __main__ in each worker; an earlier test in
    # this process may have left a Streamlit script there (AppTest runs the apps as __main__).
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    system = next(s for s in systems() if s.key == "jobq-full")
    counter = iter(range(1000))

    def env_for(_system: object) -> dict[str, object]:
        return {"workdir": str(tmp_path), "run": f"run{next(counter)}", "dsn_base": None}

    bench = Bench(TINY, env_for, lambda _text: None)
    row = RowResult(system)
    row.metrics["enqueue_one"] = bench.enqueue_one(system)
    row.metrics["enqueue_batch"] = bench.enqueue_batch(system)
    row.metrics["claim_1"] = bench.claim_complete(system, 1)
    row.metrics["latency"], row.metrics["idle_cpu"] = bench.latency_and_idle(system)

    assert row.metrics["enqueue_one"].jobs == 20
    assert row.metrics["enqueue_batch"].jobs == 20
    claim = row.metrics["claim_1"]
    assert claim.note == "" and claim.jobs == 30 and claim.duplicates == 0 and claim.lock_errors == 0
    latency = row.metrics["latency"]
    assert latency.note == "" and latency.jobs == 5 and latency.median is not None
    assert row.metrics["idle_cpu"].median is not None
    text = report.table([row])
    assert "jobq SQLite, default (FULL)" in text and "n/a" not in text


@pytest.mark.slow
def test_scale_section_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scale section end to end on tiny SQLite stores: filled, measured, every read timed."""
    from bench.scale import ScaleSizes, run_scale, table

    monkeypatch.setenv("JOBQ_SCALE_BACKENDS", "sqlite")
    tiny = ScaleSizes(small=300, big=3_000, pending=100, jobs=50, seconds=20.0)
    results = run_scale(str(tmp_path), None, True, lambda _: None, sizes=tiny)
    assert [(r.backend, r.stored, r.note) for r in results] == [("sqlite", 300, ""), ("sqlite", 3_000, "")]
    for r in results:
        assert r.jobs_per_second and r.claim_p99_ms is not None
        assert set(r.reads_ms) >= {"stats", "ops: latest jobs", "ops: history 1 h"}
    text = table(results)
    assert "| sqlite | 3,000 |" in text and "throughput is" in text
    assert list(tmp_path.glob("scale_*")) == []  # the stores are removed


@pytest.mark.slow
def test_scale_fill_on_postgres_writes_into_jobqs_schema(postgres_url: str) -> None:
    """The scale section's PostgreSQL fill finds jobq's tables in their own schema (``?schema=``)."""
    import jobq
    from bench.scale import fill_postgres

    fill_postgres(postgres_url, 40, 10)
    q = jobq.Queue(postgres_url)
    try:
        counts = q.counts()
    finally:
        q.close()
    assert sum(counts.values()) == 40 and counts.get("PENDING", 0) >= 10, counts


@pytest.mark.slow
def test_observed_row_reports_cpu_per_job_beside_the_plain_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The overhead comparison: both worker rows measure CPU per job, the observed one counting
    its exporter process, and the report sets them side by side."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    counter = iter(range(1000))

    def env_for(_system: object) -> dict[str, object]:
        return {"workdir": str(tmp_path), "run": f"run{next(counter)}", "dsn_base": None}

    bench = Bench(TINY, env_for, lambda _text: None)
    rows = []
    for key in ("jobq-worker", "jobq-worker-observed"):
        system = next(s for s in systems() if s.key == key)
        row = RowResult(system)
        row.metrics["claim_2"] = bench.claim_complete(system, 2)  # one spawn each: seconds
        rows.append(row)
    for row in rows:
        for m in row.metrics.values():
            assert m.note == "" and m.jobs == 30 and m.duplicates == 0
            assert m.cpu_median is not None and m.cpu_median > 0
    line = next(x for x in report.overhead_text(rows).splitlines() if x.startswith("| x2 "))
    assert "—" not in line  # both rates, both CPU figures and their ratios
    assert any("observability on" in t and got != "not measured" for t, got, _ in report.targets(rows, {}))


@pytest.mark.slow
def test_interleaved_overhead_rounds_feed_the_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    """make bench's overhead section: one round of the plain and the observed worker, its
    ratios in the targets (read from the rounds, not from the two rows) and its table in the page."""
    from bench import overhead

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    rounds = overhead.run(1, (1,), False, 30, lambda _text: None)
    assert set(rounds) == {"plain", "observed"}
    throughput, cpu = overhead.ratios(rounds)[1]
    assert throughput > 0 and cpu > 0
    checks = {t: got for t, got, _ in report.targets([], {"overhead": rounds})}
    assert checks["observability on, x1: throughput >= 0.97x plain (interleaved)"] == f"{throughput:.2f}x"
    assert checks["observability on, x2: CPU per job <= 1.03x plain (interleaved)"] == "not measured"
    page = report.generated(
        [],
        {
            "overhead": rounds,
            "date": datetime.datetime.now(datetime.UTC),
            "elapsed_s": 0.0,
            "mode": "quick",
            "sizes": TINY,
        },
    )
    assert "Interleaved (1 rounds" in page and "| observed | 1 |" in page


def test_hotpath_measures_jobq_and_the_statements_it_sends() -> None:
    # bench.hotpath's floor replays the claim, completion and insert jobq sent (captured by text):
    # if jobq's statements change shape, the floor must still find and run them.
    from bench.hotpath import _measure

    for arm in ("jobq", "floor"):
        figures = _measure(arm, 20, "OFF")
        assert set(figures) == {"claim+complete", "enqueue"}, (arm, figures)
        assert all(value > 0 for value in figures.values()), (arm, figures)


def test_pg_anatomy_takes_only_the_waiter_check_out_of_jobqs_completion() -> None:
    # bench.pg_calls --anatomy runs complete_one without its waiter check: if the statement changes
    # shape, the variant must still be the same statement but for that call, or fail loudly.
    from bench.pg_calls import NO_WAITER_CHECK, without_waiter_check
    from jobq.backends.postgres import PostgresDialect

    complete_one = PostgresDialect("jobq").sql["complete_one"]
    variant = without_waiter_check(complete_one)
    assert "jobq_notify_waited" in complete_one and "jobq_notify_waited" not in variant
    assert variant.startswith(NO_WAITER_CHECK)
    assert variant.count("count(*) AS n") == complete_one.count("count(*) AS n") + 1
    assert len(variant) < len(NO_WAITER_CHECK) + len(complete_one)
    with pytest.raises(RuntimeError, match="no waiter check"):
        without_waiter_check("SELECT 1")


def test_apps_targets_judge_the_returning_browser_and_show_a_new_profile() -> None:
    apps = {"jobs": 125_000, "manager": 1.5, "manager (new browser profile)": 2.5, "ops": 2.5}
    got = {t: (shown, ok) for t, shown, ok in report.targets([], {"apps": apps})}
    returning = "first full render in Chromium < 2 s with 125,000 jobs (a browser that has opened the app before)"
    assert got[f"manager: {returning}"] == ("1.5 s", True)
    assert got[f"ops: {returning}"] == ("2.5 s", False)
    assert got["manager: the same in a new browser profile (nothing cached)"] == ("2.5 s", None)
    assert not any(t.startswith("ops: the same") for t in got)
