"""What the finish NOTIFY costs on PostgreSQL at x4: interleaved A/B runs of claim+complete.

A NOTIFY takes PostgreSQL's global notify-queue lock at commit and writes the notification queue,
whether anyone listens or not. Arms: ``always`` sends a finish NOTIFY for every finished job (jobq
before ``job_waiters``), ``waited`` is jobq as shipped (only for jobs someone waits for: none
here), ``silent`` sends none. Each run: 4 processes, each claiming and completing its share
of ``--jobs`` jobs one at a time, through the per-job API (``claim`` + ``complete``: one statement
each) or the worker's path (``complete_many_and_claim``: one transaction per job). Arms alternate
(each goes first in turn), each on a fresh database, so machine noise falls on both alike.

Run: ``python -m bench.notify_cost [--jobs 4000] [--rounds 4]``; prints jobs/s per run and medians.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import time
from typing import Any

PROCESSES = 4


def _arm(q: Any, arm: str) -> None:
    """``waited``: jobq as shipped (a NOTIFY only for jobs in ``job_waiters``); ``always``: a
    NOTIFY for every finished job (jobq before the waiters table); ``silent``: none at all."""
    d = q.backend.dialect
    call = f"{d.schema}.jobq_notify_waited('{d.done_channel}', %(id)s::bigint)"
    batched = f"{d.schema}.jobq_notify_waited('{d.done_channel}', job_id)"
    if arm == "always":
        d.sql = {
            name: text.replace(call, f"pg_notify('{d.done_channel}', %(id)s::bigint::text)").replace(
                batched, f"pg_notify('{d.done_channel}', job_id::text)"
            )
            for name, text in d.sql.items()
        }
    elif arm == "silent":
        d.sql = {name: text.replace(call, "NULL") for name, text in d.sql.items()}
        d.sql["notify_waited"] = ""  # the batched forms' runner then sends nothing


def _consume(url: str, path: str, arm: str, share: int, go: Any, out: Any) -> None:
    import jobq

    q = jobq.Queue(url)
    _arm(q, arm)
    me = f"w-{multiprocessing.current_process().pid}"
    go.wait()
    started = time.perf_counter()
    done = 0
    if path == "api":
        while done < share:
            job = q.claim(me)
            if job is None:
                break
            q.complete(job, done)
            done += 1
    else:
        job = q.claim(me)
        while job is not None and done < share:
            _, jobs = q.complete_many_and_claim([(job, done)], me, 1 if done + 1 < share else 0)
            done += 1
            job = jobs[0] if jobs else None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put((done, time.perf_counter() - started, usage.ru_utime + usage.ru_stime))
    q.close()


def server_cpu_seconds(port: int) -> float:
    """CPU seconds used so far by every process of the PostgreSQL server on ``port`` (its
    postmaster and the children it forked), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        own = (int(fields[11]) + int(fields[12])) / ticks
        reaped = (int(fields[13]) + int(fields[14])) / ticks  # children that exited (backends)
        stats[int(entry)] = (int(fields[1]), cmd, own, reaped)
    roots = {pid for pid, (_, cmd, _, _) in stats.items() if "postgres" in cmd and f"-p\x00{port}" in cmd}
    return sum(
        own + (reaped if pid in roots else 0.0)
        for pid, (ppid, _, own, reaped) in stats.items()
        if pid in roots or ppid in roots
    )


def run_once(server: Any, name: str, path: str, arm: str, jobs: int) -> tuple[float, float, float]:
    import jobq

    server.fresh_database(name)
    url = f"{server.dsn_base}/{name}"
    with jobq.Queue(url) as q:
        q.enqueue_many(range(jobs))
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_consume, args=(url, path, arm, jobs // PROCESSES, go, out), daemon=True)
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every process import and connect before the clock starts
    before = server_cpu_seconds(server.port)
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    server_cpu = server_cpu_seconds(server.port) - before
    total = sum(n for n, _, _ in results)
    client_cpu = sum(c for _, _, c in results)  # includes each process's start-up (the same in both arms)
    return total / max(s for _, s, _ in results), server_cpu / total * 1e6, client_cpu / total * 1e6


def main() -> None:
    from bench.pg import start_postgres

    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--paths", default="api,worker")
    args = p.parse_args()
    server = start_postgres()
    try:
        arms = ("always", "waited", "silent")
        for path in args.paths.split(","):
            rates: dict[str, list[tuple[float, float, float]]] = {arm: [] for arm in arms}
            for r in range(args.rounds):
                for arm in arms[r % 3 :] + arms[: r % 3]:  # each arm goes first in turn
                    got = run_once(server, f"n_{path}_{arm}_{r}", path, arm, args.jobs)
                    rates[arm].append(got)
                    print(
                        f"{path:6} {arm:6} round {r}: {got[0]:8.0f} jobs/s, server CPU {got[1]:6.0f} us/job, "
                        f"client CPU {got[2]:6.0f} us/job",
                        flush=True,
                    )
            for i, what in enumerate(("jobs/s", "server CPU us/job", "client CPU us/job")):
                medians = {arm: statistics.median(x[i] for x in rates[arm]) for arm in arms}
                print(
                    f"{path:6} median {what}: "
                    + ", ".join(f"{arm} {m:.0f} ({m / medians['silent']:.3f}x of silent)" for arm, m in medians.items())
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
