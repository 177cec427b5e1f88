"""Several real processes on one database: throughput correctness, kills and graceful shutdown."""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlite_trace
from polling import wait_for
from processes import Procs, effects
from worker_thread import running, stop_while_busy

import jobq
from jobq import JobStatus
from jobq.worker import JobContext, Worker

pytestmark = pytest.mark.slow


def _status(url: str, job_id: int) -> JobStatus:
    with jobq.Queue(url) as q:
        return q.get(job_id).status


@pytest.mark.parametrize("batch", [1, 20])
def test_four_workers_two_producers_2000_jobs(backend_url: str, procs: Procs, tmp_path: Path, batch: int) -> None:
    """Every job COMPLETED, its side effect counted exactly once, no lock error reaching anyone."""
    workers = [procs.start("worker", "--db", backend_url, "--batch", str(batch)) for _ in range(4)]
    producers = [procs.start("produce", "--db", backend_url, "--count", "1000", "--prefix", f"p{i}") for i in range(2)]
    for p in producers:
        assert p.wait(300) == 0, procs.logs()[-3000:]
    with jobq.Queue(backend_url) as q:
        wait_for(lambda: q.counts()["COMPLETED"] == 2000, 300, "2000 completed jobs")
        counts = q.counts()
        # Three workers can finish every job before the fourth has even started (seen on a busy
        # machine), and a SIGTERM before its handlers exist kills it outright. Draining is the
        # promise here: stop them once all four run (the registry row is written after set-up
        # installed the handlers).
        wait_for(lambda: len({w.id for w in q.workers()}) >= 4, 120, "all four workers to start")
    for w in workers:
        w.terminate()
    for w in workers:
        assert w.wait(30) == 0
    assert counts == {"PENDING": 0, "PROCESSING": 0, "COMPLETED": 2000, "FAILED": 0, "CANCELLED": 0}
    done = effects(tmp_path)
    duplicates = [i for i, n in collections.Counter(done).items() if n > 1]
    assert len(done) == 2000 and duplicates == []
    logs = procs.logs().lower()
    assert "database is locked" not in logs and "traceback" not in logs
    print(f"\n2000 jobs, 4 workers (batch {batch}), 2 producers: 0 duplicates, 0 lock errors")


def test_sigkill_mid_job_is_rescued_and_completed(backend_url: str, procs: Procs, tmp_path: Path) -> None:
    with jobq.Queue(backend_url) as q:
        job_id = q.enqueue({"seconds": 3600}, task="block", max_attempts=3)
    victim = procs.start("worker", "--db", backend_url, "--lease", "2")
    wait_for(lambda: list(tmp_path.glob(f"started-{job_id}-{victim.pid}")), 60, "the job to start")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    assert _status(backend_url, job_id) == JobStatus.PROCESSING  # until its lease runs out

    # The rescuer: a worker whose handler for "block" just counts.
    rescuer = procs.start("worker", "--db", backend_url, "--lease", "2", "--grace", "0.5")  # its stop: no 10 s drain
    with jobq.Queue(backend_url) as q:
        wait_for(lambda: list(tmp_path.glob(f"started-{job_id}-{rescuer.pid}")), 60, "the rescued job to restart")
        kinds = [e.kind for e in q.events(job_id)]
        assert "rescued" in kinds
        assert q.get(job_id).lease_owner != f"dead-{victim.pid}"
        rescuer.terminate()
        assert rescuer.wait(30) == 0


def test_sigterm_lets_the_running_job_finish(backend_url: str, procs: Procs, tmp_path: Path) -> None:
    with jobq.Queue(backend_url) as q:
        job_id = q.enqueue({"seconds": 1.0}, task="slow")
    worker = procs.start("worker", "--db", backend_url, "--grace", "30")
    wait_for(lambda: list(tmp_path.glob(f"started-{job_id}-*")), 60, "the job to start")
    worker.terminate()
    assert worker.wait(60) == 0
    assert _status(backend_url, job_id) == JobStatus.COMPLETED
    assert effects(tmp_path) == [job_id]


def test_sigterm_releases_what_cannot_finish(backend_url: str, procs: Procs, tmp_path: Path) -> None:
    with jobq.Queue(backend_url) as q:
        job_id = q.enqueue({}, task="block")
        worker = procs.start("worker", "--db", backend_url, "--grace", "0.5", "--lease", "60")
        wait_for(lambda: list(tmp_path.glob(f"started-{job_id}-*")), 60, "the job to start")
        worker.terminate()
        assert worker.wait(30) == 0
        job = q.get(job_id)
        # Released at once, not left to wait for its 60 s lease; the attempt is not counted.
        assert (job.status, job.attempts, job.lease_token) == (JobStatus.PENDING, 0, None)
        assert [e.kind for e in q.events(job_id)][-1] == "released"
        workers = q.workers()
        assert workers[0].stopped_at is not None


def test_a_handler_that_sees_the_shutdown_gives_its_job_back_at_once(
    backend_url: str, procs: Procs, tmp_path: Path
) -> None:
    """``ctx.stopping`` is True once SIGTERM arrives; a handler that then raises
    ``jobq.WorkerShutdown`` has its job released at once (PENDING, its attempt not counted), so
    the worker exits long before its 600 s grace period, and another worker can run the job."""
    with jobq.Queue(backend_url) as q:
        job_id = q.enqueue({}, task="polite")
        worker = procs.start("worker", "--db", backend_url, "--grace", "600", "--lease", "60")
        wait_for(lambda: list(tmp_path.glob(f"started-{job_id}-*")), 60, "the job to start")
        worker.terminate()
        assert worker.wait(60) == 0  # the grace period was 600 s
        job = q.get(job_id)
        assert (job.status, job.attempts, job.lease_token) == (JobStatus.PENDING, 0, None)
        released = q.events(job_id)[-1]
        assert released.kind == "released" and "polite: stopped at a safe point" in str(released.detail)
        assert effects(tmp_path) == []
        assert "its handler gave it back at shutdown" in procs.logs()


def test_worker_shutdown_raised_while_not_stopping_is_a_failure(backend_url: str) -> None:
    """Outside a shutdown, ``WorkerShutdown`` is an error like any other (retried by the job's
    policy): given back uncounted, the job would be claimed and given back for ever."""
    settings = jobq.Settings(backoff_base_seconds=0.01, backoff_cap_seconds=0.05)
    seen: list[bool] = []

    def handler(ctx: JobContext) -> None:
        seen.append(ctx.stopping)
        raise jobq.WorkerShutdown()

    with jobq.Queue(backend_url, settings=settings) as q:
        job_id = q.enqueue({}, max_attempts=2)

        def failed() -> bool:  # a worker that exits when idle, again until the retry has run too
            Worker(q, handler, exit_when_idle=True).run()
            return q.get(job_id).status == JobStatus.FAILED

        wait_for(failed, 30, "the job failed twice")
        job = q.get(job_id)
        assert (job.status, job.attempts, seen) == (JobStatus.FAILED, 2, [False, False])
        assert "WorkerShutdown" in (job.last_error or "")


def test_second_signal_exits_at_once(sqlite_url: str, procs: Procs, tmp_path: Path) -> None:
    with jobq.Queue(sqlite_url) as q:
        job_id = q.enqueue({}, task="block")
        worker = procs.start("worker", "--db", sqlite_url, "--grace", "600")
        wait_for(lambda: list(tmp_path.glob(f"started-{job_id}-*")), 60, "the job to start")
        worker.terminate()
        wait_for(lambda: "draining" in procs.logs(), 30, "the worker to start draining")
        worker.terminate()
        assert worker.wait(30) == 0
        assert q.get(job_id).status == JobStatus.PENDING


def test_cancel_running_job_stops_handler(sqlite_url: str) -> None:
    settings = jobq.Settings(database_url=sqlite_url, lease_seconds=0.6)
    started = threading.Event()

    def handler(ctx: JobContext) -> None:
        started.set()
        ctx.sleep(60)

    with jobq.Queue(settings=settings) as q:
        job_id = q.enqueue({})
        worker = Worker(q, handler)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            assert started.wait(30)
            assert q.cancel(job_id, actor="op").status == JobStatus.PROCESSING
            wait_for(lambda: q.get(job_id).status == JobStatus.CANCELLED, 30, "the job to be cancelled")
        finally:
            worker.stop()
            thread.join(30)
        assert [e.kind for e in q.events(job_id)][-2:] == ["cancel_requested", "cancelled"]


def test_timeout_fails_the_attempt(sqlite_url: str) -> None:
    settings = jobq.Settings(database_url=sqlite_url, backoff_base_seconds=0.01)

    def handler(ctx: JobContext) -> None:
        ctx.sleep(60)

    with jobq.Queue(settings=settings) as q:
        job_id = q.enqueue({}, timeout=0.3, max_attempts=1)
        worker = Worker(q, handler, exit_when_idle=True)
        thread = threading.Thread(target=worker.run)
        thread.start()
        thread.join(60)
        job = q.get(job_id)
        assert job.status == JobStatus.FAILED and "timed out" in (job.last_error or "")


def test_handler_errors_keep_their_traceback_and_unknown_tasks_fail(sqlite_url: str) -> None:
    def boom(ctx: JobContext) -> None:
        raise ValueError("bad value in payload")

    with jobq.Queue(settings=jobq.Settings(database_url=sqlite_url, backoff_base_seconds=0.001)) as q:
        failing = q.enqueue({}, task="boom", max_attempts=2)
        unknown = q.enqueue({}, task="nobody", max_attempts=5)
        Worker(q, {"boom": boom}, exit_when_idle=True).run()
        wait_for(lambda: q.get(failing).status == JobStatus.PENDING or q.get(failing).attempts == 2, 10, "retry")
        Worker(q, {"boom": boom}, exit_when_idle=True).run()
        first = q.get(failing)
        assert "Traceback" in (first.last_error or "") and "bad value in payload" in (first.last_error or "")
        lost = q.get(unknown)
        assert lost.status == JobStatus.FAILED and lost.attempts == 1
        assert "no handler for task 'nobody'" in (lost.last_error or "")


def test_hand_made_status_change_of_a_running_job_keeps_its_claim_in_history(sqlite_url: str) -> None:
    """The trigger's event carries the claim of the attempt it ended (claims are not events)."""
    db = sqlite_url.removeprefix("sqlite:///")
    with jobq.Queue(sqlite_url) as q:
        job_id = q.enqueue("x")
        job = q.claim("w")
        assert job is not None
        subprocess.run(["sqlite3", db, f"UPDATE jobs SET status='FAILED' WHERE id={job_id};"], check=True)
        history = q.events(job_id)
        ended = {"from": "PROCESSING", "to": "FAILED", "claimed_at": job.started_at, "claimed_by": "w"}
        assert (history[-1].kind, history[-1].detail) == ("external_update", ended)
        assert [(str(e.kind), e.actor) for e in history] == [
            ("enqueued", None),
            ("claimed", "w"),
            ("external_update", "sql"),
        ]
        with pytest.raises(jobq.LeaseLost):
            q.complete(job)


def test_seed_raw_sqlite3_update_is_honoured(sqlite_url: str, tmp_path: Path) -> None:
    """The seed's demo step 6, with the Debian sqlite3 shell, against a live database."""
    db = sqlite_url.removeprefix("sqlite:///")
    done: list[int] = []
    with sqlite_trace.transactions() as seen, jobq.Queue(sqlite_url) as q:
        ids = q.enqueue_many([{"path": f"data/files/{i}.txt"} for i in range(3)], delay=3600)
        worker = Worker(q, lambda ctx: done.append(ctx.job.id))
        thread = threading.Thread(target=worker.run, name="worker-main")
        thread.start()
        try:
            # The sqlite3 shell has no busy timeout: a write that lands on one of the worker's
            # fails with "database is locked" as the seed's user would see. Past its start-up
            # writes (registration, the first heartbeat, the first claim), an idle worker writes
            # only its registry heartbeat every few seconds: its polls (two reads: the sleep
            # after the first claim, the next pass's look for due jobs) and its rescues are reads.
            wait_for(lambda: seen.reads["worker-main"] >= 2, 30, "the worker's first idle poll")
            workers_writes = [name for name in seen.writes if name != "MainThread"]  # not the test's enqueue
            assert sorted(workers_writes) == ["jobq-heartbeat", "worker-main", "worker-main"], seen.writes
            subprocess.run(
                ["sqlite3", db, "UPDATE jobs SET status='FAILED' WHERE status='PENDING' LIMIT 1;"],
                check=True,
                capture_output=True,
            )
            failed = q.list(jobq.JobFilter(statuses=(JobStatus.FAILED,)))
            assert [j.id for j in failed] == [ids[0]]
            assert failed[0].finished_at is not None and failed[0].last_error
            assert [e.kind for e in q.events(ids[0])][-1] == "external_update"
            assert q.resubmit(ids[0], actor="demo").status == JobStatus.PENDING
            wait_for(lambda: q.get(ids[0]).status == JobStatus.COMPLETED, 30, "the resubmitted job to complete")
            assert done == [ids[0]]
            read = subprocess.run(
                ["sqlite3", db, "SELECT status FROM jobs ORDER BY id;"], check=True, capture_output=True, text=True
            )
            assert read.stdout.split() == ["COMPLETED", "PENDING", "PENDING"]
        finally:
            worker.stop()
            thread.join(30)
        check = subprocess.run(["sqlite3", db, "PRAGMA integrity_check;"], capture_output=True, text=True)
        assert check.stdout.strip() == "ok"
    assert os.path.exists(db)


def test_jobs_of_a_killed_local_worker_are_rescued_without_waiting_for_the_lease(
    sqlite_url: str, procs: Procs, tmp_path: Path
) -> None:
    """The seed's step 8: kill -9 a consumer; its job goes back at once, not after 5 minutes."""
    with jobq.Queue(sqlite_url) as q:
        job_id = q.enqueue({}, task="block")
        victim = procs.start("worker", "--db", sqlite_url, "--lease", "300")
        wait_for(lambda: list(tmp_path.glob(f"started-{job_id}-{victim.pid}")), 60, "the job to start")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        survivor = procs.start("worker", "--db", sqlite_url, "--lease", "300", "--grace", "0.5")
        wait_for(lambda: list(tmp_path.glob(f"started-{job_id}-{survivor.pid}")), 60, "another worker to take it")
        assert q.get(job_id).lease_owner != q.events(job_id)[1].actor
        assert [e.kind for e in q.events(job_id)][:3] == ["enqueued", "claimed", "rescued"]
        assert "exited" in (q.get(job_id).last_error or "")  # not "lease expired": 300 s had not passed
        dead = [w for w in q.workers() if w.pid == victim.pid]
        assert dead and dead[0].stopped_at is not None and dead[0].end_reason == jobq.WorkerEnd.CRASHED
        survivor.terminate()  # a clean stop says so: "stopped", never "crashed"
        survivor.wait(30)
        (clean,) = [w for w in q.workers() if w.pid == survivor.pid]
        assert clean.end_reason == jobq.WorkerEnd.STOPPED


def test_a_handlers_reason_for_giving_back_is_kept_to_an_events_size(backend_url: str) -> None:
    """The reason is the handler's own text: 100,000 characters with a NUL among them are stored
    cut to an event's size, on PostgreSQL too (whose text cannot hold a NUL), and the job is given
    back."""
    started = threading.Event()

    def handler(ctx: JobContext) -> None:
        started.set()
        while not ctx.stopping:
            ctx.sleep(0.02)
        raise jobq.WorkerShutdown("giving back\x00" + "x" * 100_000)

    settings = jobq.Settings(shutdown_grace_seconds=600)
    with jobq.Queue(backend_url, settings=settings) as q:
        job_id = q.enqueue({})
        stop_while_busy(Worker(q, handler), started)  # the grace period is 600 s
        job = q.get(job_id)
        assert (job.status, job.attempts) == (JobStatus.PENDING, 0)
        released = q.events(job_id)[-1]
        reason = str(released.detail["reason"])
        assert released.kind == "released" and reason.startswith("giving back") and len(reason) <= 4_000
        assert "characters cut" in reason


def _refused(q: jobq.Queue, job_id: int, worker_id: str) -> list[str]:
    """The operations of ``worker_id``'s writes for the job that were refused, in order."""
    return [
        str(e.detail.get("operation"))
        for e in q.events(job_id)
        if e.kind == "stale_write_refused" and e.actor == worker_id
    ]


def test_a_run_whose_lease_was_lost_is_not_given_back_at_shutdown(
    backend_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that ignores its lease runs on after its job was rescued from its worker (a
    rescuer whose clock judged the lease over); the worker, told at its next heartbeat, then
    stops with the run still going. The job is no longer the worker's to give back: no release
    is sent (it was refused and recorded as a stale write, a second refusal in the job's history,
    and logged as a release that failed, "to be rescued", of a job rescued already). Its
    handler's ``ensure_lease`` raises LeaseLost at once, with no write either."""
    started, probe, release = threading.Event(), threading.Event(), threading.Event()
    probed: list[str] = []

    def stubborn(ctx: JobContext) -> None:
        started.set()
        assert probe.wait(60)
        try:  # the lease is known lost: refused at once, with no write (no second refusal)
            ctx.ensure_lease()
        except jobq.LeaseLost as exc:
            probed.append(type(exc).__name__)
        release.wait(60)

    settings = jobq.Settings(lease_seconds=1.5, shutdown_grace_seconds=0.2)
    with jobq.Queue(backend_url, settings=settings) as q:
        job_id = q.enqueue({})
        worker = Worker(q, stubborn)

        try:
            with caplog.at_level(logging.INFO, logger="jobq"), running(worker):  # stopped on the way out
                assert started.wait(30)
                with jobq.Queue(backend_url, clock=lambda: time.time() + 3600) as late:
                    assert [r.job_id for r in late.rescue_expired(actor="test")] == [job_id]
                beaten = lambda: _refused(q, job_id, worker.id) == ["heartbeat"]  # noqa: E731
                wait_for(beaten, 30, "the worker's heartbeat to be refused")
                probe.set()
                wait_for(lambda: probed == ["LeaseLost"], 30, "the handler's ensure_lease to raise")
        finally:
            probe.set()
            release.set()
        assert _refused(q, job_id, worker.id) == ["heartbeat"]  # nothing more: no heartbeat again, no release
        assert "release failed" not in caplog.text
        assert "lease lost" in caplog.text
        job = q.get(job_id)
        assert (job.status, job.lease_token, job.attempts) == (JobStatus.PENDING, None, 1)  # as rescued


class _WatchedLock:
    """The worker's write lock, telling which threads wait for it (the test's only window into
    who is blocked where: no sleep decides the order)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waiting: set[str] = set()

    def __enter__(self) -> None:
        name = threading.current_thread().name
        self.waiting.add(name)
        self._lock.acquire()
        self.waiting.discard(name)

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_a_handlers_ensure_lease_during_the_refused_heartbeat_is_not_sent(backend_url: str) -> None:
    """The handler calls ``ensure_lease`` while the heartbeat that finds its lease lost is on
    its way back (refused, not yet marked). The handler's check waits for the heartbeat and then
    raises LeaseLost without a write of its own: the job's history holds one refusal. Before, the
    check went out beside the heartbeat and was refused and recorded too (a frozen worker's
    running job, continued, showed two refusals)."""
    started, probe = threading.Event(), threading.Event()
    refused_beat, go = threading.Event(), threading.Event()
    probed: list[str] = []

    def checks(ctx: JobContext) -> None:
        started.set()
        assert probe.wait(60)
        threading.current_thread().name = "handler"
        try:
            ctx.ensure_lease()
        except jobq.LeaseLost as exc:
            probed.append(type(exc).__name__)

    settings = jobq.Settings(lease_seconds=1.5, shutdown_grace_seconds=0.2)
    with jobq.Queue(backend_url, settings=settings) as q:
        job_id = q.enqueue({})
        worker = Worker(q, checks)
        lock = _WatchedLock()
        worker.runs.write_lock = lock  # type: ignore[assignment]  # the same lock, watched
        beat = q.heartbeat_many

        def held_beat(jobs: list[jobq.Job], *args: object, **kwargs: object) -> list[object]:
            results = beat(jobs, *args, **kwargs)  # type: ignore[arg-type]
            # The heartbeater's refusal is in, its marking not yet (ensure_lease, before the fix,
            # came through here too, and passes).
            if any(not r.alive for r in results) and not refused_beat.is_set():
                refused_beat.set()
                assert go.wait(60)
            return results

        q.heartbeat_many = held_beat  # type: ignore[method-assign,assignment]

        try:
            with running(worker):
                assert started.wait(30)
                with jobq.Queue(backend_url, clock=lambda: time.time() + 3600) as late:
                    assert [r.job_id for r in late.rescue_expired(actor="test")] == [job_id]
                assert refused_beat.wait(30), "the worker's heartbeat to be refused"
                probe.set()
                # The handler now waits for the heartbeat (fixed), or has sent its own check and
                # been refused (before): either is seen without a sleep.
                wait_for(lambda: "handler" in lock.waiting or probed, 30, "the handler's ensure_lease")
                go.set()
                wait_for(lambda: probed == ["LeaseLost"], 30, "the handler's ensure_lease to raise")
        finally:
            probe.set()
            go.set()
        assert _refused(q, job_id, worker.id) == ["heartbeat"]  # the heartbeat's refusal only
