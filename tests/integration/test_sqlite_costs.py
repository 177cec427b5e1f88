"""What the SQLite hot path writes, counted (issue 13): a regression fails `make test`, not only `make bench`.

At ``synchronous=FULL`` every commit syncs the WAL, and what a commit costs grows with the pages
it writes; timings on a shared machine are noise, page counts are not. Each test counts the WAL
frames (one per page written) that N claimed+completed jobs add, through jobq's per-job API and
through the minimal transactions of the benchmark's raw rows (``bench/adapters/raw_sqlite.py``:
one ``UPDATE ... RETURNING`` per claim, one ``UPDATE`` per completion) on a table of the same
shape (a partial index on the pending rows in claim order).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apsw
import pytest
import sqlite_trace
from polling import wait_for
from test_metrics_costs import python_calls

import jobq
from jobq.worker import Worker

JOBS = 60
WAL_HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24
#: jobq's per-job claim+complete writes, per job: the claim (the row, and its entry moved within
#: jobs_live from the PENDING to the PROCESSING range) and the completion (the row, jobs_live,
#: jobs_finished): 5 pages, measured 5.33 with the odd page split. No event rows on this path
#: (issue 13: they were 6 of 12.4 pages). The PROCESSING range sorts right before the first
#: queue's PENDING head (jobs_live is descending on status, SQLite schema 13), so a large backlog
#: adds no page: 5.3 with 5,000 jobs waiting, where the ascending index wrote 6.28.
JOBQ_FRAMES_PER_JOB_MAX = 5.5
#: Jobs left waiting behind the counted ones in the large-backlog case: ~50 leaves of jobs_live.
BACKLOG_WAITING = 5_000
MINIMAL_SCHEMA = [
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY, queue TEXT NOT NULL DEFAULT 'default', payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'PENDING', priority INTEGER NOT NULL DEFAULT 0, run_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    "CREATE INDEX jobs_claim ON jobs (queue, priority, run_at, id) WHERE status = 'PENDING'",
]
MINIMAL_CLAIM = """UPDATE jobs SET status = 'PROCESSING', attempts = attempts + 1, lease_owner = ?1, updated_at = ?2
WHERE id = (SELECT id FROM jobs WHERE status = 'PENDING' AND queue = 'default' AND run_at <= ?2
            ORDER BY priority, run_at, id LIMIT 1)
RETURNING id, payload"""
MINIMAL_COMPLETE = "UPDATE jobs SET status = 'COMPLETED', updated_at = ?1 WHERE id = ?2 AND lease_owner = ?3"


def payload(n: int) -> dict[str, object]:
    return {"n": n, "path": f"data/files/job-{n:07d}.txt", "pad": "x" * 60}


def wal_frames(db: Path) -> int:
    """Frames in the WAL since it was last truncated (checkpoints are off while counting)."""
    try:
        size = os.path.getsize(f"{db}-wal")
    except FileNotFoundError:
        return 0
    return max(0, size - WAL_HEADER_BYTES) // (4096 + FRAME_HEADER_BYTES)


def start_counting(conn: apsw.Connection) -> None:
    """Empty the WAL and stop automatic checkpoints, so the WAL's size counts every page written."""
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0] == 0  # not blocked


def jobq_frames_per_job(tmp_path: Path, waiting: int = 0) -> float:
    """Pages per job for JOBS claimed and completed one by one, with ``waiting`` more jobs
    enqueued behind them (in claim order) that stay PENDING."""
    db = tmp_path / "jobq.db"
    with jobq.Queue(f"sqlite:///{db}") as q:
        q.enqueue_many([payload(n) for n in range(JOBS + waiting)])
        start_counting(q.backend._connect())  # type: ignore[attr-defined]
        done = 0
        while done < JOBS and (job := q.claim("counter")) is not None:
            q.complete(job)  # raises LeaseLost when refused
            done += 1
        frames = wal_frames(db)
        assert done == JOBS and q.counts()["COMPLETED"] == JOBS and q.counts()["PENDING"] == waiting
        return frames / JOBS


def minimal_frames_per_job(tmp_path: Path) -> float:
    db = tmp_path / "minimal.db"
    conn = apsw.Connection(str(db))
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        for sql in MINIMAL_SCHEMA:
            conn.execute(sql)
        now = time.time()
        with conn:
            conn.executemany(
                "INSERT INTO jobs (payload, run_at, created_at, updated_at) VALUES (?1, ?2, ?2, ?2)",
                [(json.dumps(payload(n)), now) for n in range(JOBS)],
            )
        start_counting(conn)
        done = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(MINIMAL_CLAIM, ("counter", time.time())).fetchall()
            conn.execute("COMMIT")
            if not rows:
                break
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(MINIMAL_COMPLETE, (time.time(), rows[0][0], "counter"))
            conn.execute("COMMIT")
            done += 1
        assert done == JOBS
        return wal_frames(db) / JOBS
    finally:
        conn.close()


def test_per_job_claim_and_complete_write_a_bounded_number_of_wal_pages(tmp_path: Path) -> None:
    minimal = minimal_frames_per_job(tmp_path)
    ours = jobq_frames_per_job(tmp_path)
    # The minimal pair writes the row twice and the claim index once: 3 pages a job.
    assert 2.5 <= minimal <= 3.5, minimal
    assert ours <= JOBQ_FRAMES_PER_JOB_MAX, f"jobq wrote {ours:.1f} WAL pages per job (minimal: {minimal:.1f})"


def test_a_large_backlog_adds_no_wal_page_per_claimed_and_completed_job(tmp_path: Path) -> None:
    """The claim moves its jobs_live entry within one leaf also when the PENDING range spans
    dozens of them: the PROCESSING range sorts right before its head (fails with the ascending
    index of SQLite schema 12: 6.28 pages)."""
    ours = jobq_frames_per_job(tmp_path, waiting=BACKLOG_WAITING)
    assert ours <= JOBQ_FRAMES_PER_JOB_MAX, f"jobq wrote {ours:.2f} WAL pages per job with a backlog"


def test_per_job_wal_pages_meet_the_issue_13_target(tmp_path: Path) -> None:
    """Within 2x of the minimal transactions (issue 13's target)."""
    assert jobq_frames_per_job(tmp_path) <= 2 * minimal_frames_per_job(tmp_path)


def test_claims_and_rescues_walk_the_live_index(tmp_path: Path) -> None:
    """The claim and the rescuer's reads use jobs_live, never a scan of the table (which holds
    every finished job): a partial index serves only a query naming a term of its predicate."""
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        backend = q.backend
        conn = backend._connect()  # type: ignore[attr-defined]
        sql = backend.dialect.sql  # type: ignore[attr-defined]
        claim = sql["claim_one"].replace("{queues}", "queue = 'default'")
        claim = claim.replace("{uncontrolled}", sql["uncontrolled_one"].replace(":q0", "'default'"))
        probe = sql["rescue_probe"].replace("{gone}", "lease_owner IN ('w')")
        expired = sql["expired"].replace("{gone}", "FALSE")
        for statement in (claim, probe, expired, sql["counts_by_queue_live"], sql["expired_count"]):
            params = {name: 0 for name in re.findall(r":(\w+)", statement)}
            rows = conn.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
            plan = " ".join(str(row[3]) for row in rows)
            assert "jobs_live" in plan and "SCAN jobs" not in plan.replace("SCAN jobs USING", ""), (statement, plan)


def test_ephemeral_tables_stay_in_memory(tmp_path: Path) -> None:
    """A batched claim's ``IN (SELECT ...)`` list is an ephemeral table: with the default
    ``temp_store`` SQLite backs it by a temporary file and sets up its page cache per statement
    (measured: a 100-job claim 590 us against 230 us)."""
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        conn = q.backend._connect()  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA temp_store").fetchall() == [(2,)]  # 2: MEMORY


#: Statements per claimed+completed job through the per-job API: BEGIN IMMEDIATE, the claim,
#: COMMIT, then BEGIN IMMEDIATE, the completion, COMMIT; as many as the minimal transactions.
STATEMENTS_PER_JOB = 6


def test_a_per_job_claim_and_completion_run_as_many_statements_as_the_minimal_ones(tmp_path: Path) -> None:
    """The claim passes over paused and limited queues itself, so a claim that takes a job does
    not read queue_controls first (issue 13: that read was one statement in four of a claim).
    Counted with SQLite's statement trace on jobq's own connection."""
    url = f"sqlite:///{tmp_path}/q.db"
    with jobq.Queue(url) as q, jobq.Queue(url) as operator:
        q.enqueue_many([payload(n) for n in range(10)])
        conn = q.backend._connect()  # type: ignore[attr-defined]
        seen: list[str] = []

        def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
            seen.append(sql)
            return True

        conn.exec_trace = trace
        try:
            for _ in range(5):
                job = q.claim("w")
                assert job is not None
                q.complete(job)
            assert len(seen) == 5 * STATEMENTS_PER_JOB, seen
            assert not any("queue_controls" in sql and sql.lstrip().startswith("SELECT") for sql in seen)
            # No cache to go stale: a pause or a limit set through another connection holds at
            # the next claim, and lifting it frees the queue again.
            operator.pause("default")
            assert q.claim("w") is None
            operator.resume("default")
            operator.set_limits("default", concurrency=1)
            held = q.claim("w")
            assert held is not None
            assert q.claim("w") is None  # the one slot is taken
            q.complete(held)
            operator.clear_limits("default")
            assert q.claim("w") is not None
        finally:
            conn.exec_trace = None


def test_the_claims_check_of_the_controls_runs_once_per_statement(tmp_path: Path) -> None:
    """The claim's {uncontrolled} is not correlated with the row, for one queue or several: a
    correlated look-up ran once for every pending row a multi-queue claim's sort reads."""
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        conn = q.backend._connect()  # type: ignore[attr-defined]
        dialect = q.backend.dialect  # type: ignore[attr-defined]
        for queues in (["default"], ["a", "b"]):
            fragment = dialect.sql["uncontrolled_one" if len(queues) == 1 else "uncontrolled_each"]
            for name in ("claim_one", "claim"):
                params: dict[str, object] = {}
                queue_list = dialect.any_of("queue", "q", queues, params)
                statement = dialect.stmt(name, queues=queue_list, uncontrolled=fragment, returned="id")
                params.update({n: 0 for n in re.findall(r":(\w+)", statement) if n not in params})
                plan = [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()]
                assert "queue_controls" in statement and not any("CORRELATED" in step for step in plan), plan
                assert any("jobs_live" in step for step in plan), plan


#: Statements per claim_many(100) + complete_many: BEGIN/COMMIT twice, the claim, the read of
#: the claimed rows after its commit (a SELECT alone), and the whole group's completion as one
#: set-based UPDATE (issue 13: one UPDATE stepped per job was ~40 % of a batched completion's CPU;
#: 105 statements per 100 jobs then).
STATEMENTS_PER_BATCH = 7


def test_a_batch_claim_and_completion_run_one_claim_and_one_update(tmp_path: Path) -> None:
    """claim_many(100)+complete_many: one claim statement, one UPDATE for every completion, each
    row still fenced by its own lease token, and the two transactions' BEGIN/COMMIT, nothing more:
    no controls read, no event rows. A stale token in the group is refused on its own."""
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        q.enqueue_many([payload(n) for n in range(150)])
        conn = q.backend._connect()  # type: ignore[attr-defined]
        seen: list[str] = []

        def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
            seen.append(sql.lstrip())
            return True

        conn.exec_trace = trace
        try:
            jobs = q.claim_many("w", 100)
            assert len(jobs) == 100
            assert q.complete_many([(j, {"n": j.id}) for j in jobs]) == [True] * 100
        finally:
            conn.exec_trace = None
        updates = [sql for sql in seen if sql.startswith("UPDATE jobs SET status = 'COMPLETED'")]
        assert len(updates) == 1 and "lease_token" in updates[0]
        assert len(seen) == STATEMENTS_PER_BATCH, seen
        assert q.get(jobs[7].id).result == {"n": jobs[7].id}  # type: ignore[union-attr]
        rest = q.claim_many("w", 100)
        stale = dataclasses.replace(rest[1], lease_token="not-the-lease")
        assert q.complete_many([(rest[0], None), (stale, None), (rest[2], "x")]) == [True, False, True]
        assert q.get(rest[1].id).status is jobq.JobStatus.PROCESSING  # type: ignore[union-attr]
        assert q.get(rest[2].id).result == "x"  # type: ignore[union-attr]
        assert [e.kind for e in q.events(rest[1].id)][-1] == "stale_write_refused"


def test_a_group_of_one_claims_jobs_without_results_completes_by_their_ids_and_the_claims_nonce(
    tmp_path: Path,
) -> None:
    """A batching worker's usual group (every lease made by one claim, no result stored) is sent
    as its ids and the claim's nonce (complete_nonce_set): no token or result is read out of a
    nested JSON array per row under the write lock (issue 13). Each row is still fenced by its
    own token: a job released and claimed again meanwhile (a new nonce) is refused on its own."""
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        q.enqueue_many([payload(n) for n in range(10)])
        jobs = q.claim_many("w", 10)
        assert len(jobs) == 10 and len({j.lease_token.rpartition("-")[0] for j in jobs}) == 1  # type: ignore[union-attr]
        again = jobs[3]
        q.release(again)
        [taken] = q.claim_many("w2", 10)
        assert taken.id == again.id and taken.lease_token != again.lease_token
        conn = q.backend._connect()  # type: ignore[attr-defined]
        seen: list[tuple[str, object]] = []

        def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
            seen.append((sql.lstrip(), bindings))
            return True

        conn.exec_trace = trace
        try:
            done = q.complete_many([(j, None) for j in jobs])
        finally:
            conn.exec_trace = None
        assert done == [i != 3 for i in range(10)]
        [(sql, bindings)] = [s for s in seen if s[0].startswith("UPDATE jobs SET status = 'COMPLETED'")]
        assert "json_each(:ids)" in sql, sql
        assert not any(j.lease_token in str(bindings) for j in jobs), bindings  # the nonce, no token
        assert q.counts()["COMPLETED"] == 9
        kept = q.get(again.id)
        assert kept is not None and kept.status is jobq.JobStatus.PROCESSING and kept.lease_token == taken.lease_token
        assert [e.kind for e in q.events(again.id)][-1] == "stale_write_refused"
        assert q.complete_many([(taken, None), (taken, None)]) == [True, False]  # one lease twice: once


def test_jobqs_own_writes_run_no_trigger_and_a_write_by_hand_still_does(tmp_path: Path) -> None:
    """The schema's triggers are for writers other than jobq: coded into every UPDATE of a
    status, jobs_external_status cost a claim or completion a sub-program call per row under the
    write lock (issue 13). jobq's connections turn them off; sqlite3 (here a plain apsw
    connection, as an operator's shell) still records a status set by hand, and a purge of the
    newest jobs still keeps their ids from being handed out again."""
    db = tmp_path / "q.db"
    with jobq.Queue(f"sqlite:///{db}") as q:
        ids = q.enqueue_many([payload(n) for n in range(120)])
        conn = q.backend._connect()  # type: ignore[attr-defined]
        programs: list[str] = []

        def trace(event: dict[str, object]) -> None:
            if event.get("trigger"):
                programs.append(str(event["sql"]))

        conn.trace_v2(apsw.SQLITE_TRACE_STMT, trace)
        try:
            jobs = q.claim_many("w", 100)
            assert q.complete_many([(j, None) for j in jobs]) == [True] * 100
            one = q.claim("w")
            assert one is not None
            q.complete(one)
            assert q.purge(older_than=0) == 101
        finally:
            conn.trace_v2(0, None)
        assert programs == []
        by_hand = apsw.Connection(str(db))
        try:
            by_hand.set_busy_timeout(5_000)
            by_hand.execute(f"UPDATE jobs SET status = 'FAILED' WHERE id = {ids[-1]}")
        finally:
            by_hand.close()
        failed = q.get(ids[-1])
        assert failed is not None and failed.status is jobq.JobStatus.FAILED and failed.finished_at is not None
        assert [e.kind for e in q.events(ids[-1])][-1] == "external_update"
        assert q.purge(older_than=0, statuses=["FAILED"]) == 1  # the newest job: the purge raises the floor
        assert q.enqueue(payload(0)) > ids[-1]


# A single enqueue's statements and pages are counted in test_enqueue_costs.py.
#: A batch enqueue's pages per job: the rows and index entries fill whole pages (0.08 measured
#: with 2,500 jobs of this payload's size).
BATCH_ENQUEUE_FRAMES_PER_JOB_MAX = 0.12


@pytest.mark.usefixtures("no_periodic_refresh")  # statements listed: no reload of the wake-up addresses
def test_a_batch_enqueue_is_one_insert_per_chunk_and_no_event_rows(tmp_path: Path) -> None:
    from jobq.backends.ops import VALUES_CHUNK_ROWS

    db = tmp_path / "q.db"
    jobs = 2 * VALUES_CHUNK_ROWS + VALUES_CHUNK_ROWS // 2
    with jobq.Queue(f"sqlite:///{db}") as q:
        q.enqueue({"warm": True})
        conn = q.backend._connect()  # type: ignore[attr-defined]
        start_counting(conn)
        statements: list[str] = []
        conn.exec_trace = lambda _cursor, sql, _bindings: statements.append(sql.split("(")[0].strip()) or True
        ids = q.enqueue_many([payload(n) for n in range(jobs)])
        assert statements == [
            "BEGIN IMMEDIATE",
            *["INSERT INTO jobs"] * 3,  # two full chunks and the rest
            "COMMIT",
        ]
        assert ids == sorted(ids) and len(set(ids)) == jobs
        assert [q.get(i).payload for i in (ids[0], ids[VALUES_CHUNK_ROWS], ids[-1])] == [  # type: ignore[union-attr]
            payload(0),
            payload(VALUES_CHUNK_ROWS),
            payload(jobs - 1),
        ]
        assert [e.kind for e in q.events(ids[-1])] == ["enqueued"]
        frames = wal_frames(db) / jobs
        assert frames <= BATCH_ENQUEUE_FRAMES_PER_JOB_MAX, f"a batch enqueue wrote {frames:.2f} WAL pages per job"


#: Python function calls per job of claim_many(100) + complete_many (``sys.setprofile``'s "call"
#: events, which a loaded machine cannot blur as it blurs time): measured 9.6 (job_from_row, its
#: type check, Job's constructor, the payload's decode and its depth check, the lease). 16.6 before
#: issue 13's batch work: json.loads' own frames, a decode of the NULL result, sort keys written in
#: Python, and the dict of parameters built per completion.
BATCH_PYTHON_CALLS_PER_JOB_MAX = 11.0


def test_a_batched_claim_and_completion_make_few_python_calls_per_job(tmp_path: Path) -> None:
    batches = 10
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        q.enqueue_many([payload(n) for n in range((batches + 1) * 100)])
        assert q.complete_many([(j, None) for j in q.claim_many("w", 100)]) == [True] * 100  # warm
        done: list[bool] = []

        def batches_of_100() -> None:
            for _ in range(batches):
                done.extend(q.complete_many([(j, None) for j in q.claim_many("w", 100)]))

        calls = python_calls(batches_of_100)
        assert done == [True] * batches * 100
        per_job = calls / (batches * 100)
        assert per_job <= BATCH_PYTHON_CALLS_PER_JOB_MAX, f"{per_job:.1f} Python calls per job of a batch"


#: Python calls per job of ``Worker(batch=100)`` with a no-op handler, every thread counted:
#: measured 33 (the batch's claim and completion above, the run's context, its hand-off to a runner
#: thread, the handler's call and outcome). 72 before issue 13's batch work: a threading.Event per
#: run, queue.Queue's Condition per hand-off, a JSON check of a None result, Event.set per outcome.
WORKER_PYTHON_CALLS_PER_JOB_MAX = 38.0


def test_a_batching_worker_makes_few_python_calls_per_job(tmp_path: Path) -> None:
    from jobq.worker import Worker

    jobs = 1_000
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        q.enqueue_many([payload(n) for n in range(jobs)])
        ran: list[int] = []
        worker = Worker(q, lambda ctx: ran.append(ctx.job.id), batch=100, name="counted", exit_when_idle=True)
        calls = python_calls(worker.run, threads=True)
        assert sorted(ran) == sorted(set(ran)) and len(ran) == jobs
        assert q.counts()["COMPLETED"] == jobs
        per_job = calls / jobs
        assert per_job <= WORKER_PYTHON_CALLS_PER_JOB_MAX, f"{per_job:.1f} Python calls per job of Worker(batch=100)"


def test_a_batch_claim_returns_ids_under_the_write_lock_and_reads_its_rows_after_the_commit(tmp_path: Path) -> None:
    """A claim of many jobs returns only their ids under SQLite's one write lock; their rows are
    read after its commit, while other processes may commit (issue 13: the RETURNING of every
    column held the lock ~2.6 us a job of a Worker(batch=100)'s ~12). The read is fenced: a job
    taken from the claim between its commit and the read (here by a hand edit, as a rescue after
    the process froze past its lease would take it) is not handed out, and stays with its new
    holder. Both ways a batch is claimed: claim_many, and a worker's completions with its claim."""
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        q.enqueue_many([payload(n) for n in range(60)])
        conn = q.backend._connect()  # type: ignore[attr-defined]
        other = apsw.Connection(f"{tmp_path}/q.db")
        other.set_busy_timeout(5_000)
        seen: list[tuple[str, bool]] = []
        taken: list[int] = []

        def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
            seen.append((sql.lstrip(), conn.in_transaction))
            if sql.lstrip().startswith("SELECT") and "json_each(:ids)" in sql and isinstance(bindings, dict):
                # Between the claim's commit and the read of its rows: another holder takes one.
                job_id = json.loads(bindings["ids"])[1]
                other.execute(
                    "UPDATE jobs SET lease_owner = 'w2', lease_token = 'other-' || id WHERE id = ?", (job_id,)
                )
                taken.append(job_id)
            return True

        conn.exec_trace = trace
        try:
            jobs = q.claim_many("w", 20)
            done, more = q.complete_many_and_claim([(j, None) for j in jobs], "w", 20)
        finally:
            conn.exec_trace = None
        claims = [i for i, (sql, _) in enumerate(seen) if sql.startswith("UPDATE jobs SET status = 'PROCESSING'")]
        reads = [i for i, (sql, _) in enumerate(seen) if sql.startswith("SELECT") and "json_each(:ids)" in sql]
        assert len(claims) == 2 and len(reads) == 2, seen
        for claim, read in zip(claims, reads, strict=True):
            assert seen[claim][0].rstrip().endswith("RETURNING id"), seen[claim][0]
            assert seen[read - 1][0] == "COMMIT" and not seen[read][1], "not read alone after the claim's commit"
        assert len(taken) == 2 and len(jobs) == 19 and len(more) == 19 and done == [True] * 19
        assert not {j.id for j in jobs + more} & set(taken)
        assert all(j.status is jobq.JobStatus.PROCESSING and j.payload["pad"] for j in jobs + more)
        for job_id in taken:
            kept = q.get(job_id)
            assert kept is not None and kept.lease_owner == "w2" and kept.lease_token == f"other-{job_id}"
        assert q.counts()["COMPLETED"] == 19
        seen.clear()
        conn.exec_trace = trace
        try:
            assert q.claim_many("w", 20, queue="empty") == []
        finally:
            conn.exec_trace = None
        assert seen and not [sql for sql, _ in seen if "json_each(:ids)" in sql], "a claim of nothing read more"
        other.close()


def test_a_batch_claims_read_of_its_rows_does_not_wait_for_a_write_lock_held_meanwhile(tmp_path: Path) -> None:
    """The read after a batch claim's commit is a WAL reader: another connection that takes the
    write lock between the commit and the read (an operator's `sqlite3` shell in BEGIN IMMEDIATE,
    held as long as it likes) does not hold it up, and sees nothing of it."""
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        q.enqueue_many([payload(n) for n in range(20)])
        conn = q.backend._connect()  # type: ignore[attr-defined]
        other = apsw.Connection(f"{tmp_path}/q.db")
        held: list[bool] = []

        def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
            if sql.lstrip().startswith("SELECT") and "json_each(:ids)" in sql:
                other.execute("BEGIN IMMEDIATE")  # the write lock, kept through the read
                other.execute("UPDATE jobs SET priority = 5 WHERE status = 'PENDING'")
                held.append(other.in_transaction)
            return True

        conn.exec_trace = trace
        try:
            jobs = q.claim_many("w", 10)
        finally:
            conn.exec_trace = None
        assert held == [True] and other.in_transaction  # the lock was held all through the read
        assert len(jobs) == 10 and all(j.status is jobq.JobStatus.PROCESSING for j in jobs)
        other.execute("ROLLBACK")
        other.close()


def test_claimed_jobs_are_built_after_the_commit_not_under_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making a Job of a claimed row (its payload decoded, its columns checked) is Python's work, and
    under SQLite's write lock no other process can commit: it waits for the commit (ops.Claimed).
    Every way jobs are claimed: the per-job claim, a batch, and a worker's completions with its
    next claim. A transaction runs while its thread holds the backend's lock, which is what is read
    (the connection's own state is shared: a worker's heartbeat may have a transaction open)."""
    from jobq.backends.ops import core

    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        lock = q.backend._lock  # type: ignore[attr-defined]
        in_transaction: list[bool] = []
        build = core.job_from_row

        def watched(row: Sequence[Any]) -> jobq.Job:
            in_transaction.append(lock._is_owned())
            return build(row)

        monkeypatch.setattr(core, "job_from_row", watched)
        q.enqueue_many([payload(n) for n in range(30)])
        job = q.claim("w")
        assert job is not None
        claimed = q.claim_many("w", 4)
        assert len(claimed) == 4
        q.complete_many([(j, None) for j in [job, *claimed]])
        ran: list[int] = []
        Worker(q, lambda ctx: ran.append(ctx.job.id), batch=5, name="built", exit_when_idle=True).run()
        assert len(ran) == 25 and q.counts()["COMPLETED"] == 30
        assert len(in_transaction) == 30, in_transaction  # each claimed row made a Job once
        assert not any(in_transaction), "a Job was built inside the claim's transaction"


def test_an_idle_worker_takes_the_write_lock_for_its_heartbeats_only(tmp_path: Path) -> None:
    """SQLite has one writer, and a write transaction takes the lock even when it changes nothing.
    An idle worker polled with a claim every second and its rescuer marked lost workers every
    few seconds, so the seed's `sqlite3 queue.db "UPDATE ..."` (no busy timeout) failed with
    "database is locked" now and then (CI, stop 26). Idle, its polls and rescues are reads; a
    job that falls due is still claimed."""
    settings = jobq.Settings(poll_interval_seconds=0.05, rescue_interval_seconds=0.05, lease_seconds=600)
    url = f"sqlite:///{tmp_path}/q.db"
    done: list[int] = []
    with jobq.Queue(url) as producer:
        producer.enqueue({"n": 0}, delay=3600)
        with sqlite_trace.transactions() as seen, jobq.Queue(url, settings=settings) as q:
            worker = Worker(q, lambda ctx: done.append(ctx.job.id))
            thread = threading.Thread(target=worker.run, name="worker-main")
            thread.start()
            try:
                assert worker.started.wait(30)
                # Registration, the first heartbeat and the first claim; then 20 idle polls and
                # rescues (the registry's heartbeat is due only every 200 s: lease / 3).
                idle = seen.reads
                wait_for(lambda: idle["worker-main"] >= 20 and idle["jobq-rescuer"] >= 20, 60, "idle passes")
                assert sorted(seen.writes) == sorted(["worker-main", "jobq-heartbeat", "worker-main"]), seen.writes
                job_id = producer.enqueue({"n": 1}, delay=0.2)  # its wake-up comes before it is due
                wait_for(lambda: done == [job_id], 30, "the job that fell due to run")
            finally:
                worker.stop()
                thread.join(30)


def test_a_worker_with_a_free_slot_claims_on_a_wake_up_not_every_pass(tmp_path: Path) -> None:
    """While jobs run, a worker with a free slot looked for work every 50 ms: on SQLite a write
    transaction each, 20 a second, though nothing was due. After a look that found nothing, it
    now claims when woken (an enqueue) and otherwise reads once per poll interval."""
    settings = jobq.Settings(poll_interval_seconds=0.5, lease_seconds=600)
    url = f"sqlite:///{tmp_path}/q.db"
    release = threading.Event()
    started: list[int] = []

    def handler(ctx: jobq.worker.JobContext) -> None:
        started.append(ctx.job.id)
        if ctx.job.payload.get("block"):
            release.wait(60)

    with jobq.Queue(url) as producer, sqlite_trace.transactions() as seen, jobq.Queue(url, settings=settings) as q:
        blocker = producer.enqueue({"block": True})
        worker = Worker(q, handler, concurrency=2)
        thread = threading.Thread(target=worker.run, name="worker-main")
        thread.start()
        try:
            wait_for(lambda: started == [blocker], 30, "the blocking job to start")
            before = seen.writes.count("worker-main")
            reads = seen.reads["worker-main"]
            wait_for(lambda: seen.reads["worker-main"] >= reads + 4, 30, "four polls with a slot free")
            # Four polls over about two seconds: at most the look that found nothing first was a
            # claim (a write); 40 passes of 50 ms made 40 before.
            assert seen.writes.count("worker-main") - before <= 1, seen.writes
            woken = producer.enqueue({"n": 1})  # its wake-up brings the claim, well within the poll interval
            wait_for(lambda: woken in started, 30, "the woken claim")
            due_later = producer.enqueue({"n": 2}, delay=0.3)  # due with no wake-up at that time
            wait_for(lambda: due_later in started, 30, "the job that fell due")
        finally:
            release.set()
            worker.stop()
            thread.join(30)
    assert sorted(started) == sorted([blocker, woken, due_later])
