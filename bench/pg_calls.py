"""``python -m bench.pg_calls``: what jobq's PostgreSQL worker calls cost, on the server and per call.

Issue 13 measurements, each on a private server (``bench.pg``) started with ``pg_stat_statements``:

- ``--statements``: the server's mean execution time and WAL bytes of jobq's claim and completion
  statements against the raw SKIP LOCKED ones (``bench.adapters.raw_postgres``), the statements
  sent one after the other, call by call, on warm connections (planning excluded: a statement is
  planned a few times, then its generic plan is reused);
- ``--worker-calls``: wall time per ``Queue.complete_many_and_claim`` (the worker's completions
  and next claim) for groups of 1 and 8 jobs, p50.

Run: ``python -m bench.pg_calls [--statements] [--worker-calls] [--calls 1500]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from bench.adapters import raw_postgres as raw
from bench.pg import PgServer, start_postgres

STATS_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "top",
}


def _statements(server: PgServer, calls: int) -> list[tuple[str, float, float]]:
    """(label, server µs per call, WAL bytes per call) of each statement, `calls` times each."""
    import psycopg

    import jobq

    server.fresh_database("raw")
    server.fresh_database("jq")
    rc = psycopg.connect(f"{server.dsn_base}/raw", autocommit=True)
    rc.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    for statement in raw.SCHEMA:
        rc.execute(statement)
    now = time.time()
    rc.execute(raw.INSERT_MANY, (now, now, now, json.dumps([json.dumps({"i": i}) for i in range(calls + 10)])))
    q = jobq.Queue(f"{server.dsn_base}/jq")
    q.enqueue_many([{"i": i} for i in range(calls + 10)])
    first = q.claim("w")  # connections and the schema made before the count starts
    assert first is not None
    q.complete(first)
    rc.execute("SELECT pg_stat_statements_reset()")
    for _ in range(calls):
        now = time.time()
        rows = rc.execute("/* raw claim */ " + raw.CLAIM, ("o", now, now, 1)).fetchall()
        rc.execute("/* raw complete */ " + raw.COMPLETE, (time.time(), rows[0][0], "o"))
        job = q.claim("w")
        assert job is not None
        q.complete(job)
    out = []
    for _db, query, mean_ms, wal, n in rc.execute(
        "SELECT d.datname, s.query, s.mean_exec_time, s.wal_bytes, s.calls FROM pg_stat_statements AS s"
        " JOIN pg_database AS d ON d.oid = s.dbid WHERE s.calls >= %s ORDER BY d.datname, s.mean_exec_time DESC",
        (calls,),
    ).fetchall():
        text = " ".join(str(query).split())
        name = text[3 : text.index("*/")].strip() if text.startswith("/*") else _jobq_name(q, text)
        out.append((name, 1000 * float(mean_ms), float(wal) / int(n)))
    q.close()
    rc.close()
    return out


def _jobq_name(q: object, text: str) -> str:
    """Which of jobq's per-job statements ``text`` (as pg_stat_statements shows it) is."""
    sql = q.backend.dialect.sql  # type: ignore[attr-defined]
    for name in ("claim_flagged", "complete_one"):
        if " ".join(sql[name].split())[:20] == text[:20]:
            return f"jobq: {name}"
    return f"jobq: {text[:60]}..."


def _worker_calls(server: PgServer, calls: int) -> list[tuple[int, float]]:
    """(group size, p50 µs per ``complete_many_and_claim``)."""
    import jobq

    out = []
    for k in (1, 8):
        server.fresh_database(f"calls{k}")
        q = jobq.Queue(f"{server.dsn_base}/calls{k}")
        q.enqueue_many([{"i": i} for i in range(calls + 2 * k)])
        held = q.claim_many("w", k)
        took = []
        for _ in range(calls // k):
            t0 = time.perf_counter()
            done, held = q.complete_many_and_claim([(j, {"r": 1}) for j in held], "w", k)
            took.append(time.perf_counter() - t0)
            assert all(done)
        out.append((k, 1e6 * statistics.median(took)))
        q.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_calls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", action="store_true", help="server time per statement (pg_stat_statements)")
    parser.add_argument("--worker-calls", action="store_true", help="complete_many_and_claim per call")
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args(argv)
    both = not (args.statements or args.worker_calls)
    server = start_postgres(settings=STATS_SETTINGS)
    try:
        print(f"PostgreSQL {server.version}, pid {os.getpid()}")
        if args.statements or both:
            print("\n| statement | server µs per call | WAL bytes per call |\n|---|---:|---:|")
            for label, micros, wal in _statements(server, args.calls):
                print(f"| {label} | {micros:.0f} | {wal:.0f} |")
        if args.worker_calls or both:
            print("\n| jobs a call | complete_many_and_claim, p50 µs |\n|---:|---:|")
            for k, micros in _worker_calls(server, args.calls):
                print(f"| {k} | {micros:.0f} |")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
