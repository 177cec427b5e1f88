"""PostgreSQL's writes of jobs named by id find their rows by the primary key (issue 13).

Each of them (complete, fail, retry, release, cancel, heartbeat, progress, rescue, and an
operator's chunk of a move or a cancel) names its jobs by id and tests their status. ``jobs_live``
(status, queue, priority, run_at, id) holds both columns too, and while the statistics saw few
running jobs (taken when the backlog was all PENDING, or when most jobs had finished), the planner
took it: ``Index Cond: status = 'PROCESSING' AND id = $1``, or the status alone joined to the id
(a heartbeat), walks every running job's entry to find one, where the primary key reads one. A
completion by id cost the server 123-166 µs with 500 jobs running and 415-1,246 µs with 5,000,
against 61-80 µs by the primary key at either count; a heartbeat ~2 ms with 2,000 running, 0.25 ms
now. The plans checked here are those the server ran: auto_explain, on for this test's database,
logs each one. A batching worker's writes of several jobs (heartbeat_many, release_many,
fail_many, complete_many, complete_many_and_claim) are checked alike."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pg import PgServer, raw_connect

import jobq
from jobq.testing import FakeClock

pytestmark = pytest.mark.postgres

#: Every statement's plan into the server's log; prepared ones (psycopg prepares a statement
#: after 5 runs) planned generically from the first run, as after the sixth.
AUTO_EXPLAIN = {
    "session_preload_libraries": "auto_explain",
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_nested_statements": "on",
    "plan_cache_mode": "force_generic_plan",
}
#: A scan of jobs_live's range of a status (the claim's scans also name a queue).
STATUS_RANGE = re.compile(r"Scan using jobs_live on jobs\b[^\n]*\n\s+Index Cond: ([^\n]*)")
ROUNDS = 6
#: The "finished" store: jobs done before the statistics were taken, and the backlog after.
FINISHED = 5_000
BACKLOG = 3_000


@pytest.mark.parametrize("seen", ["pending", "finished"])
def test_fenced_writes_find_their_job_by_primary_key(
    postgres_server: PgServer, postgres_url: str, clock: FakeClock, seen: str
) -> None:
    """``seen``: what the statistics say the table holds (a new backlog; a table of finished jobs,
    as in a store that has run for a while)."""
    if not postgres_server.managed:
        pytest.skip("reads the plans from the log of a server this session started")
    log = Path(postgres_server.log_path)
    with raw_connect(postgres_url, autocommit=True) as conn:
        db = conn.execute("SELECT current_database()").fetchone()[0]
        try:
            for key, value in AUTO_EXPLAIN.items():
                conn.execute(f"ALTER DATABASE \"{db}\" SET {key} = '{value}'")
            settings = jobq.Settings(database_url=postgres_url, max_attempts=2)
            with jobq.Queue(settings=settings, clock=clock) as q:
                q.enqueue_many([{"n": n} for n in range(FINISHED if seen == "finished" else 500)])
                while seen == "finished" and (jobs := q.claim_many("w", 1000)):
                    q.complete_many([(j, None) for j in jobs])
                conn.execute("ANALYZE jobq.jobs")  # the statistics see no job running
                if seen == "finished":
                    q.enqueue_many([{"n": n} for n in range(BACKLOG)])
                start = log.stat().st_size
                for _ in range(ROUNDS):
                    done, retried, failed, released, cancelled, rescued = (q.claim("w") for _ in range(6))
                    assert done and retried and failed and released and cancelled and rescued
                    q.heartbeat(done)
                    assert [r.alive for r in q.heartbeat_many([retried, failed])] == [True, True]
                    q.progress(done, 0.5)
                    q.complete(done)
                    assert q.fail(retried, "once") is jobq.JobStatus.PENDING
                    assert q.fail(failed, "final", retry=False) is jobq.JobStatus.FAILED
                    assert q.release(released)
                    q.cancel(cancelled.id)
                    assert q.ack_cancel(cancelled)
                    clock.advance(settings.lease_seconds * 2)
                    assert [r.job_id for r in q.rescue_expired()] == [rescued.id]
                    # An operator's chunks of waiting and of running jobs, named by id.
                    pending = jobq.JobFilter(statuses=(jobq.JobStatus.PENDING,))
                    waiting = [j.id for j in q.list(pending, jobq.Page(limit=6))]
                    running = [q.claim("w") for _ in range(3)]
                    assert all(r.ok for r in q.move_many("elsewhere", ids=waiting[:3]))
                    assert all(r.ok for r in q.cancel_many(ids=waiting[3:]))
                    assert all(r.ok for r in q.cancel_many(ids=[j.id for j in running if j]))
                    assert all(q.ack_cancel(j) for j in running if j)
                    # A batching worker's writes of several jobs.
                    group = q.claim_many("w", 8)
                    assert all(r.alive for r in q.heartbeat_many(group[:2]))
                    assert q.release_many(group[2:4]) == [True, True]
                    failures = q.fail_many([(j, "e", True) for j in group[4:6]])
                    assert [status for status, _ in failures] == [jobq.JobStatus.PENDING] * 2
                    assert q.complete_many([(j, None) for j in (*group[:2], group[6])]) == [True] * 3
                    oks, more = q.complete_many_and_claim([(group[7], None)], "w", 1)
                    assert oks == [True] and q.release_many(more) == [True]
                text = log.read_text(errors="replace")[start:]
        finally:
            conn.execute(f'ALTER DATABASE "{db}" RESET ALL')
    plans = text.split("LOG:  duration: ")[1:]
    updates = [p for p in plans if "Update on jobs" in p]
    assert len(updates) >= ROUNDS * 8, f"{len(updates)} plans of an UPDATE of jobs logged"
    walked = {_query(p) for p in updates if any("queue" not in c for c in STATUS_RANGE.findall(p))}
    assert not walked, "\n\n".join(sorted(walked))


def _query(plan: str) -> str:
    """The statement's text from a logged plan (its lines up to the plan's first node)."""
    text = plan.split("Query Text: ", 1)[1].splitlines()
    return "\n".join(line for line in text[: next(i for i, line in enumerate(text) if "(cost=" in line)])
