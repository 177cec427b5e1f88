"""``python -m bench.lock_share``: how writers share SQLite's one write lock.

Each round, on a fresh SQLite file (``synchronous=FULL``, the default):
- ``batch``: ``--workers`` processes each run ``jobq.worker.Worker(batch=100)`` with a no-op
  handler on a backlog of ``--jobs`` jobs, while this process enqueues one job every 5 ms (a
  producer beside a backlog being drained). Prints the workers' jobs/s, the machine's idle share
  over the drain (``/proc/stat``) and the producer's enqueue latency (p50, p99, max);
- ``per-job``: ``--workers`` processes each loop ``claim`` then ``complete`` (the per-job API) on
  a backlog of ``--per-job-jobs``.

Kinds alternate round by round. To compare two trees, alternate runs with ``PYTHONPATH=<other
tree>/src`` (the worker processes inherit it). Numbers move by 10-20 % run to run on a shared
machine; compare medians of several rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from bench.core import percentile

PRODUCER_PAUSE_SECONDS = 0.005


def child(kind: str, url: str) -> None:
    """One worker process: ready, wait for the start, drain, report ``jobs cpu_seconds end``."""
    from jobq import Queue
    from jobq.worker import Worker

    q = Queue(url)
    q.counts()  # opened before the start
    done = [0]

    def noop(ctx: Any) -> None:
        done[0] += 1

    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    if kind == "batch":
        Worker(q, noop, concurrency=1, batch=100, name="lock-share", exit_when_idle=True).run()
    else:
        worker_id = f"lock-share-{os.getpid()}"
        while (job := q.claim(worker_id)) is not None:
            q.complete(job)
            done[0] += 1
    print(done[0], time.process_time() - cpu, time.time(), flush=True)
    q.close()


def _machine() -> tuple[int, int]:
    """(all, idle) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return sum(fields), fields[3] + fields[4]


def run_once(kind: str, jobs: int, workers: int) -> dict[str, float]:
    from jobq import Queue

    workdir = tempfile.mkdtemp(prefix="jobq-lock-share-")
    try:
        url = f"sqlite:///{workdir}/q.db"
        with Queue(url) as q:
            for start in range(0, jobs, 1000):
                q.enqueue_many([{"n": n, "pad": "x" * 80} for n in range(start, min(jobs, start + 1000))])
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.lock_share", "--child", kind, url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(workers)
        ]
        try:
            for p in procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            latencies: list[float] = []
            stop = threading.Event()
            producer = Queue(url)
            producer.counts()

            def produce() -> None:
                while not stop.is_set():
                    began = time.perf_counter()
                    producer.enqueue({"producer": True})
                    latencies.append(time.perf_counter() - began)
                    stop.wait(PRODUCER_PAUSE_SECONDS)

            thread = threading.Thread(target=produce) if kind == "batch" else None
            machine = _machine()
            started = time.time()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            if thread:
                thread.start()
            reports = []
            for p in procs:
                assert p.stdout is not None
                reports.append(p.stdout.readline().split())
            machine_after = _machine()
            stop.set()
            if thread:
                thread.join()
            producer.close()
        finally:
            for p in procs:
                p.wait(60)
        done = sum(int(r[0]) for r in reports)
        ended = max(float(r[2]) for r in reports)
        result = {
            "jobs_per_second": done / (ended - started),
            "cpu_us_per_job": sum(float(r[1]) for r in reports) * 1e6 / done,
            "idle": (machine_after[1] - machine[1]) / max(1, machine_after[0] - machine[0]),
        }
        if latencies:
            latencies.sort()
            result["enqueues"] = len(latencies)
            result["p50_ms"] = percentile(latencies, 50) * 1e3
            result["p99_ms"] = percentile(latencies, 99) * 1e3
            result["max_ms"] = latencies[-1] * 1e3
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lock_share", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=150_000, help="backlog of a batch round")
    parser.add_argument("--per-job-jobs", type=int, default=10_000, help="backlog of a per-job round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    rows: dict[str, list[dict[str, float]]] = {"batch": [], "per-job": []}
    for n in range(args.rounds):
        for kind in rows:
            r = run_once(kind, args.jobs if kind == "batch" else args.per_job_jobs, args.workers)
            rows[kind].append(r)
            print(f"round {n + 1} {kind}: " + ", ".join(f"{k} {v:,.3g}" for k, v in r.items()), flush=True)
    for kind, results in rows.items():
        medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(f"median {kind} x{args.workers}: " + ", ".join(f"{k} {v:,.3g}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
