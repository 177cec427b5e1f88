"""CPU per call of jobq's per-job API on SQLite, against the same statements sent straight to apsw.

Issue 13: a per-job claim+complete runs the minimal transactions' six statements, so what is left
between jobq and raw SQLite is Python. Wall time on a shared machine is noise; the CPU seconds of
the process (``resource.getrusage``, user and system) far less so. Each measurement runs in a
fresh process on a fresh database file: ``jobq`` (``claim`` + ``complete``, ``enqueue``) and
``floor`` (the very statements jobq sent, captured with apsw's trace, run directly: the same
schema, indexes and rows, no library). ``--against SRC`` adds another jobq source tree (e.g.
``git archive main src | tar -x -C /tmp/main``, then ``--against /tmp/main/src``), run
interleaved with this one, so the machine's noise falls on both alike.

Run: ``python -m bench.hotpath [--jobs 5000] [--rounds 3] [--synchronous NORMAL] [--against SRC]``.
Deterministic counts of the same loops: ``valgrind --tool=callgrind`` on ``--one ARM``, and the
Python calls per call in tests/integration/test_python_costs.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.core import make_payload


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _measure(arm: str, jobs: int, synchronous: str) -> dict[str, float]:
    """µs of CPU per claimed+completed job and per enqueue, in this process."""
    import jobq

    payloads = [make_payload(n) for n in range(jobs + 10)]
    with tempfile.TemporaryDirectory() as d, jobq.Queue(f"sqlite:///{d}/q.db?synchronous={synchronous}") as q:
        q.enqueue_many(payloads)
        conn: Any = q.backend._connect()  # type: ignore[attr-defined]
        seen: list[str] = []
        conn.exec_trace = lambda _c, sql, _b: seen.append(sql) is None
        job = q.claim("bench")
        assert job is not None
        q.complete(job)
        q.enqueue(payloads[0])
        conn.exec_trace = None
        claim_sql = next(s for s in seen if s.lstrip().startswith("UPDATE jobs SET status = 'PROCESSING'"))
        complete_sql = next(s for s in seen if "'COMPLETED'" in s)
        insert_sql = next(s for s in seen if s.lstrip().startswith("INSERT INTO jobs"))
        out: dict[str, float] = {}
        t0 = _cpu()
        if arm == "jobq":
            for _ in range(jobs):
                q.complete(q.claim("bench"))  # type: ignore[arg-type]
        else:
            for _ in range(jobs):
                now = time.time()
                conn.execute("BEGIN IMMEDIATE")
                params = {"worker": "bench", "nonce": os.urandom(12).hex(), "now": now, "expires": now + 30}
                row = conn.execute(claim_sql, {**params, "limit": 1, "q0": "default"}).fetchall()[0]
                conn.execute("COMMIT")
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(complete_sql, {"now": time.time(), "result": None, "id": row[0], "token": row[16]})
                conn.execute("COMMIT")
        out["claim+complete"] = 1e6 * (_cpu() - t0) / jobs
        encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
        t0 = _cpu()
        if arm == "jobq":
            for p in payloads[:jobs]:
                q.enqueue(p)
        else:
            for p in payloads[:jobs]:
                # jobq's insert_job_alone: one INSERT in autocommit, bound by position.
                now = time.time()
                conn.execute(insert_sql, ("default", "", encoder.encode(p), 0, now, 3, None, now, None)).fetchall()
        out["enqueue"] = 1e6 * (_cpu() - t0) / jobs
        return out


def _run(arm: str, src: str | None, jobs: int, synchronous: str) -> dict[str, float]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, os.getcwd()])
    args = [sys.executable, "-m", "bench.hotpath", "--one", arm, "--jobs", str(jobs), "--synchronous", synchronous]
    result: dict[str, float] = json.loads(subprocess.run(args, env=env, check=True, capture_output=True).stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synchronous", default="NORMAL")
    parser.add_argument("--against", metavar="SRC", help="another jobq source tree, run interleaved")
    parser.add_argument("--one", choices=("jobq", "floor"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(args.one, args.jobs, args.synchronous)))
        return
    arms: list[tuple[str, str, str | None]] = [("jobq (this tree)", "jobq", None), ("floor", "floor", None)]
    if args.against:
        arms.insert(1, (f"jobq ({args.against})", "jobq", args.against))
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in arms}
    for r in range(args.rounds):
        for label, arm, src in arms[r % len(arms) :] + arms[: r % len(arms)]:  # each goes first in turn
            runs[label].append(_run(arm, src, args.jobs, args.synchronous))
    print(f"CPU µs per call (user + system, median of {args.rounds}; synchronous={args.synchronous})")
    print(f"{'':40s} {'claim+complete':>15s} {'enqueue':>10s}")
    for label, results in runs.items():
        cc = statistics.median(r["claim+complete"] for r in results)
        enq = statistics.median(r["enqueue"] for r in results)
        print(f"{label:40s} {cc:15.1f} {enq:10.1f}")


if __name__ == "__main__":
    main()
