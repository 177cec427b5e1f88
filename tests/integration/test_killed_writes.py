"""A worker killed (SIGKILL) inside one of its own writes, on SQLite: at the last moment before the
write is durable (its ``COMMIT`` about to run, every statement of the transaction done) and at the
first moment after (the commit made, the process dead before the call returns).

The crash-point sweep (``tests/reliability/test_crash_points.py``) kills a worker between the steps
of its work; these kill it inside the transaction of a completion, failure, give-back or heartbeat.
Before the commit nothing of the write may remain: the job is still the killed worker's, as the
claim left it, until its lease runs out and the rescuer takes it back; it then runs again and
completes once. After the commit the write holds, whole. Either way the file is whole and no lock
is left behind. A batch claim is killed after its commit, before the read of its jobs' rows.
PostgreSQL's per-job writes are one statement each, committed by the server whatever becomes of
the client: their lost replies are ``test_unknown_outcome.py``'s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from polling import wait_for

import jobq
from jobq.testing.contract.common import kinds

#: The child: claims the one job as "doomed" (lease 1 s), then kills itself inside the write it is
#: told to make. "before": when apsw is about to run the COMMIT; "after": in the WAL hook, which
#: SQLite calls once a transaction has committed (the hook jobq's automatic checkpoints would use).
CHILD = r"""
import os, signal, sys
import apsw
import jobq

url, write, point = sys.argv[1:4]
armed = False

def die(*_):
    if armed:
        os.kill(os.getpid(), signal.SIGKILL)
    return True

def trace(cursor, sql, bindings):
    return die() if sql.startswith("COMMIT") and point == "before" else True

def wal(conn, name, pages):
    if point == "after":
        die()
    return 0

def hook(conn):
    conn.exec_trace = trace
    conn.set_wal_hook(wal)

apsw.connection_hooks.append(hook)
q = jobq.Queue(url)
job = q.claim("doomed", lease=1)
print("claimed", job.id, flush=True)
armed = True
if write == "complete":
    q.complete(job, {"done": True})
elif write == "fail":
    q.fail(job, "boom")
elif write == "release":
    q.release(job, "worker shut down before the job started")
elif write == "heartbeat":
    q.heartbeat(job, lease=3600)
print("survived", flush=True)
"""

WRITES = ("complete", "fail", "release", "heartbeat")
#: The event each write records when it holds (a heartbeat records none).
EVENT = {"complete": "completed", "fail": "retry_scheduled", "release": "released"}


def _killed_inside(tmp_path: Path, write: str, point: str) -> tuple[str, int]:
    """A queue of one job, whose claimer was killed inside ``write`` at ``point``: (url, job id),
    the file checked whole."""
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        job_id = q.enqueue({"n": 1}, max_attempts=3)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, url, write, point], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    assert "claimed" in proc.stdout and "survived" not in proc.stdout, proc.stdout
    with jobq.Queue(url) as q:
        assert q.backend.integrity_check() == "ok"  # type: ignore[attr-defined]
    return url, job_id


@pytest.mark.parametrize("write", WRITES)
def test_a_write_killed_before_its_commit_leaves_the_job_to_the_rescuer(tmp_path: Path, write: str) -> None:
    url, job_id = _killed_inside(tmp_path, write, "before")
    with jobq.Queue(settings=jobq.Settings(database_url=url, backoff_base_seconds=0.01, backoff_cap_seconds=0.05)) as q:
        stored = q.get(job_id)
        assert (stored.status, stored.attempts, stored.lease_owner) == (jobq.JobStatus.PROCESSING, 1, "doomed")
        assert stored.started_at is not None and stored.lease_expires_at is not None
        assert stored.lease_expires_at < stored.started_at + 2  # the claim's 1 s lease, not 3600
        events = kinds(q, job_id)
        assert not {*EVENT.values(), "failed"} & set(events), events
        assert q.enqueue("the write lock is free", queue="probe") > job_id  # no lock left behind
        # The lease runs out (1 s): the rescuer takes the job back, and it runs again, once.
        wait_for(lambda: bool(q.rescue_expired()), 30, "the killed worker's lease to be rescued")
        again = wait_for(lambda: q.claim("w2"), 30, "the rescued job to be due again")  # after its backoff
        assert again.id == job_id and again.attempts == 2
        q.complete(again)
        assert q.get(job_id).status == jobq.JobStatus.COMPLETED
        assert kinds(q, job_id).count("completed") == 1


@pytest.mark.parametrize("write", WRITES)
def test_a_write_killed_after_its_commit_holds_whole(tmp_path: Path, write: str) -> None:
    url, job_id = _killed_inside(tmp_path, write, "after")
    with jobq.Queue(url) as q:
        stored = q.get(job_id)
        if write == "heartbeat":  # the lease extended: no rescuer takes the job from its worker
            assert (stored.status, stored.lease_owner) == (jobq.JobStatus.PROCESSING, "doomed")
            assert stored.started_at is not None and stored.lease_expires_at is not None
            assert stored.lease_expires_at > stored.started_at + 3000
            assert q.rescue_expired() == []
            return
        expected = {
            "complete": (jobq.JobStatus.COMPLETED, 1),
            "fail": (jobq.JobStatus.PENDING, 1),  # attempts left: retried later
            "release": (jobq.JobStatus.PENDING, 0),  # given back: the attempt not counted
        }[write]
        assert (stored.status, stored.attempts) == expected
        assert stored.lease_expires_at is None  # the lease ended (its owner stays named, as history)
        assert kinds(q, job_id).count(EVENT[write]) == 1
        assert q.rescue_expired() == []
        assert q.enqueue("the write lock is free", queue="probe") > job_id


#: The child: claims ``n`` jobs as "doomed" in one claim (lease 1 s), and is killed once that claim
#: has committed, before the read of the jobs' rows that follows it (a claim of 8 or more returns
#: their ids only, ``ops.claimed_rows``): the WAL hook runs at the commit, the read writes nothing.
BATCH_CHILD = r"""
import os, signal, sys
import apsw
import jobq

url, n = sys.argv[1], int(sys.argv[2])
armed = False

def wal(conn, name, pages):
    if armed:
        os.kill(os.getpid(), signal.SIGKILL)
    return 0

apsw.connection_hooks.append(lambda conn: conn.set_wal_hook(wal))
q = jobq.Queue(url)
armed = True
jobs = q.claim_many("doomed", n, lease=1)
print("claimed", len(jobs), flush=True)
"""


def test_a_batch_claim_killed_between_its_commit_and_the_read_of_its_rows_leaves_its_jobs_to_the_rescuer(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with jobq.Queue(url) as q:
        ids = q.enqueue_many([{"n": n} for n in range(10)], max_attempts=3)
    proc = subprocess.run(
        [sys.executable, "-c", BATCH_CHILD, url, "10"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    assert "claimed" not in proc.stdout, proc.stdout
    settings = jobq.Settings(database_url=url, backoff_base_seconds=0.01, backoff_cap_seconds=0.05)
    with jobq.Queue(settings=settings) as q:
        assert q.backend.integrity_check() == "ok"  # type: ignore[attr-defined]
        for job_id in ids:  # the claim held, whole: each job the killed claimer's, none run
            stored = q.get(job_id)
            assert stored is not None
            assert (stored.status, stored.attempts, stored.lease_owner) == (jobq.JobStatus.PROCESSING, 1, "doomed")
        rescued: list[object] = []
        wait_for(lambda: rescued.extend(q.rescue_expired()) or len(rescued) == 10, 30, "the leases rescued")
        again: list[jobq.Job] = []
        wait_for(lambda: again.extend(q.claim_many("w2", 10)) or len(again) == 10, 30, "the rescued jobs due again")
        assert sorted(j.id for j in again) == sorted(ids) and {j.attempts for j in again} == {2}
        assert q.complete_many([(j, None) for j in again]) == [True] * 10
        assert all(kinds(q, job_id).count("completed") == 1 for job_id in ids)
