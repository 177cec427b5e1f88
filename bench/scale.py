"""The scale section of ``make bench``: does jobq slow down when the table is big?

For each backend, two stores: a small one (20,000 stored jobs) and a big one (10,000,000; 1,000,000
under ``--quick``), both holding ``pending`` PENDING jobs on top of finished history (mostly
COMPLETED, 1% FAILED, 1% CANCELLED, spread over the past 30 days). On each, in one process:

- claim+complete with the per-job API (``q.claim`` then ``q.complete``) for ``jobs`` jobs or
  ``seconds``, whichever ends first: jobs/s, and the p99 of the claim calls' latency. Without an
  fsync per commit (SQLite ``synchronous=NORMAL``, PostgreSQL ``synchronous_commit=off``): the
  flush time of a disk shared with other processes varied by half between rounds and hid what
  this section is about, the work that grows with the table (index depth, plans, cache misses);
- the read side at that size: ``stats()``, and each query of the ops page (``history`` of the
  last hour, the latest jobs, the recent events, the workers), median of ``READ_REPEATS`` calls.

The stores are filled by one ``INSERT ... SELECT`` per chunk from a recursive CTE (SQLite) or
``generate_series`` (PostgreSQL), never through the API: 10 million jobs through the API would
take hours. The fill writes no ``job_events`` rows for the history (the queries on that table
read an indexed window of it, so its size does not change them), and runs ``VACUUM ANALYZE`` on
PostgreSQL as autovacuum would have.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

#: Finished history spans this far back (history and stats read recent windows of it).
HISTORY_SPAN_SECONDS = 30 * 86_400.0
#: Rows per INSERT ... SELECT: SQLite's WAL holds one chunk before the checkpoint.
FILL_CHUNK_ROWS = 500_000
READ_REPEATS = 5
#: Claim+complete runs in this many alternating rounds per size.
ROUNDS = 5
#: The targets (issue 13): big within this fraction of small; reads under this.
SLOWDOWN_TARGET = 0.20
READ_TARGET_MS = 200.0


@dataclasses.dataclass(frozen=True)
class ScaleSizes:
    small: int
    big: int
    pending: int
    jobs: int
    seconds: float


SCALE_FULL = ScaleSizes(small=20_000, big=10_000_000, pending=100_000, jobs=5_000, seconds=10.0)
SCALE_QUICK = ScaleSizes(small=20_000, big=1_000_000, pending=10_000, jobs=1_500, seconds=4.0)


@dataclasses.dataclass
class ScaleResult:
    """One backend at one size."""

    backend: str
    stored: int
    fill_seconds: float = 0.0
    jobs_per_second: float | None = None
    claim_p99_ms: float | None = None
    reads_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    note: str = ""


# -- filling ------------------------------------------------------------------------------------
_COLUMNS = (
    "queue, task, payload, status, priority, run_at, attempts, max_attempts, created_at, updated_at,"
    " started_at, finished_at, last_error, rev"
)


def _row_sql(i: str, history: int, now: float) -> str:
    """The SELECT list of one generated job ``i`` (1-based): the first ``history`` are finished
    (1% FAILED, 1% CANCELLED, the rest COMPLETED) at evenly spread times; the rest are PENDING."""
    t = f"({now - HISTORY_SPAN_SECONDS} + ({i}) * {HISTORY_SPAN_SECONDS / max(history, 1)})"
    finished = f"({i}) <= {history}"
    status = (
        f"CASE WHEN NOT ({finished}) THEN 'PENDING' WHEN mod({i}, 100) = 7 THEN 'FAILED'"
        f" WHEN mod({i}, 100) = 8 THEN 'CANCELLED' ELSE 'COMPLETED' END"
    )
    payload = f'\'{{"n": \' || ({i}) || \', "path": "data/files/job.txt", "pad": "scale"}}\''
    return (
        f"'default', '', {payload}, {status}, 0,"
        f" CASE WHEN {finished} THEN {t} ELSE {now} - 1 END,"  # run_at: pending jobs are due
        f" CASE WHEN {finished} THEN 1 ELSE 0 END, 3,"
        f" {t} - 5, CASE WHEN {finished} THEN {t} + 0.01 ELSE {t} - 5 END,"
        f" CASE WHEN {finished} THEN {t} END, CASE WHEN {finished} THEN {t} + 0.01 END,"
        f" CASE WHEN ({finished}) AND mod({i}, 100) = 7 THEN 'ValueError: scale' END, 2"
    )


def fill_sqlite(path: str, total: int, pending: int) -> float:
    """Create a jobq database at ``path`` holding ``total`` jobs; returns the seconds it took."""
    import apsw

    import jobq

    t0 = time.perf_counter()
    jobq.Queue(f"sqlite:///{path}").close()  # the schema, by jobq's own migrations
    conn = apsw.Connection(path)
    conn.execute("PRAGMA synchronous = OFF")
    history, now = total - pending, time.time()
    for start in range(0, total, FILL_CHUNK_ROWS):
        end = min(total, start + FILL_CHUNK_ROWS)
        conn.execute(
            f"INSERT INTO jobs ({_COLUMNS}) WITH RECURSIVE c(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM c"
            f" WHERE i < ?) SELECT {_row_sql('i', history, now)} FROM c",
            (start + 1, end),
        )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - t0


def fill_postgres(url: str, total: int, pending: int) -> float:
    import psycopg

    import jobq
    from jobq.backends.postgres.url import split_url

    t0 = time.perf_counter()
    jobq.Queue(url).close()
    history, now = total - pending, time.time()
    options = split_url(url)
    with psycopg.connect(options.libpq_url, autocommit=True) as conn:
        # jobq's tables live in a schema of their own (``?schema=``, default ``jobq``).
        conn.execute(f"SET search_path TO {options.schema}".encode())
        for start in range(0, total, FILL_CHUNK_ROWS * 4):
            end = min(total, start + FILL_CHUNK_ROWS * 4)
            rows = f"SELECT {_row_sql('i', history, now)} FROM generate_series(%s::bigint, %s::bigint) i"
            sql = f"INSERT INTO jobs ({_COLUMNS}) {rows}"
            conn.execute(sql.encode(), (start + 1, end))
        conn.execute("VACUUM ANALYZE jobs")
    return time.perf_counter() - t0


# -- measuring ----------------------------------------------------------------------------------
def _ms(call: Callable[[], Any]) -> float:
    samples = []
    for _ in range(READ_REPEATS):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(samples)


def _claim_round(q: Any, worker: str, jobs: int, seconds: float) -> tuple[int, float, list[float]]:
    """Per-job claim+complete for ``jobs`` jobs or ``seconds``: (done, elapsed, claim latencies in ms)."""
    lat: list[float] = []
    done = 0
    cap = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while done < jobs and time.perf_counter() < cap:
        c0 = time.perf_counter()
        job = q.claim(worker)
        lat.append((time.perf_counter() - c0) * 1000.0)
        if job is None:
            break
        q.complete(job)
        done += 1
    return done, time.perf_counter() - t0, lat


def _reads(q: Any) -> dict[str, Callable[[], Any]]:
    """``stats()``, each query the ops page runs (``jobq.web.ops``) and the manager's job list as
    it first shows (its default statuses, newest first, one page: ``jobq.web.manager``) and with
    every status, sorted by creation (its window of the newest 50,000 matching jobs)."""
    from jobq import JobFilter, JobStatus, Page

    # The manager's DEFAULT_STATUSES, written out: the bench does not import the apps (Streamlit).
    manager_default = JobFilter(statuses=[JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.FAILED])
    window = 50_000  # the manager's LIST_WINDOW
    return {
        "manager: job list": lambda: q.list_page(manager_default, Page(limit=25, window=window)),
        "manager: every job by creation": lambda: q.list_page(JobFilter(), Page("created_at", limit=25, window=window)),
        "stats": q.stats,
        "ops: history 1 h": lambda: q.history(window=3600.0, bucket=60.0),
        "ops: due history 1 h": lambda: q.due_history(window=3600.0, bucket=60.0),
        "ops: latest jobs": lambda: q.latest(None, 50),
        "ops: latest failed": lambda: q.latest(JobStatus.FAILED, 50),
        "ops: recent events": lambda: q.recent_events(50),
        "ops: workers": q.workers,
    }


def measure(stores: list[tuple[ScaleResult, str]], sizes: ScaleSizes) -> None:
    """Claim+complete on every store in interleaved rounds (small, big, small, big, ...: the
    machine's load drifts, and both sizes see the same drift), then the reads on each."""
    import jobq

    queues = [(r, jobq.Queue(url)) for r, url in stores]
    try:
        for _, q in queues:
            q.workers()  # connect before the clock starts
        rates: dict[int, list[float]] = {id(r): [] for r, _ in queues}
        p99s: dict[int, list[float]] = {id(r): [] for r, _ in queues}
        for _ in range(ROUNDS):
            for r, q in queues:
                done, elapsed, lat = _claim_round(q, f"scale-{r.backend}", sizes.jobs // ROUNDS, sizes.seconds / ROUNDS)
                if done and lat:
                    lat.sort()
                    rates[id(r)].append(done / elapsed)
                    p99s[id(r)].append(lat[min(len(lat) - 1, int(len(lat) * 0.99))])
        for r, q in queues:
            # Medians over the rounds: a burst of another process's fsyncs spoils one round, not the figure.
            r.jobs_per_second = statistics.median(rates[id(r)]) if rates[id(r)] else None
            r.claim_p99_ms = statistics.median(p99s[id(r)]) if p99s[id(r)] else None
            for name, call in _reads(q).items():
                r.reads_ms[name] = _ms(call)
    finally:
        for _, q in queues:
            q.close()


def run_scale(
    workdir: str, pg: Any, quick: bool, log: Callable[[str], None], sizes: ScaleSizes | None = None
) -> list[ScaleResult]:
    """Both sizes on SQLite and (when ``pg`` runs) PostgreSQL (``JOBQ_SCALE_BACKENDS`` picks)."""
    import os

    sizes = sizes or (SCALE_QUICK if quick else SCALE_FULL)
    out: list[ScaleResult] = []
    backends = ["sqlite"] + (["postgres"] if pg is not None else [])
    backends = [b for b in backends if b in os.environ.get("JOBQ_SCALE_BACKENDS", "sqlite,postgres")]
    for backend in backends:
        stores: list[tuple[ScaleResult, str]] = []
        files: list[str] = []
        try:
            for total in (sizes.small, sizes.big):
                result = ScaleResult(backend, total)
                pending = min(sizes.pending, total // 2)
                if backend == "sqlite":
                    path = f"{workdir}/scale_{total}.db"
                    files += [path + suffix for suffix in ("", "-wal", "-shm")]
                    result.fill_seconds = fill_sqlite(path, total, pending)
                    url = f"sqlite:///{path}?synchronous=NORMAL"
                else:
                    name = f"scale_{total}"
                    pg.fresh_database(name)
                    url = f"{pg.dsn_base}/{name}"
                    result.fill_seconds = fill_postgres(url, total, pending)
                    import psycopg

                    with psycopg.connect(url, autocommit=True) as conn:  # for the connections jobq opens next
                        conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = off".encode())
                log(f"  {backend}: {total:,} jobs stored (filled in {result.fill_seconds:.0f} s)")
                stores.append((result, url))
            measure(stores, sizes)
        except Exception as exc:  # noqa: BLE001 - one failing backend is a row note, not a crash
            note = f"error: {type(exc).__name__}: {exc}"[:300]
            stores = stores or [(ScaleResult(backend, sizes.big), "")]
            for r, _ in stores:
                r.note = r.note or note
        finally:
            for f in files:
                if os.path.exists(f):
                    os.remove(f)
        for r, _ in stores:
            log(f"  {backend} {r.stored:,}: {summary(r)}")
            out.append(r)
    return out


def summary(r: ScaleResult) -> str:
    if r.note:
        return r.note
    reads = ", ".join(f"{k} {v:.0f} ms" for k, v in r.reads_ms.items())
    return f"{r.jobs_per_second or 0:,.0f} jobs/s, claim p99 {r.claim_p99_ms or 0:.1f} ms; {reads}"


def table(results: list[ScaleResult]) -> str:
    """The section's markdown: per backend, small vs big, the ratios against the targets."""
    if not results:
        return ""
    reads = list(dict.fromkeys(k for r in results for k in r.reads_ms))
    head = ["backend", "stored jobs", "claim+complete jobs/s", "claim p99 ms", *[f"{k} ms" for k in reads]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r.note:
            lines.append(f"| {r.backend} | {r.stored:,} | {r.note} |" + " |" * (len(head) - 3))
            continue
        cells = [
            r.backend,
            f"{r.stored:,}",
            f"{r.jobs_per_second or 0:,.0f}",
            f"{r.claim_p99_ms or 0:.2f}",
            *[f"{r.reads_ms[k]:.1f}" if k in r.reads_ms else "" for k in reads],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for backend in dict.fromkeys(r.backend for r in results):
        rows = [r for r in results if r.backend == backend and not r.note]
        if len(rows) != 2:
            continue
        small, big = sorted(rows, key=lambda r: r.stored)
        rate = (big.jobs_per_second or 0) / (small.jobs_per_second or 1)
        p99 = (big.claim_p99_ms or 0) / (small.claim_p99_ms or 1)
        slowest = max(big.reads_ms.items(), key=lambda kv: kv[1], default=("", 0.0))
        ok_rate = rate >= 1 - SLOWDOWN_TARGET
        ok_p99 = p99 <= 1 + SLOWDOWN_TARGET
        ok_reads = slowest[1] < READ_TARGET_MS
        lines.append(
            f"- {backend}: at {big.stored:,} stored jobs, throughput is {rate:.2f}x and claim p99 {p99:.2f}x the"
            f" {small.stored:,} figures ({'met' if ok_rate and ok_p99 else 'NOT met'}: within"
            f" {SLOWDOWN_TARGET:.0%}); slowest read {slowest[0]} {slowest[1]:.0f} ms"
            f" ({'met' if ok_reads else 'NOT met'}: under {READ_TARGET_MS:.0f} ms)."
        )
    return "\n".join(lines)


def describe(mode: str) -> str:
    sizes = SCALE_QUICK if mode.startswith("quick") else SCALE_FULL
    return (
        "Per-job claim+complete (one process, no fsync per commit: SQLite NORMAL, PostgreSQL "
        "synchronous_commit=off, so that the disk's flush time does not hide the table's size) and the "
        "reads of `stats`, the ops page and the manager's first job list, "
        f"with {sizes.small:,} and with {sizes.big:,} stored jobs "
        f"({sizes.pending:,} of them PENDING, the rest finished: 98% COMPLETED). Claims run in {ROUNDS} "
        f"alternating rounds per size (medians of the rounds), up to {sizes.jobs:,} jobs or "
        f"{sizes.seconds:.0f} s in all; reads are the median of {READ_REPEATS} calls. `stats` counts "
        "finished jobs among the newest 20,000 (`QueueStats.finished_window`); the ops page's latest jobs "
        "come from `Queue.latest`. Targets: the big store within 20% of the small one, every read under 200 ms."
    )
