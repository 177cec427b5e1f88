"""SQLite: the queue's file removed, moved or replaced by hand under running processes.

A process keeps the file it opened: after ``rm queue.db*`` and a new queue made at the same
path, a worker went on in the removed file, claiming none of the new queue's jobs, and its close
deleted the new queue's -wal by name. A database moved away without its -wal left the -wal to be
taken as the new file's. Each process now checks the path every ``FILE_CHECK_SECONDS``
(``SqliteBackend._check_file``), and a database is never created next to a -wal or -shm left.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from polling import wait_for
from processes import Procs, effects

import jobq
import jobq.backends.sqlite as sqlite_backend
from jobq.observability.metrics import JobqCollector
from jobq.testing import FakeClock
from jobq.worker import JobContext, Worker


@pytest.fixture
def check_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every transaction checks the path (the default waits a second between checks)."""
    monkeypatch.setattr(sqlite_backend, "FILE_CHECK_SECONDS", 0.0)


def _remove(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _raises_replaced(call: Callable[[], object], match: str) -> None:
    with pytest.raises(jobq.StoreReplaced, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)


@pytest.mark.usefixtures("check_every_call")
def test_a_queue_removed_and_made_anew_is_taken_up_and_its_wal_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    old = jobq.Queue(url)
    try:
        old.enqueue_many([{"old": i} for i in range(3)])
        _remove(db)
        with jobq.Queue(url) as new:
            new_id = new.enqueue({"new": 1})
            assert Path(f"{db}-wal").exists()  # the new queue's commit is in its -wal, not yet in the file
            _raises_replaced(old.counts, "replaced by another file")
            # The old connection's close left the new -wal alone (deleted by name, the enqueue
            # would be gone for every connection opened from now on).
            assert Path(f"{db}-wal").exists()
            assert old.count() == 1 and old.get(new_id).payload == {"new": 1}
        with jobq.Queue(url) as fresh:
            assert fresh.count() == 1 and fresh.get(new_id).payload == {"new": 1}
    finally:
        old.close()


@pytest.mark.usefixtures("check_every_call")
def test_a_database_moved_away_is_let_go_and_taken_up_again_when_put_back(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    moved = tmp_path / "moved.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": i} for i in range(5)])
        assert Path(f"{db}-wal").stat().st_size > 0
        os.rename(db, moved)
        _raises_replaced(q.counts, "removed")
        # The commits stay in the -wal at the old name (SQLite checkpoints no moved file at its
        # close): no new queue is made beside it, and the file put back has every job.
        with pytest.raises(jobq.StorageError, match="put the database back"):
            q.counts()
        assert not db.exists()
        os.rename(moved, db)
        assert q.count() == 5


def test_no_database_is_made_next_to_a_wal_left_by_a_removed_one(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": i} for i in range(4)])
        os.rename(db, tmp_path / "away.db")  # its -wal and -shm stay, with the commits
        with pytest.raises(jobq.StorageError, match=r"queue\.db-wal and .*queue\.db-shm are there") as caught:
            jobq.Queue(url)
        assert "\n" not in str(caught.value)
        assert not db.exists()
        os.rename(tmp_path / "away.db", db)  # put back, as the message says
        with jobq.Queue(url) as again:
            assert again.count() == 4


def test_the_check_waits_its_interval(tmp_path: Path) -> None:
    """Once per FILE_CHECK_SECONDS, not per call: a stat per transaction would cost the hot path."""
    db = tmp_path / "queue.db"
    with jobq.Queue(f"sqlite:///{db}") as q:
        q.counts()
        _remove(db)
        q.counts()  # within the second after the last check: served from the file it has open
        wait_for(lambda: _replaced(q), what="the removed file to be found")


def _replaced(q: jobq.Queue) -> bool:
    try:
        q.counts()
    except jobq.StoreReplaced:
        return True
    return False


def test_a_running_worker_takes_up_the_queue_made_anew_and_lists_itself_there(tmp_path: Path, procs: Procs) -> None:
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        first = q.enqueue({"n": 0})
    worker = procs.start("worker", "--db", url, "--lease", "5")
    wait_for(lambda: first in effects(tmp_path), what="the first job to run")
    _remove(db)
    with jobq.Queue(url) as new:
        job = new.enqueue({"n": 1})
        wait_for(lambda: new.get(job).status is jobq.JobStatus.COMPLETED, timeout=30, what="the new queue's job")
        # Registered again in the new file: listed, and reachable by wake-ups.
        wait_for(lambda: any(w.pid == worker.pid for w in new.workers()), what="the worker's row")
        assert worker.poll() is None
    logs = procs.logs()
    assert "registering again" in logs and "Traceback" not in logs


def test_a_worker_frozen_while_its_queue_is_made_anew_takes_it_up_when_it_runs_again(
    tmp_path: Path, procs: Procs
) -> None:
    """SIGSTOP with a job running, ``rm queue.db*`` and a new queue meanwhile, then SIGCONT: the
    worker's first transaction after the freeze finds the file replaced (the check's second has
    long passed). The new queue's job 1 has the id of the run still in flight: that run is
    dropped (``Runs.drop_replaced``; the lease would fence off its writes anyway), and the new
    job 1 is claimed and run like the others, never completed by the old run's write."""
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        held = q.enqueue({}, task="gated")
    worker = procs.start("worker", "--db", url, "--lease", "5")
    wait_for(lambda: (tmp_path / f"started-{held}-{worker.pid}").exists(), what="the old queue's job to start")
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        _remove(db)
        with jobq.Queue(url) as new:
            ids = new.enqueue_many([{"n": i} for i in range(3)])
        assert held in ids  # the same id in both files
        (tmp_path / f"release-{held}").touch()  # the old run ends when the worker runs again
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    with jobq.Queue(url) as new:
        done = lambda: all(new.get(i).status is jobq.JobStatus.COMPLETED for i in ids)  # noqa: E731
        wait_for(done, timeout=30, what="the new queue's jobs")
        for i in ids:
            job = new.get(i)
            assert job.attempts == 1 and job.started_at is not None, job  # claimed and run here
            assert [e.kind for e in new.events(i)].count(jobq.EventKind.COMPLETED) <= 1
        wait_for(lambda: any(w.pid == worker.pid for w in new.workers()), what="the worker's row")
        assert worker.poll() is None
    assert "Traceback" not in procs.logs()


@pytest.mark.usefixtures("check_every_call")
def test_a_run_claimed_from_the_replaced_file_writes_nothing_to_the_new_one(tmp_path: Path) -> None:
    """The worker's run of job 1 outlives its file: the queue is removed and made anew, and the new
    job 1 is another job. The run is dropped (its handler told to stop, no outcome written): its
    heartbeats and completion reached the new job 1 before, refused there by the lease but
    recorded as that job's stale writes, and counted by the exporter as lost leases."""
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    started, stopped = threading.Event(), threading.Event()

    def gated(ctx: JobContext) -> None:
        if ctx.job.task != "gated":
            return
        started.set()
        try:
            while True:
                ctx.sleep(0.02)  # raises once the run must stop
        finally:
            stopped.set()

    q = jobq.Queue(settings=jobq.Settings(database_url=url, lease_seconds=1.5))
    held = q.enqueue({}, task="gated")
    worker = Worker(q, {"gated": gated, "": gated})
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        assert started.wait(30), "the old queue's job never started"
        _remove(db)
        with jobq.Queue(url) as new:
            ids = new.enqueue_many([{"n": i} for i in range(3)])
            assert held in ids  # the same id in both files
            done = lambda: all(new.get(i).status is jobq.JobStatus.COMPLETED for i in ids)  # noqa: E731
            wait_for(done, 30, "the new queue's jobs")
            assert stopped.wait(30), "the old run was never told to stop"
            for i in ids:
                assert new.get(i).attempts == 1
                assert jobq.EventKind.STALE_WRITE_REFUSED not in [e.kind for e in new.events(i)]
    finally:
        worker.stop(force=True)
        t.join(30)
        q.close()
    assert q.store_generation == 1


@pytest.mark.usefixtures("check_every_call")
def test_the_exporter_counts_on_in_the_queue_made_anew(tmp_path: Path) -> None:
    """Its cursors start over on the new file from the last time it read the old one: what the
    new file holds from before is not counted (a restored backup's history), what it holds from
    since is, also what was done before the exporter noticed; its counters go on from their
    totals. Kept, the enqueue cursor stood at an id the new file had not reached; started over at
    the new file's newest ids, the jobs made before the exporter noticed went uncounted."""
    db = tmp_path / "queue.db"
    clock = FakeClock(1_000.0)
    with jobq.Queue(f"sqlite:///{db}", clock=clock) as q:
        # Every backlog read counts as cheap, so each scrape reads the pending jobs anew: a read
        # past 5 ms (a loaded machine) was otherwise served again at the next scrape, 7 for 10.
        collector = JobqCollector(q, settle_seconds=0.0, backlog_free_seconds=60.0)
        _scrape(collector)  # the cursors start here
        q.enqueue_many([{"old": i} for i in range(5)])
        assert _scrape(collector)[("jobq_enqueued_total", ("default",))] == 5
        _remove(db)
        clock.advance(-100)  # the new file's history, from before the exporter's last read
        with jobq.Queue(f"sqlite:///{db}", clock=clock) as new:
            new.enqueue_many([{"history": i} for i in range(9)])
            new.cancel(1)
            clock.advance(101)  # since the last read: made and done before the exporter noticed
            made = new.enqueue({"made": "before the exporter saw the new file"})
            job = new.claim("w")
            assert job is not None and job.id == 2
            new.complete(job)
            new.cancel(made)
            with pytest.raises(jobq.StoreReplaced):
                _scrape(collector)
            figures = _scrape(collector)  # the cursors start again, from the last read
            assert figures[("jobq_enqueued_total", ("default",))] == 6
            assert figures[("jobq_completed_total", ("default",))] == 1
            assert figures[("jobq_cancelled_total", ("default",))] == 1
            assert figures[("jobq_jobs_pending", ("default", "true"))] == 7  # the new file's, not the old's 5
            new.enqueue_many([{"new": i} for i in range(3)])
            figures = _scrape(collector)
        assert figures[("jobq_enqueued_total", ("default",))] == 9
        assert figures[("jobq_jobs_pending", ("default", "true"))] == 10


def _scrape(collector: JobqCollector) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (sample.name, tuple(sample.labels.values())): sample.value
        for family in collector.collect()
        for sample in family.samples
    }
