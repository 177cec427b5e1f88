"""``python -m bench.pg_calls``: what jobq's PostgreSQL worker calls cost, on the server and per call.

Issue 13 measurements, each on a private server (``bench.pg``) started with ``pg_stat_statements``:

- ``--statements``: the server's mean execution time and WAL bytes of jobq's claim and completion
  statements against the raw SKIP LOCKED ones (``bench.adapters.raw_postgres``), the statements
  sent one after the other, call by call, on warm connections (planning excluded: a statement is
  planned a few times, then its generic plan is reused);
- ``--worker-calls``: wall time per ``Queue.complete_many_and_claim`` (the worker's completions
  and next claim) for groups of 1 and 8 jobs, p50;
- ``--anatomy``: where the per-job gap between jobq and raw goes. On the server: raw's claim and
  completion statements on raw's table, then on a table with jobq's columns (``LIKE jobs``), then
  on one with jobq's indexes as well (``INCLUDING ALL``: the columns and indexes of the schema as
  it stands, never a copy that could drift), against jobq's own statements, and jobq's completion
  without its waiter check (the ``jobq_notify_waited`` call) — all sent interleaved, call by call.
  On the client: CPU per claim+complete of raw's statements through psycopg and of jobq's API
  (``synchronous_commit=off``), and the Python calls per job of each layer (cProfile's counts:
  exact, unlike its times).

Run: ``python -m bench.pg_calls [--statements] [--worker-calls] [--anatomy] [--calls 1500]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import statistics
import sys
import time
from typing import Any

from bench.adapters import raw_postgres as raw
from bench.pg import PgServer, start_postgres

STATS_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "top",
}


def _fill_raw(conn: Any, jobs: int) -> None:
    """``jobs`` pending jobs in raw's ``jobs`` table (the one ``conn``'s search_path finds)."""
    now = time.time()
    conn.execute(raw.INSERT_MANY, (now, now, now, json.dumps([json.dumps({"i": i}) for i in range(jobs)])))


def _raw_database(server: PgServer, name: str, jobs: int) -> Any:
    """A fresh database ``name`` with raw's schema and ``jobs`` pending jobs: its connection."""
    import psycopg

    server.fresh_database(name)
    conn = psycopg.connect(f"{server.dsn_base}/{name}", autocommit=True)
    for statement in raw.SCHEMA:
        conn.execute(statement)
    _fill_raw(conn, jobs)
    return conn


def _statements(server: PgServer, calls: int) -> list[tuple[str, float, float]]:
    """(label, server µs per call, WAL bytes per call) of each statement, `calls` times each."""
    import jobq

    server.fresh_database("jq")
    rc = _raw_database(server, "raw", calls + 10)
    rc.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
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


ANATOMY_TABLES = (
    ("raw", None),
    ("jobq's columns", "LIKE jobq.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS"),
    ("jobq's columns and indexes", "LIKE jobq.jobs INCLUDING ALL"),
)
"""The tables raw's statements run on in ``--anatomy``: (label, CREATE TABLE body or None for
raw's own schema). The copies carry no trigger (LIKE copies none): the trigger's cost is in
jobq's own rows. Until PostgreSQL schema 18 they also carried the table's two CHECKs, which the
executor plans anew in every statement that writes a row: the "columns" row showed their ~25 µs a
statement, not the columns' ~2 (docs/benchmarks.md, 2026-12-08). Now the columns' types (domains)
carry those checks, planned once a session."""
NO_WAITER_CHECK = "/* jobq complete_one, no waiter check */ "


def without_waiter_check(complete_one: str) -> str:
    """``complete_one`` without its waiter check (the ``jobq_notify_waited`` call), named apart by a
    comment: the same statement but for that call."""
    check = r"count\(CASE WHEN .*?jobq_notify_waited\(.*?\) ELSE 0 END\) AS n"
    without = re.sub(check, "count(*) AS n", complete_one)
    if without == complete_one:
        raise RuntimeError("complete_one has no waiter check to take out")
    return NO_WAITER_CHECK + without


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _anatomy_server(server: PgServer, calls: int) -> list[tuple[str, float, float, float, float]]:
    """(step, claim µs, claim WAL bytes, completion µs, completion WAL bytes) per call, server side."""
    import psycopg

    import jobq

    server.fresh_database("anatomy")
    dsn = f"{server.dsn_base}/anatomy"
    q = jobq.Queue(dsn)
    q.enqueue_many([{"i": i} for i in range(2 * calls + 10)])
    first = q.claim("w")
    assert first is not None
    q.complete(first)
    conns = []
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for n, (_label, like) in enumerate(ANATOMY_TABLES):
            admin.execute(f"CREATE SCHEMA anatomy_{n}")
            c = psycopg.connect(dsn, autocommit=True, options=f"-c search_path=anatomy_{n}")
            if like is None:
                for statement in raw.SCHEMA:
                    c.execute(statement)
            else:
                c.execute(f"CREATE TABLE jobs ({like})")
                if "INCLUDING ALL" not in like:  # raw's indexes: the primary key and the claim's
                    c.execute("ALTER TABLE jobs ADD PRIMARY KEY (id)")
                    c.execute(raw.SCHEMA[1])
            _fill_raw(c, calls + 10)
            conns.append(c)
        # jobq's completion without its waiter check: the same statement but for the call (a
        # comment names it apart in pg_stat_statements). The dialect is shared by every queue of
        # this schema in the process: swapped per call, restored after.
        sql = q.backend.dialect.sql  # type: ignore[attr-defined]
        with_check = sql["complete_one"]
        without = without_waiter_check(with_check)
        admin.execute("SELECT pg_stat_statements_reset()")
        try:
            for _ in range(calls):
                for n, c in enumerate(conns):
                    now = time.time()
                    rows = c.execute(f"/* {n} claim */ " + raw.CLAIM, ("o", now, now, 1)).fetchall()
                    c.execute(f"/* {n} complete */ " + raw.COMPLETE, (time.time(), rows[0][0], "o"))
                for statement in (with_check, without):
                    job = q.claim("w")
                    assert job is not None
                    sql["complete_one"] = statement
                    q.complete(job)
        finally:
            sql["complete_one"] = with_check
        stats: dict[str, tuple[float, float]] = {}
        for query, mean_ms, wal, n_calls in admin.execute(
            "SELECT query, mean_exec_time, wal_bytes, calls FROM pg_stat_statements WHERE calls >= %s", (calls,)
        ).fetchall():
            text = " ".join(str(query).split())
            name = text[3 : text.index("*/")].strip() if text.startswith("/*") else _jobq_name(q, text)
            stats[name] = (1000 * float(mean_ms), float(wal) / int(n_calls))
    for c in conns:
        c.close()
    q.close()
    out = []
    for n, (label, _like) in enumerate(ANATOMY_TABLES):
        out.append((f"raw statements, {label}", *stats[f"{n} claim"], *stats[f"{n} complete"]))
    jobq_rows = (*stats["jobq: claim_flagged"], *stats["jobq: complete_one"])
    out.append(("jobq's statements (claim_flagged, complete_one)", *jobq_rows))
    no_check = NO_WAITER_CHECK[3:-4].strip()
    out.append(("jobq's completion without the waiter check", float("nan"), float("nan"), *stats[no_check]))
    return out


def _layer(filename: str) -> str:
    for name in ("psycopg_pool", "psycopg"):
        if f"/{name}/" in filename:
            return name
    return "jobq" if "/jobq/" in filename else "other"


def _anatomy_client(server: PgServer, calls: int, rounds: int = 5) -> dict[str, Any]:
    """CPU µs per claim+complete (median of rounds, the two arms interleaved) and Python calls per
    job by layer, of raw's statements through psycopg and of jobq's API, at synchronous_commit=off."""
    import cProfile
    import pstats

    import psycopg

    import jobq

    total = (rounds + 1) * calls + 10
    rc = _raw_database(server, "anatomy_raw", total)
    rc.execute("SET synchronous_commit = off")
    server.fresh_database("anatomy_jobq")
    q = jobq.Queue(f"{server.dsn_base}/anatomy_jobq")
    with psycopg.connect(f"{server.dsn_base}/anatomy_jobq", autocommit=True) as admin:
        admin.execute("ALTER DATABASE anatomy_jobq SET synchronous_commit = off")
    q.enqueue_many([{"i": i} for i in range(total)])

    def raw_job() -> None:
        t = time.time()
        rows = rc.execute(raw.CLAIM, ("o", t, t, 1)).fetchall()
        rc.execute(raw.COMPLETE, (time.time(), rows[0][0], "o"))

    def jobq_job() -> None:
        job = q.claim("w")
        assert job is not None
        q.complete(job)

    arms = {"raw statements through psycopg": raw_job, "jobq's API (Queue.claim, Queue.complete)": jobq_job}
    for arm in arms.values():  # warm: statements prepared, pool filled
        for _ in range(20):
            arm()
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name, arm in arms.items() if r % 2 == 0 else reversed(arms.items()):
            start = _cpu()
            for _ in range(calls):
                arm()
            cpu[name].append(1e6 * (_cpu() - start) / calls)
    counted: dict[str, dict[str, float]] = {}
    for name, arm in arms.items():
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(200):
            arm()
        profile.disable()
        layers: collections.Counter[str] = collections.Counter()
        for (filename, _line, _func), (_cc, n_calls, *_rest) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
            layers[_layer(filename)] += n_calls
        counted[name] = {layer: n / 200 for layer, n in layers.items()}
    q.close()
    rc.close()
    return {name: (statistics.median(cpu[name]), counted[name]) for name in arms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_calls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", action="store_true", help="server time per statement (pg_stat_statements)")
    parser.add_argument("--worker-calls", action="store_true", help="complete_many_and_claim per call")
    parser.add_argument("--anatomy", action="store_true", help="where jobq's per-job gap to raw goes")
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args(argv)
    both = not (args.statements or args.worker_calls or args.anatomy)
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
        if args.anatomy:
            print(
                "\n| on the server, per call | claim µs | claim WAL B | completion µs | completion WAL B |"
                "\n|---|---:|---:|---:|---:|"
            )
            for label, claim_us, claim_wal, done_us, done_wal in _anatomy_server(server, args.calls):
                cells = [f"{x:.0f}" if x == x else "—" for x in (claim_us, claim_wal, done_us, done_wal)]
                print(f"| {label} | {' | '.join(cells)} |")
            print(
                "\n| on the client, per claim+complete | CPU µs (median) | Python calls: jobq | psycopg "
                "| psycopg_pool | other |\n|---|---:|---:|---:|---:|---:|"
            )
            for label, (micros, layers) in _anatomy_client(server, args.calls).items():
                parts = " | ".join(f"{layers.get(k, 0):.0f}" for k in ("jobq", "psycopg", "psycopg_pool", "other"))
                print(f"| {label} | {micros:.0f} | {parts} |")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
