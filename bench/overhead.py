"""``python -m bench.overhead``: what observability costs the worker, in interleaved A/B runs.

The rows ``jobq-worker`` and ``jobq-worker-observed`` of ``make bench`` are measured minutes
apart; on a shared machine the load changes meanwhile and their throughput differed by up to
30 % in either direction. Here each round runs the plain worker and then each observed variant
on the same backlog size, one after the other, and reports per variant:

- CPU microseconds per job (the worker processes and, for the exporter, its process): far more
  robust under load than throughput (a busy machine slows a run down much more than it adds CPU
  per job; at a load of 20+ on 2 cores it still varied by 40 % between rounds here);
- throughput relative to the plain run of the same round (the median over rounds).

Rounds alternate the order of the variants (plain first, then last), so that a drift of the
machine's speed within a round does not always fall on the same side.

``--parts`` measures each part alone (``logs``, ``progress``, ``exporter``) besides all of them.

``--attribute`` measures what each part adds where it is spent, by methods the machine's speed
does not move (the interleaved ratios above moved by +-10 % between rounds of the same code, more
than the 3 % they are read against):

- the worker's own parts (the JSON log handler, a ``ctx.progress`` call per job) in instructions
  per job, counted by ``valgrind --tool=callgrind`` (``worker_instructions``): the same worker
  drains ``ATTRIBUTE_JOBS`` jobs and none, so start-up and imports cancel out;
- the exporter in its own CPU per job against the worker's in the same run
  (``bench.exporter_cost``): a separate process, so its CPU is read alone, not as the small
  difference of two large totals.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.core import FULL, Bench, System, make_payload

WORKER = "bench.adapters.jobq_worker:JobqWorker"
PARTS = ("logs", "progress", "exporter")
OVERHEAD_ROUNDS = 6
"""Rounds of ``make bench``'s overhead section (each: plain and observed, at x1, x2 and x4, in
alternating order): ~6 minutes. The machine's speed moved the plain worker's CPU per job by
+-20 % between rounds here; three rounds left a 3 % target to chance."""
OVERHEAD_PREFILL = 100_000
"""Jobs per run in ``make bench``'s overhead section: at ~25,000 jobs/s the bench's 20,000 made
sub-second runs, in which one scrape more or less moved the figures by several percent."""


ATTRIBUTE_JOBS = 4_000
"""Jobs of each counted drain: callgrind runs Python ~50x slower (a drain takes ~10 s); the
instructions per job of two drains of the same code agreed within ~0.5 % here."""
ATTRIBUTE_ARMS = ("plain", "logs", "progress", "logs+progress")
EXPORTER_JOBS = 60_000
EXPORTER_ROUNDS = 3


def variants(parts: bool) -> list[System]:
    base = {"synchronous": "FULL", "skip": ["enqueue"]}
    out = [
        System("plain", "jobq-worker", WORKER, base),
        System("observed", "all parts", WORKER, {**base, "observe": True}),
    ]
    if parts:
        out += [System(p, f"{p} only", WORKER, {**base, "observe": [p]}) for p in PARTS]
    return out


def run(rounds: int, workers: tuple[int, ...], parts: bool, prefill: int, log: Any) -> dict[str, Any]:
    """{variant: {workers: {"rate": [...], "cpu": [...], "ratio": [...], "cpu_ratio": [...]}}} over
    ``rounds`` rounds (the ratios: each against the plain run of its round)."""
    workdir = tempfile.mkdtemp(prefix="jobq-overhead-")
    counter = [0]

    def env_for(system: System) -> dict[str, Any]:
        counter[0] += 1
        for name in os.listdir(workdir):  # the previous run's files
            os.remove(os.path.join(workdir, name))
        return {"workdir": workdir, "run": f"{system.key}_{counter[0]}", "dsn_base": None}

    sizes = dataclasses.replace(FULL, repeats=1, prefill=prefill)
    bench = Bench(sizes, env_for, log)
    out: dict[str, Any] = {}
    try:
        for r in range(rounds):
            for n in workers:
                # Every other round in the reverse order: the machine's speed drifts within a
                # round, and a fixed order would hand the drift to one side.
                order = variants(parts) if r % 2 == 0 else variants(parts)[::-1]
                ran: dict[str, tuple[float, float | None]] = {}  # key: (jobs/s, CPU us/job)
                for system in order:
                    m = bench.claim_complete(system, n)
                    if m.median is None:
                        log(f"round {r + 1} x{n} {system.key}: {m.note}")
                        continue
                    cell = out.setdefault(system.key, {}).setdefault(
                        n, {"rate": [], "cpu": [], "ratio": [], "cpu_ratio": []}
                    )
                    cell["rate"].append(m.median)
                    cell["cpu"].append(m.cpu_median)
                    ran[system.key] = (m.median, m.cpu_median)
                    log(f"round {r + 1} x{n} {system.key}: {m.median:,.0f} jobs/s, {m.cpu_median:.0f} us CPU/job")
                base_rate, base_cpu = ran.pop("plain", (0.0, None))
                for key, (rate, cpu) in ran.items():
                    if base_rate:
                        out[key][n]["ratio"].append(rate / base_rate)
                    if base_cpu and cpu:
                        out[key][n]["cpu_ratio"].append(cpu / base_cpu)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def ratios(results: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """{workers: (throughput, CPU per job)} of the observed worker against the plain one: the
    median over rounds of each round's ratio (the two runs of a round are minutes closer than
    the rounds are to each other)."""
    out = {}
    for n, cell in sorted(results.get("observed", {}).items()):
        if cell["ratio"] and cell["cpu_ratio"]:
            out[n] = (statistics.median(cell["ratio"]), statistics.median(cell["cpu_ratio"]))
    return out


def text(results: dict[str, Any]) -> str:
    lines = [
        "| variant | workers | jobs/s (median) | throughput vs plain (median) | CPU us/job (median) "
        "| CPU vs plain (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, by_n in results.items():
        for n, cell in sorted(by_n.items()):
            cpu = statistics.median(cell["cpu"])
            ratio = f"{statistics.median(cell['ratio']):.3f}x" if cell["ratio"] else "—"
            cpu_ratio = f"{statistics.median(cell['cpu_ratio']):.3f}x" if cell["cpu_ratio"] else "—"
            rate = statistics.median(cell["rate"])
            lines.append(f"| {key} | {n} | {rate:,.0f} | {ratio} | {cpu:.0f} | {cpu_ratio} |")
    return "\n".join(lines)


def drain_once(arm: str, jobs: int) -> None:
    """One ``WorkerConsumer`` (the bench's own worker and handler) draining ``jobs`` jobs of a
    fresh SQLite file, observed as ``arm`` says (``plain``, or parts joined by ``+``); the
    exporter is never started here (``index`` 1)."""
    from bench.adapters.jobq_worker import WorkerConsumer

    parts = [] if arm == "plain" else arm.split("+")
    if not set(parts) <= {"logs", "progress"}:  # the Observer would leave an unknown part out
        raise SystemExit(f"no such part of the worker's: {arm} (logs, progress, or both joined by +)")
    workdir = tempfile.mkdtemp(prefix="jobq-attribute-")
    try:
        url = f"sqlite:///{workdir}/q.db?synchronous=NORMAL"  # fsync waits count no instruction
        options: dict[str, Any] = {"batch": 100, "observe": parts}
        consumer = WorkerConsumer(url, options, index=1)
        if jobs:
            consumer.q.enqueue_many([make_payload(n) for n in range(jobs)])
        records, _, error = consumer.run_drain(time.time() + 3600)
        consumer.close()
        if error or len(records) != jobs:
            raise SystemExit(f"{arm}: drained {len(records)} of {jobs} jobs {error}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _instructions(arm: str, jobs: int) -> int:
    """Instructions of a whole process draining ``jobs`` jobs as ``arm``, counted by callgrind."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    args = [sys.executable, "-m", "bench.overhead", "--drain", arm, "--jobs", str(jobs)]
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or not found:
        raise RuntimeError(f"callgrind of {arm} failed: {done.stderr[-300:]}")
    return int(found.group(1))


def worker_instructions(jobs: int, log: Any) -> dict[str, float]:
    """{arm: instructions per job}: the slope between a drain of ``jobs`` jobs and one of none."""
    out = {}
    for arm in ATTRIBUTE_ARMS:
        out[arm] = (_instructions(arm, jobs) - _instructions(arm, 0)) / jobs
        log(f"attribute: {arm}: {out[arm]:,.0f} instructions a job")
    return out


def attribute(log: Any, jobs: int = ATTRIBUTE_JOBS, exporter_jobs: int = EXPORTER_JOBS) -> dict[str, Any]:
    """What each part adds, as a share of the plain worker's cost: ``{"instructions": {arm:
    per job}, "exporter": [(worker us, exporter us) per run], "note": why a part is missing,
    "jobs": of each counted drain}``."""
    from bench.exporter_cost import run_once

    out: dict[str, Any] = {"instructions": {}, "exporter": [], "note": "", "jobs": jobs}
    if shutil.which("valgrind") is None:
        out["note"] = "valgrind is not installed: the worker's parts were not counted"
    else:
        out["instructions"] = worker_instructions(jobs, log)
    for r in range(EXPORTER_ROUNDS):
        worker, exported = run_once(exporter_jobs)
        out["exporter"].append((worker, exported))
        log(f"attribute: exporter run {r + 1}: worker {worker:.1f} us/job, exporter {exported:.2f} us/job")
    return out


def attributed_shares(found: dict[str, Any]) -> dict[str, float]:
    """{part: its cost as a share of the plain worker's}: each worker part's instructions, the
    exporter's CPU (the median over runs of its ratio to the worker's), and ``all`` their sum."""
    shares: dict[str, float] = {}
    counted = found.get("instructions") or {}
    plain = counted.get("plain")
    if plain:
        for arm in ATTRIBUTE_ARMS[1:]:
            shares[arm] = counted[arm] / plain - 1
    runs = found.get("exporter") or []
    if runs:
        shares["exporter"] = statistics.median(exported / worker for worker, exported in runs)
    if "logs+progress" in shares and "exporter" in shares:
        shares["all"] = shares["logs+progress"] + shares["exporter"]
    return shares


def attributed_text(found: dict[str, Any]) -> str:
    shares = attributed_shares(found)
    counted = found.get("instructions") or {}
    runs = found.get("exporter") or []
    lines = ["| part | cost a job | plain worker a job | share | measured as |", "|---|---:|---:|---:|---|"]
    for arm in ATTRIBUTE_ARMS[1:]:
        if arm in shares:
            added = counted[arm] - counted["plain"]
            lines.append(
                f"| {arm} | {added:+,.0f} instructions | {counted['plain']:,.0f} instructions "
                f"| {shares[arm]:+.1%} | callgrind, {found.get('jobs', ATTRIBUTE_JOBS):,} jobs |"
            )
    if runs:
        worker = statistics.median(w for w, _ in runs)
        exported = statistics.median(e for _, e in runs)
        lines.append(
            f"| exporter (scraped every second) | {exported:.2f} us CPU | {worker:.1f} us CPU "
            f"| {shares['exporter']:+.1%} | its process's CPU, median of {len(runs)} runs |"
        )
    if "all" in shares:
        lines.append(f"| **all** | | | **{shares['all']:+.1%}** | the sum |")
    if found.get("note"):
        lines += ["", found["note"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker process counts")
    parser.add_argument("--parts", action="store_true", help="also measure each part alone")
    parser.add_argument("--prefill", type=int, default=FULL.prefill, help="stored jobs per run")
    parser.add_argument("--attribute", action="store_true", help="each part's own cost instead (see above)")
    parser.add_argument("--drain", metavar="ARM", help=argparse.SUPPRESS)  # one counted drain
    parser.add_argument("--jobs", type=int, default=ATTRIBUTE_JOBS, help="jobs of each counted drain")
    args = parser.parse_args(argv)
    if args.drain:
        drain_once(args.drain, args.jobs)
        return 0
    workers = tuple(int(x) for x in args.workers.split(","))

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.attribute:
        print(attributed_text(attribute(log, args.jobs)))
        return 0
    print(text(run(args.rounds, workers, args.parts, args.prefill, log)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
