"""Keeps the benchmark harness from rotting: its quick path on jobq with a handful of jobs.

No timing assertion: only that every measurement produced a value and the safety counters and
the report hold together.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

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
        assert set(r.reads_ms) >= {"stats", "ops: latest jobs", "ops: history 1 h", "manager: job list"}
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


def quick_page(extras: dict[str, Any]) -> str:
    """The page ``make bench --quick`` writes with ``extras`` and no rows."""
    return report.generated(
        [], {**extras, "date": datetime.datetime.now(datetime.UTC), "elapsed_s": 0.0, "mode": "quick", "sizes": TINY}
    )


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
    page = quick_page({"overhead": rounds})
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


def test_a_per_job_row_is_measured_in_turns_with_its_raw_row_and_its_ratios_read_from_the_pairs(
    tmp_path: Path,
) -> None:
    """make bench's per-job rows (``against``): each repeat runs the raw row and jobq's one after the
    other, raw first in every other repeat, and the targets read the median of the repeats' own
    ratios, not the ratio of the two medians (the rows measured minutes apart moved with the machine)."""
    from bench.core import Measure
    from bench.run import measure_pair

    rows = {s.key: s for s in systems()}
    mine, raw = rows["jobq-pg"], rows["raw-pg"]
    assert mine.options["against"] == "raw-pg"
    calls: list[tuple[str, str]] = []
    # Per repeat (raw, jobq): the machine's speed moves between repeats, far more than the ratio.
    rates = {"raw-pg": iter([100.0, 40.0, 60.0] * 5), "jobq-pg": iter([50.0, 36.0, 54.0] * 5)}

    class FakeBench:  # a unit test: the measurements themselves are the smoke tests' business
        sizes = dataclasses.replace(TINY, repeats=1, pair_repeats=3)

        def _run(self, name: str, system: Any) -> Measure:
            calls.append((name, system.key))
            return Measure(values=[next(rates[system.key])], jobs=1)

        def enqueue_one(self, system: Any) -> Measure:
            return self._run("enqueue_one", system)

        def enqueue_batch(self, system: Any) -> Measure:
            return self._run("enqueue_batch", system)

        def claim_complete(self, system: Any, n: int) -> Measure:
            return self._run(f"claim_{n}", system)

        def latency_and_idle(self, system: Any) -> tuple[Measure, Measure]:
            return Measure(values=[1.0], extra=[2.0]), Measure(values=[0.1])

    probe = {"workdir": str(tmp_path), "run": "probe", "dsn_base": "postgresql://nowhere"}
    fake = FakeBench()
    got, limit = measure_pair(fake, fake, mine, raw, probe, lambda _text: None)  # type: ignore[arg-type]
    assert calls[:6] == [
        ("enqueue_one", "raw-pg"),
        ("enqueue_one", "jobq-pg"),
        ("enqueue_one", "jobq-pg"),
        ("enqueue_one", "raw-pg"),
        ("enqueue_one", "raw-pg"),
        ("enqueue_one", "jobq-pg"),
    ]
    assert got.metrics["enqueue_one"].values == [50.0, 36.0, 54.0]
    assert limit.metrics["enqueue_one"].values == [100.0, 40.0, 60.0]
    assert got.against == "raw-pg" and got.pairs["claim_4"] == [(50.0, 100.0), (36.0, 40.0), (54.0, 60.0)]
    # The repeats' ratios are 0.5, 0.9 and 0.9: their median 0.9x; the medians' ratio, 50 / 60, 0.83x.
    checks = {t: shown for t, shown, _ in report.targets([got, limit], {})}
    assert checks["PostgreSQL per-job API, x4 >= 0.8x raw SKIP LOCKED"] == "0.90x"
    assert checks["PostgreSQL enqueue 1/call >= 0.8x raw"] == "0.90x"
    assert report.ratio_rows([got, limit])[0][1].startswith("0.90x")
    # Measured apart (no pairs), a row's ratio is the ratio of the medians, as before.
    got.pairs.clear()
    assert {t: s for t, s, _ in report.targets([got, limit], {})}["PostgreSQL enqueue 1/call >= 0.8x raw"] == "0.83x"


def test_attributed_overhead_sums_each_parts_share_into_the_targets_and_the_page() -> None:
    """make bench's attributed overhead: the worker's parts as instructions against the plain
    worker's, the exporter's CPU as the median of its runs' ratios to the worker's, the sum judged
    against 3 %."""
    from bench import overhead

    found = {
        "instructions": {"plain": 200_000.0, "logs": 200_200.0, "progress": 203_000.0, "logs+progress": 203_200.0},
        "exporter": [(30.0, 1.2), (40.0, 1.2), (32.0, 1.6)],  # ratios 0.04, 0.03, 0.05: median 0.04
        "note": "",
        "jobs": 1_000,
    }
    shares = overhead.attributed_shares(found)
    assert shares["logs"] == pytest.approx(0.001) and shares["progress"] == pytest.approx(0.015)
    assert shares["exporter"] == pytest.approx(0.04)
    assert shares["all"] == pytest.approx(0.056)
    checks = {t: got for t, got, _ in report.targets([], {"overhead_attributed": found})}
    assert checks["observability on, attributed: cost per job <= 3 % of plain"] == "5.6 %"
    page = quick_page({"overhead_attributed": found})
    assert "| **all** | | | **+5.6%** |" in page and "| progress | +3,000 instructions |" in page
    assert "| callgrind, 1,000 jobs |" in page  # the drains' size as run (make bench --quick: fewer)
    # Without valgrind nothing is counted on the worker's side, and nothing is summed.
    partial = {**found, "instructions": {}, "note": "valgrind is not installed"}
    assert "all" not in overhead.attributed_shares(partial)
    checks = {t: got for t, got, _ in report.targets([], {"overhead_attributed": partial})}
    assert checks["observability on, attributed: cost per job <= 3 % of plain"] == "not measured"


def test_a_counted_drain_runs_the_benchs_worker_to_the_last_job() -> None:
    # What callgrind counts: the bench's worker and handler draining every job, in a process of its
    # own as callgrind runs it (the JSON log handler is set on that process's root logger).
    from bench import overhead

    overhead.drain_once("plain", 300)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "bench.overhead", "--drain"]
    subprocess.run([*args, "logs+progress", "--jobs", "300"], cwd=REPO, env=env, check=True, timeout=120)
    refused = subprocess.run([*args, "logs+exporter"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "no such part of the worker's: logs+exporter" in refused.stderr


def test_the_batched_worker_is_also_judged_against_raws_best_figure_of_the_run() -> None:
    """Raw's batched row at x4 can run well below its x1 (SQLite's busy handler): the paired x4
    ratio alone then flatters jobq, so a target reads jobq's x4 against raw's best figure too."""
    from bench.core import Measure

    rows = {s.key: s for s in systems()}
    raw = RowResult(
        rows["raw-full-b100"], metrics={f"claim_{n}": Measure(values=[v]) for n, v in ((1, 80.0), (2, 78.0), (4, 60.0))}
    )
    mine = RowResult(rows["jobq-worker"], metrics={"claim_4": Measure(values=[38.0])}, against="raw-full-b100")
    mine.pairs["claim_4"] = [(38.0, 60.0)]
    checks = {t: (shown, met) for t, shown, met in report.targets([mine, raw], {})}
    assert checks["Worker(batch=100) at FULL, x4 >= 0.5x raw FULL at 100 claims per txn"] == ("0.63x", True)
    assert checks["  ... the same against raw's best figure of the run (x1, x2 or x4)"] == ("0.47x", False)


def test_the_machines_speed_at_start_and_end_is_on_the_page_and_a_move_is_called_out(tmp_path: Path) -> None:
    """A run on a machine that slowed down 2-3x read like a slow jobq (2026-12-07 12:25): the page
    now says how fast the machine was at the run's start and end, and says so when that moved."""
    from bench import speed

    reading = speed.probe(str(tmp_path), seconds=0.02, readings=1)
    assert reading.loop_per_s > 0 and reading.fsync_per_s > 0 and reading.commit_per_s > 0
    assert os.listdir(tmp_path) == []  # the probe's file is gone

    held = dict(report.machine({"speed_start": reading, "speed_end": reading}))
    assert held["machine speed, start"] == reading.text()
    assert held["machine speed, end"].endswith("held through the run (within 20%)")

    slowed = dataclasses.replace(reading, loop_per_s=reading.loop_per_s / 2.5)
    lines = dict(report.machine({"speed_start": reading, "speed_end": slowed}))
    assert "moved during the run (CPU slower by 60%)" in lines["machine speed, end"]
    both = dataclasses.replace(slowed, commit_per_s=reading.commit_per_s * 2)
    lines = dict(report.machine({"speed_start": reading, "speed_end": both}))
    assert "(CPU slower by 60%, SQLite commits faster by 50%)" in lines["machine speed, end"]
    assert "machine speed, start" not in dict(report.machine({}))  # a run without the readings


def test_a_run_on_a_machine_whose_speed_moved_does_not_replace_the_table(tmp_path: Path) -> None:
    """The run of 2026-12-08 05:06 (CPU 34 % slower at its end) replaced the table of a run at the
    machine's usual speed, and was put back by hand. Such a run's report now goes elsewhere."""
    import shutil

    from bench import speed
    from bench.run import report_dir

    reading = speed.Speed(loop_per_s=30e6, fsync_per_s=10_000, commit_per_s=60_000)
    slowed = dataclasses.replace(reading, loop_per_s=20e6)
    out = str(tmp_path / "docs")
    assert report_dir(out, {"speed_start": reading, "speed_end": reading}, keep_moved=False) == (out, None)
    assert report_dir(out, {}, keep_moved=False) == (out, None)  # no readings: nothing to go by
    assert report_dir(out, {"speed_start": reading, "speed_end": slowed}, keep_moved=True) == (out, None)
    elsewhere, why = report_dir(out, {"speed_start": reading, "speed_end": slowed}, keep_moved=False)
    try:
        assert os.path.isdir(elsewhere) and not elsewhere.startswith(out) and os.listdir(elsewhere) == []
        assert why is not None and "(CPU slower by 33%)" in why and f"{out}/benchmarks.md is left as it was" in why
        assert "--keep-moved" in why
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
