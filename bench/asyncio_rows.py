"""The asyncio figures of ``make bench``: async handlers at scale, and ``Queue.wait``'s latency.

- ``sleep_1000``: 1,000 jobs whose ``async def`` handler awaits ``asyncio.sleep(1)``, run by one
  worker process (``async_concurrency`` 1,000): seconds from the worker's start to the last
  completion (target <= 2.5 s: the sleeps overlap on one event loop).
- ``wait_p50_ms`` / ``wait_p99_ms``: a thread blocks in ``Queue.wait(job)``; another claims and
  completes the job; the time from ``complete()`` returning (the commit is done) to ``wait``
  returning (woken by NOTIFY / a datagram, then one read of the job). Target: p50 <= 5 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import jobq
from jobq.worker import JobContext, Worker


async def _sleep_one_second(ctx: JobContext) -> int:
    await asyncio.sleep(1)
    return 1


def sleep_1000(url: str, jobs: int = 1000) -> float:
    """Seconds for one worker to finish ``jobs`` jobs that each await a 1 s sleep."""
    with jobq.Queue(url) as q:
        q.enqueue_many([{}] * jobs, task="sleep")
        worker = Worker(q, {"sleep": _sleep_one_second}, async_concurrency=jobs, exit_when_idle=True)
        began = time.perf_counter()
        worker.run()
        took = time.perf_counter() - began
        done = q.counts()["COMPLETED"]
    if done != jobs:
        raise RuntimeError(f"only {done} of {jobs} jobs completed")
    return took


def wait_latency(url: str, samples: int = 200) -> list[float]:
    """Milliseconds from a completion's commit to ``wait`` returning, ``samples`` times."""
    out: list[float] = []
    with jobq.Queue(url) as q, jobq.Queue(url) as waiter:
        for _ in range(samples):
            job_id = q.enqueue({})
            returned: list[float] = []
            ready = threading.Event()

            def wait(job_id: int = job_id, returned: list[float] = returned, ready: threading.Event = ready) -> None:
                ready.set()
                waiter.wait(job_id, timeout=30)
                returned.append(time.perf_counter())

            thread = threading.Thread(target=wait)
            thread.start()
            ready.wait()
            time.sleep(0.005)  # let the waiter read the job and go to sleep on its channel
            # One claim: a waiter's read (FOR KEY SHARE on PostgreSQL) never makes it pass over the job.
            job = q.claim("bench")
            if job is None:
                raise RuntimeError(f"job {job_id} was not claimed while its waiter waited")
            q.complete(job, 1)
            committed = time.perf_counter()
            thread.join(30)
            out.append((returned[0] - committed) * 1000)
    return out


def measure_asyncio(workdir: str, pg: Any, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    stores = [("sqlite", f"sqlite:///{workdir}/asyncio.db")]
    if pg is not None:
        pg.fresh_database("jobq_asyncio")
        stores.append(("postgres", f"{pg.dsn_base}/jobq_asyncio"))
    out: dict[str, Any] = {}
    for name, url in stores:
        took = sleep_1000(url)
        waits = sorted(wait_latency(url, 50 if quick else 200))
        out[name] = {
            "sleep_1000_s": took,
            "wait_p50_ms": statistics.median(waits),
            "wait_p99_ms": waits[int(len(waits) * 0.99) - 1],
        }
        log(f"asyncio {name}: {out[name]}")
    return out


def text(results: dict[str, Any]) -> str:
    lines = [
        "| store | 1,000 jobs awaiting `asyncio.sleep(1)`, one worker (s) | `wait` after commit p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['sleep_1000_s']:.2f} | {r['wait_p50_ms']:.2f} | {r['wait_p99_ms']:.2f} |")
    return "\n".join(lines)
