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
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
from typing import Any

from bench.core import FULL, Bench, System

WORKER = "bench.adapters.jobq_worker:JobqWorker"
PARTS = ("logs", "progress", "exporter")
OVERHEAD_ROUNDS = 6
"""Rounds of ``make bench``'s overhead section (each: plain and observed, at x1, x2 and x4, in
alternating order): ~6 minutes. The machine's speed moved the plain worker's CPU per job by
+-20 % between rounds here; three rounds left a 3 % target to chance."""
OVERHEAD_PREFILL = 100_000
"""Jobs per run in ``make bench``'s overhead section: at ~25,000 jobs/s the bench's 20,000 made
sub-second runs, in which one scrape more or less moved the figures by several percent."""


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker process counts")
    parser.add_argument("--parts", action="store_true", help="also measure each part alone")
    parser.add_argument("--prefill", type=int, default=FULL.prefill, help="stored jobs per run")
    args = parser.parse_args(argv)
    workers = tuple(int(x) for x in args.workers.split(","))

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print(text(run(args.rounds, workers, args.parts, args.prefill, log)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
