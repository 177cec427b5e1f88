"""The flow-control figures of ``make bench`` (docs/flow-control.md): a queue with 20,000 due jobs
and a concurrency limit of 4.

- ``claim_p50_ms`` / ``claim_p99_ms``: six claimer processes claim one job at a time from the
  limited queue and complete it (waiting 5 ms after an empty claim, as a worker waits for a wake-up);
  every claim is timed, the ones that came back empty because the limit was reached included
  (target p99 <= 20 ms).
- ``idle_cpu_pct``: a real worker process of that queue while the limit is taken by jobs another
  process holds (so all 20,000 jobs are due and none may be claimed): its CPU time over the
  window, from ``/proc/<pid>/stat`` (target < 2%: it sleeps until a wake-up or its poll, it does
  not spin on the due jobs).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jobq
from bench.core import cpu_percent

DUE_JOBS = 20_000
LIMIT = 4
CLAIMERS = 6
QUEUE = "limited"

# A claimer process: claim one job, complete it; at the limit (an empty claim) wait 5 ms, as a worker
# would wait for a wake-up or its poll. Prints its claim times (ms) as JSON.
_CLAIMER = """
import json, sys, time
import jobq
q = jobq.Queue(sys.argv[1])
times = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    jobs = q.claim_many(sys.argv[3], 1, queue="limited")
    times.append((time.perf_counter() - t0) * 1000)
    if jobs:
        q.complete(jobs[0])
    else:
        time.sleep(0.005)
print(json.dumps(times))
"""

_WORKER = """
import sys, time
import jobq
from jobq.worker import Worker
q = jobq.Queue(sys.argv[1])
Worker(q, lambda ctx: time.sleep(0.001), queues=["limited"], concurrency=4).run()
"""


def _fill(url: str, jobs: int) -> None:
    with jobq.Queue(url) as q:
        for start in range(0, jobs, 1000):
            q.enqueue_many([{"n": i} for i in range(start, min(jobs, start + 1000))], queue=QUEUE)
        q.set_limits(QUEUE, concurrency=LIMIT, actor="bench")


def claim_latency(url: str, claims: int) -> list[float]:
    """Milliseconds per claim call of ``CLAIMERS`` processes, ``claims`` calls each."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _CLAIMER, url, str(claims), f"claimer-{n}"], stdout=subprocess.PIPE)
        for n in range(CLAIMERS)
    ]
    times: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"a claimer failed (exit {proc.returncode})")
        times += json.loads(out)
    return sorted(times)


def idle_cpu(url: str, seconds: float) -> float:
    """CPU % of a worker of the limited queue while its limit is held by another process's jobs."""
    with jobq.Queue(url) as holder:
        held = holder.claim_many("holder", LIMIT, queue=QUEUE, lease=3600)
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, url])
        try:
            time.sleep(2.0)  # start-up (imports, registration) is not idleness
            return cpu_percent(proc.pid, seconds)
        finally:
            proc.terminate()
            proc.wait(30)
            holder.release_many(held, reason="bench done")


def measure_flow(workdir: str, pg: Any, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    stores = [("sqlite", f"sqlite:///{workdir}/flow.db")]
    if pg is not None:
        pg.fresh_database("jobq_flow")
        stores.append(("postgres", f"{pg.dsn_base}/jobq_flow"))
    out: dict[str, Any] = {}
    for name, url in stores:
        _fill(url, DUE_JOBS)
        times = claim_latency(url, 100 if quick else 400)
        cpu = idle_cpu(url, 3.0 if quick else 10.0)
        out[name] = {
            "claim_p50_ms": statistics.median(times),
            "claim_p99_ms": times[max(0, int(len(times) * 0.99) - 1)],
            "claims": len(times),
            "idle_cpu_pct": cpu,
        }
        log(f"flow {name}: {out[name]}")
    return out


def text(results: dict[str, Any]) -> str:
    lines = [
        f"{DUE_JOBS:,} due jobs in a queue limited to {LIMIT} running at once; {CLAIMERS} claimer "
        "processes claim one job at a time and complete it, every claim timed (empty ones at the "
        "limit included); then one worker process idles at the limit.",
        "",
        "| store | claims timed | claim p50 (ms) | claim p99 (ms) | idle worker at the limit, CPU (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        p50, p99, cpu = r["claim_p50_ms"], r["claim_p99_ms"], r["idle_cpu_pct"]
        lines.append(f"| {name} | {r['claims']:,} | {p50:.2f} | {p99:.2f} | {cpu:.2f} |")
    return "\n".join(lines)
