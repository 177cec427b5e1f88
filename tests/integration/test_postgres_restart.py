"""PostgreSQL restarts (``pg_ctl restart -m fast``) while worker processes run.

Every worker connection is cut mid-flight. The workers must reconnect and carry on; at the end
every job is COMPLETED exactly once (one ``completed`` event), and the side effect ran once per
job, except that a job whose lease expired meanwhile may have run again after its rescue (that is
at-least-once delivery; its stale completion is then refused).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from children import stop_children
from pg import PgServer, fresh_database
from polling import wait_for
from processes import Procs, effects

import jobq
from jobq import JobFilter, JobStatus

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

JOBS = 300
WORKERS = 3
LEASE_SECONDS = 6.0
JOB_SECONDS = 0.04
DEADLINE_SECONDS = 180.0

WORKER_SCRIPT = r"""
import json, os, sys, time
import jobq
from jobq import LeaseLost, StorageError

url, wid, log_path, stop_path = sys.argv[1:5]
lease, job_seconds = float(sys.argv[5]), float(sys.argv[6])
log = open(log_path, "a", buffering=1)

def note(**fields):
    log.write(json.dumps(fields) + "\n")

def retrying(fn):
    # The database may be away for a moment: keep trying, as a worker loop does.
    deadline = time.monotonic() + 90
    while True:
        try:
            return fn()
        except StorageError as exc:
            note(storage_error=str(exc))
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

q = retrying(lambda: jobq.Queue(url))
listener = q.listener(wid, ["default"])
note(started=os.getpid())
last_rescue = 0.0
while not os.path.exists(stop_path):
    if time.monotonic() - last_rescue > 1.0:
        for r in retrying(q.rescue_expired):
            note(rescued=r.job_id, outcome=r.outcome)
        last_rescue = time.monotonic()
    jobs = retrying(lambda: q.claim_many(wid, 3, lease=lease))
    if not jobs:
        listener.wait(0.5)
        continue
    for job in jobs:
        note(effect=job.id, token=job.lease_token)  # the side effect we count
        time.sleep(job_seconds)
        try:
            retrying(lambda: q.complete(job, {"by": wid}))
            note(completed=job.id)
        except LeaseLost:
            note(lease_lost=job.id)
listener.close()
q.close()
note(stopped=os.getpid())
"""


@pytest.fixture
def pg_db(postgres_server: PgServer) -> Iterator[tuple[PgServer, str]]:
    if not postgres_server.managed:
        pytest.skip("restarting needs the session's own PostgreSQL (JOBQ_TEST_POSTGRES_URL is external)")
    with fresh_database(postgres_server) as url:
        yield postgres_server, url


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[list[str]], subprocess.Popen[bytes]]]:
    """Start child processes; every one is stopped (by PID) at the end, also on failure."""
    started: list[subprocess.Popen[bytes]] = []
    stderr_files: list[IO[bytes]] = []

    def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        stderr_files.append(open(tmp_path / f"err{len(started)}", "wb"))  # noqa: SIM115 - closed below
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr_files[-1])
        started.append(proc)
        return proc

    yield _spawn
    stop_children(started)
    for f in stderr_files:
        f.close()


def _completed(url: str) -> int:
    try:
        with jobq.Queue(url) as q:
            return q.count(JobFilter(statuses=(JobStatus.COMPLETED,)))
    except jobq.StorageError:
        return -1  # the server is restarting


def _read_logs(paths: list[Path]) -> list[dict[str, object]]:
    entries = []
    for path in paths:
        if path.exists():
            entries.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return entries


def test_workers_survive_postgres_restarts(
    pg_db: tuple[PgServer, str], spawn: Callable[[list[str]], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    server, url = pg_db
    with jobq.Queue(url) as q:
        ids = q.enqueue_many([{"n": i} for i in range(JOBS)], keys=[f"job-{i}" for i in range(JOBS)])
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    stop = tmp_path / "stop"
    logs = [tmp_path / f"worker{i}.log" for i in range(WORKERS)]
    procs = [
        spawn(
            [sys.executable, str(script), url, f"w{i}", str(logs[i]), str(stop), str(LEASE_SECONDS), str(JOB_SECONDS)]
        )
        for i in range(WORKERS)
    ]

    # Restart twice while the workers are busy: once early, once around the middle.
    for threshold in (JOBS // 5, JOBS // 2):
        wait_for(lambda t=threshold: _completed(url) >= t, DEADLINE_SECONDS, f"{threshold} completed jobs")
        before = _completed(url)
        assert before < JOBS, "the workers finished before the restart: make the jobs slower"
        server.restart()
        assert all(p.poll() is None for p in procs), "a worker died on the restart"

    wait_for(lambda: _completed(url) == JOBS, DEADLINE_SECONDS, "every job completed")
    stop.touch()
    for proc in procs:
        code = proc.wait(60)
        assert code == 0, "\n".join((tmp_path / f"err{i}").read_text()[-2000:] for i in range(WORKERS))

    entries = _read_logs(logs)
    effects = collections.Counter(e["effect"] for e in entries if "effect" in e)
    with jobq.Queue(url) as q:
        assert q.counts()["COMPLETED"] == JOBS
        for job_id in ids:
            kinds = [str(e.kind) for e in q.events(job_id)]
            assert kinds.count("completed") == 1, (job_id, kinds)
            rescues = kinds.count("rescued")
            # Once per job; a rescued job may have run again (at-least-once), never more often.
            assert 1 <= effects[job_id] <= 1 + rescues, (job_id, effects[job_id], kinds)
    # The restarts really hit the workers (their connections were cut), and they kept going.
    assert sum(1 for e in entries if "started" in e) == WORKERS
    assert sum(1 for e in entries if "stopped" in e) == WORKERS


def test_real_workers_survive_a_postgres_restart(pg_db: tuple[PgServer, str], procs: Procs, tmp_path: Path) -> None:
    """The same with ``jobq.worker.Worker`` processes (heartbeats, group commit, rescuer)."""
    server, url = pg_db
    jobs = 400
    with jobq.Queue(url) as q:
        ids = q.enqueue_many([{"seconds": 0.03}] * jobs, task="slow", keys=[f"real-{i}" for i in range(jobs)])
    workers = [procs.start("worker", "--db", url, "--lease", "5", "--batch", "5") for _ in range(4)]
    wait_for(lambda: _completed(url) >= jobs // 4, DEADLINE_SECONDS, "a quarter of the jobs completed")
    assert _completed(url) < jobs, "the workers finished before the restart: make the jobs slower"
    server.restart()
    assert all(w.poll() is None for w in workers), "a worker died on the restart"
    wait_for(lambda: _completed(url) == jobs, DEADLINE_SECONDS, "every job completed")
    for w in workers:
        w.terminate()
    for w in workers:
        assert w.wait(30) == 0, procs.logs()[-3000:]
    done = collections.Counter(effects(tmp_path))
    with jobq.Queue(url) as q:
        for job_id in ids:
            kinds = [str(e.kind) for e in q.events(job_id)]
            assert kinds.count("completed") == 1, (job_id, kinds)
            assert 1 <= done[job_id] <= 1 + kinds.count("rescued"), (job_id, done[job_id], kinds)
    assert "traceback" not in procs.logs().lower()


def test_after_a_server_crash_a_finish_still_tells_a_waiter(pg_db: tuple[PgServer, str]) -> None:
    """The waiters' gate (registrations made against those gone, two sequences) across a crash
    of the server (``pg_ctl stop -m immediate``): a sequence comes back from the WAL at or above
    where it stood, so the gone count must never come back ahead of the made one. Counted by
    ``nextval`` it would (32 values are logged ahead), and a finish would skip looking for a
    waiter registered before the crash; counted by ``setval`` (logged as it is) it cannot."""
    import psycopg
    from psycopg import sql

    from jobq.backends.postgres.url import split_url

    server, url = pg_db
    options = split_url(url)
    with jobq.Queue(url) as q:
        waited = q.enqueue({"n": 0})
        for _ in range(40):  # come and go, as many waits do
            q.backend.unregister_waiter(q.backend.register_waiter(waited, time.time(), time.time() + 60))
        q.backend.register_waiter(waited, time.time(), time.time() + 60)  # this one still waits
        job = q.claim("w1")
        assert job is not None and job.id == waited
    with psycopg.connect(options.libpq_url, autocommit=True) as conn:
        # The test server commits without waiting for its WAL (synchronous_commit=off): one
        # commit that waits writes out everything before it, so the crash loses none of the above.
        conn.execute("SET synchronous_commit = on")
        conn.execute("CREATE TABLE flushed (x int)")  # a commit that wrote: it waits for its WAL
    server.crash()
    with jobq.Queue(url) as q, psycopg.connect(options.libpq_url, autocommit=True) as listen:
        listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(options.done_channel)))
        wait_for(lambda: _completes(q, job), DEADLINE_SECONDS, "the completion after the crash")
        assert [n.payload for n in listen.notifies(timeout=10, stop_after=1)] == [str(waited)]


def _completes(q: jobq.Queue, job: jobq.Job) -> bool:
    """Complete ``job``; False while the server is still recovering."""
    try:
        q.complete(job)
    except jobq.StorageError:
        return False
    return True
