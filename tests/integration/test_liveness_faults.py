"""Live work is never taken from a healthy worker: faults that used to cost attempts and re-run
side effects (found with kills, SIGSTOP, locks held for seconds, lost COMMIT replies)."""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from children import stopped
from polling import wait_for
from processes import Procs, effects

import jobq
from jobq.worker import JobContext, Worker

P, R, C = jobq.JobStatus.PENDING, jobq.JobStatus.PROCESSING, jobq.JobStatus.COMPLETED


def _kinds(q: jobq.Queue, job_id: int) -> list[str]:
    return [str(e.kind) for e in q.events(job_id)]


@pytest.fixture
def fast_settings(backend_url: str) -> jobq.Settings:
    return jobq.Settings(
        database_url=backend_url,
        lease_seconds=1.0,
        rescue_interval_seconds=0.1,
        poll_interval_seconds=0.05,
        backoff_base_seconds=0.05,
        backoff_cap_seconds=0.1,
        max_attempts=2,
    )


@pytest.fixture
def run_worker() -> Iterator[object]:
    """Start a Worker on a thread; it is stopped (forced) when the test ends, also on failure."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(worker: Worker) -> Worker:
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        started.append((worker, t))
        return worker

    yield start
    for worker, t in started:
        worker.stop(force=True)
        t.join(30)


def test_a_job_claimed_again_by_the_same_worker_keeps_being_heartbeated(
    fast_settings: jobq.Settings, run_worker
) -> None:
    """The old run of a job ends after the same worker claimed the job again: forgetting the old
    run must not forget the new lease (it expired in a healthy worker, the job ended FAILED)."""
    first_may_end, second_may_end = threading.Event(), threading.Event()
    second_started = threading.Event()

    def handler(ctx: JobContext) -> str:
        if ctx.job.attempts == 1:
            first_may_end.wait(60)  # ignores the cancel its lost lease sets: threads cannot be killed
            return "first"
        second_started.set()
        second_may_end.wait(60)
        return "second"

    with jobq.Queue(settings=fast_settings) as q:
        job_id = q.enqueue({})
        worker = run_worker(Worker(q, handler, concurrency=2))
        wait_for(lambda: q.get(job_id).status == R, 30, "the first claim")
        # Take the lease away, as a rescuer does that believes the worker gone (e.g. after a freeze).
        assert [r.job_id for r in q.rescue_expired(gone_owners=[worker.id])] == [job_id]
        assert second_started.wait(30), "the same worker claims the job again"
        second = q.get(job_id)
        assert second.attempts == 2
        first_may_end.set()  # the old run ends now; its lease was lost, its result is dropped
        # The new lease must go on being extended, well past several lease lengths.
        wait_for(
            lambda: (q.get(job_id).lease_expires_at or 0) > (second.lease_expires_at or 0) + 3 * 1.0,
            30,
            "the second lease to be heartbeated for three lease lengths",
        )
        second_may_end.set()
        done = wait_for(lambda: (j := q.get(job_id)).status == C and j, 30, "completion")
        assert done.result == "second" and done.attempts == 2
        assert "expired" not in _kinds(q, job_id)


def test_a_cancel_that_comes_after_the_handler_finished_completes_the_job(
    fast_settings: jobq.Settings, run_worker
) -> None:
    entered, may_return = threading.Event(), threading.Event()
    seen: list[JobContext] = []

    def handler(ctx: JobContext) -> dict[str, int]:
        seen.append(ctx)
        entered.set()
        may_return.wait(60)
        return {"done": 1}  # finished its work; never looked at the cancel

    with jobq.Queue(settings=fast_settings) as q:
        job_id = q.enqueue({})
        run_worker(Worker(q, handler))
        assert entered.wait(30)
        q.cancel(job_id, actor="ann")
        wait_for(lambda: seen[0].cancel_requested, 30, "the worker to see the cancel")
        may_return.set()
        done = wait_for(lambda: (j := q.get(job_id)).status == C and j, 30, "completion")
        assert done.result == {"done": 1}
        last = q.events(job_id)[-1]
        assert last.kind == "completed" and "cancel" in last.detail["note"]


def test_a_lease_known_lost_is_not_heartbeated_again(fast_settings: jobq.Settings, run_worker) -> None:
    may_end = threading.Event()

    def handler(ctx: JobContext) -> None:
        may_end.wait(60)  # ignores the lost lease

    with jobq.Queue(settings=fast_settings.replace(max_attempts=1)) as q:
        job_id = q.enqueue({})
        worker = run_worker(Worker(q, handler))
        wait_for(lambda: q.get(job_id).status == R, 30, "the claim")
        q.rescue_expired(gone_owners=[worker.id])  # out of attempts: FAILED
        wait_for(lambda: "stale_write_refused" in _kinds(q, job_id), 30, "the first refused heartbeat")
        seen = {w.id: w.last_seen_at for w in q.workers()}[worker.id]
        # Several more heartbeats of this worker (its registry row moves each time)...
        wait_for(
            lambda: {w.id: w.last_seen_at for w in q.workers()}[worker.id] > seen + 3 * fast_settings.heartbeat_seconds,
            30,
            "three more heartbeats",
        )
        # ...but the lost lease was refused (and recorded) once, not once per beat.
        assert _kinds(q, job_id).count("stale_write_refused") == 1
        may_end.set()


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_a_claim_that_waited_for_the_lock_grants_a_full_lease(backend_url: str, tmp_path: Path) -> None:
    """Leases run from when they are granted, not from when the claim began to wait."""
    with jobq.Queue(backend_url) as q:
        q.enqueue({})
        holder = _lock_holder(tmp_path)
        holder.execute("BEGIN IMMEDIATE")  # a writer that holds the lock for seconds
        box: list[jobq.Job | None] = []
        t = threading.Thread(target=lambda: box.append(q.claim("w", lease=1.0)))
        t.start()
        time.sleep(1.5)  # the fault: the lock is held longer than the lease
        holder.execute("COMMIT")
        t.join(30)
        granted_at = time.time()
        job = box[0]
        assert job is not None and job.lease_expires_at is not None
        assert job.lease_expires_at > granted_at - 0.5, "the lease was already (nearly) expired when handed out"
        holder.close()


def test_a_heartbeat_that_waited_for_a_lock_extends_from_when_it_was_written(backend_url: str, tmp_path: Path) -> None:
    with jobq.Queue(backend_url) as q:
        q.enqueue({})
        job = q.claim("w", lease=1.0)
        assert job is not None
        release = _hold_job_lock(backend_url, tmp_path, job.id)
        t = threading.Thread(target=q.heartbeat, args=(job,), kwargs={"lease": 1.0})
        t.start()
        time.sleep(1.5)  # the fault: the job's row (SQLite: the database) stays locked past the lease
        release()
        t.join(30)
        written_at = time.time()
        assert (q.get(job.id).lease_expires_at or 0) > written_at - 0.5


def test_completions_and_a_claim_that_waited_for_a_lock_lease_from_when_granted(
    backend_url: str, tmp_path: Path
) -> None:
    """The worker's completions and next claim (PostgreSQL: one statement) wait for a completed
    job's row lock held by someone else; the jobs claimed meanwhile get a lease that runs from
    when the wait ended, not from when the call began (else a wait past the lease would hand out
    jobs already expired, for a rescuer to give to a second worker)."""
    with jobq.Queue(backend_url) as q:
        q.enqueue_many([{}, {}])
        job = q.claim("w", lease=1.0)
        assert job is not None
        release = _hold_job_lock(backend_url, tmp_path, job.id)
        box: list[tuple[list[bool], list[jobq.Job]]] = []
        t = threading.Thread(target=lambda: box.append(q.complete_many_and_claim([(job, None)], "w", 1, lease=1.0)))
        t.start()
        time.sleep(2.0)  # the fault: the lock is held for twice the lease
        release()
        t.join(30)
        granted_at = time.time()
        done, more = box[0]
        assert done == [True] and len(more) == 1
        assert (more[0].lease_expires_at or 0) > granted_at - 0.5, "the lease was already expired when handed out"


def _lock_holder(tmp_path: Path) -> apsw.Connection:
    """A connection to the test's SQLite file that may wait for the lock before it holds it: the
    worker may be writing (a heartbeat, a registry beat) at the moment the fault begins, and a
    BEGIN IMMEDIATE without a busy timeout then fails at once (BusyError) instead of the test."""
    conn = apsw.Connection(str(tmp_path / "queue.db"))
    conn.set_busy_timeout(30_000)
    return conn


def _hold_job_lock(url: str, tmp_path: Path, job_id: int):
    """Lock what a heartbeat of ``job_id`` must write; returns the function that releases it."""
    if url.startswith("sqlite"):
        conn = _lock_holder(tmp_path)
        conn.execute("BEGIN IMMEDIATE")

        def release() -> None:
            conn.execute("COMMIT")
            conn.close()

        return release
    from pg import raw_connect

    pg = raw_connect(url)
    pg.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))

    def release_pg() -> None:
        pg.commit()
        pg.close()

    return release_pg


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_a_lock_held_past_the_lease_takes_no_job_from_a_live_worker(
    backend_url: str, procs: Procs, tmp_path: Path
) -> None:
    """A writer frozen mid-transaction stalls every writer on SQLite: heartbeats wait, leases run
    out. When it lets go, no rescuer may take the jobs of the workers that were waiting too."""
    with jobq.Queue(backend_url) as q:
        ids = [q.enqueue({"seconds": 5.0}, task="slow") for _ in range(3)]
        for _ in range(3):
            procs.start("worker", "--db", backend_url, "--lease", "1.5", "--rescue-interval", "0.1")
        wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 3, 60, "all three jobs to start")
        holder = _lock_holder(tmp_path)
        holder.execute("BEGIN IMMEDIATE")
        time.sleep(3.0)  # the fault: the lock is held for twice the lease
        holder.execute("COMMIT")
        holder.close()
        wait_for(lambda: all(q.get(i).status == C for i in ids), 60, "every job to complete")
        for job_id in ids:
            assert q.get(job_id).attempts == 1, (job_id, _kinds(q, job_id), procs.logs()[-3000:])
            assert "rescued" not in _kinds(q, job_id)
        assert sorted(effects(tmp_path)) == sorted(ids)


def _step(skew: Path, seconds: float) -> None:
    """Step the clock of every process started with ``JOBQ_TEST_CLOCK_SKEW_FILE=skew`` (procs.py)."""
    stepped = skew.with_name("skew.tmp")
    stepped.write_text(repr(seconds))
    stepped.replace(skew)  # at once for every process: no read sees half a file


def _skew_file(tmp_path: Path, seconds: float) -> Path:
    """The file whose seconds the clocks of the processes started on it are off by (procs.py)."""
    skew = tmp_path / "skew"
    skew.write_text(repr(seconds))
    return skew


def _worker_on(procs: Procs, url: str, skew: Path, lease: float) -> Any:
    """A worker process whose clock reads ``skew``, rescuing every 0.1 s."""
    env = {"JOBQ_TEST_CLOCK_SKEW_FILE": str(skew)}
    return procs.start("worker", "--db", url, "--lease", str(lease), "--rescue-interval", "0.1", env=env)


def _freeze(proc: Any, q: jobq.Queue) -> None:
    """SIGSTOP the worker ``proc`` between its transactions. Stopped inside one (it rescues every
    0.1 s and beats its heartbeats), it held SQLite's write lock until continued, and the test's
    own writes gave up after 120 s: a frozen holder of the lock is test_frozen_transaction.py's
    fault, not these tests'. Stopped again until it holds no lock (its transactions are short)."""
    deadline = time.monotonic() + 30
    while True:
        proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: stopped(proc.pid), 10, "the worker to stop")
        if not q.blockers():
            return
        proc.send_signal(signal.SIGCONT)
        assert time.monotonic() < deadline, f"the worker held the write lock at every stop: {q.blockers()}"


def _each_ran_once_and_nobody_lost(q: jobq.Queue, ids: list[int], procs: Procs, tmp_path: Path) -> None:
    wait_for(lambda: all(q.get(i).status == C for i in ids), 60, "every job to complete")
    for job_id in ids:
        assert q.get(job_id).attempts == 1, (job_id, _kinds(q, job_id), procs.logs()[-3000:])
        assert "rescued" not in _kinds(q, job_id)
    assert sorted(effects(tmp_path)) == sorted(ids)
    assert "marked lost" not in procs.logs()


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_the_hosts_clock_jumping_ahead_takes_no_job_from_a_live_worker(
    backend_url: str, procs: Procs, tmp_path: Path
) -> None:
    """Every worker's wall clock jumps five minutes ahead at once, as after the host was
    suspended (a laptop's lid closed, a VM paused: the monotonic clock did not count the sleep)
    or NTP stepped it. Every lease on SQLite, judged by this host's clock, then reads five
    minutes expired, though no worker stopped. No rescuer may take the jobs: each process sees
    its clock jump against its monotonic one, and waits for the heartbeats as after a stall.
    (procs.py steps ``time.time()`` of the workers alone: the test's own reads need no clock.)"""
    skew = _skew_file(tmp_path, 0)
    with jobq.Queue(backend_url) as q:
        ids = [q.enqueue({"seconds": 4.0}, task="slow") for _ in range(3)]
        for _ in range(3):
            _worker_on(procs, backend_url, skew, 1.5)
        wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 3, 60, "all three jobs to start")
        _step(skew, 300)  # the fault: at once for every worker, mid-run
        _each_ran_once_and_nobody_lost(q, ids, procs, tmp_path)
        assert "this host's clock jumped 300.0 s ahead" in procs.logs()


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_a_worker_started_after_the_hosts_clock_jumped_takes_no_job_from_a_live_worker(
    backend_url: str, procs: Procs, tmp_path: Path
) -> None:
    """The workers running the jobs are frozen (SIGSTOP: no heartbeat of theirs can land), the
    host's clock jumps five minutes ahead, and a new worker starts. Its first rescue finds every
    lease five minutes expired and every pid alive, and it saw no jump itself: the registry's
    clock bases of the others (wall less monotonic clock at their last beat) tell it of the jump,
    and it waits for their heartbeats. Continued, they finish their jobs, once each (before: the
    new worker took the jobs at once and ran them again). PostgreSQL corrects a host's clock to
    the server's instead (``test_clock_skew.py``)."""
    skew = _skew_file(tmp_path, 0)
    with jobq.Queue(backend_url) as q:
        ids = [q.enqueue({"seconds": 2.0}, task="slow") for _ in range(2)]
        running = [_worker_on(procs, backend_url, skew, 6) for _ in range(2)]
        wait_for(lambda: all(q.get(i).status == jobq.JobStatus.PROCESSING for i in ids), 60, "both jobs to be claimed")
        wait_for(lambda: all(w.clock_base is not None for w in q.workers()), 30, "the workers' registry rows")
        for worker in running:
            _freeze(worker, q)
        try:
            _step(skew, 300)  # the fault, for every process that reads this host's clock
            _worker_on(procs, backend_url, skew, 6)
            seen = lambda: "before this worker started" in procs.logs()  # noqa: E731
            rescued = lambda: any("rescued" in _kinds(q, i) for i in ids)  # noqa: E731
            wait_for(lambda: seen() or rescued(), 60, "the new worker to see the jump (or to take the jobs)")
        finally:
            for worker in running:
                worker.send_signal(signal.SIGCONT)
        _each_ran_once_and_nobody_lost(q, ids, procs, tmp_path)
        assert "this host's clock jumped 300.0 s ahead before this worker started" in procs.logs()


def test_a_worker_watches_the_hosts_clock_for_steps_and_not_a_clock_moved_by_hand(backend_url: str) -> None:
    """The jump rule applies to jobq's own clock; a ``clock=`` of the caller's (``FakeClock``,
    advanced past a lease by a test to see a rescue) is used as it is."""
    from jobq.testing import FakeClock

    with jobq.Queue(backend_url) as own, jobq.Queue(backend_url, clock=FakeClock()) as fake:
        assert own.default_clock and not fake.default_clock
        assert Worker(own, lambda ctx: None).stalls.steps
        assert not Worker(fake, lambda ctx: None).stalls.steps


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("ending", ["failure", "release"])
def test_a_failure_or_a_release_that_met_a_held_lock_is_written_once_it_is_let_go(
    backend_url: str, tmp_path: Path, run_worker: Any, caplog: pytest.LogCaptureFixture, ending: str
) -> None:
    """A writer holds SQLite's lock for longer than a write may wait (``busy_timeout=300``) while a
    worker writes a failed attempt, or gives a job back at shutdown: each write gives up, is kept
    and written again once the lock is let go, once: the failed job is retried and then fails for
    good (its two attempts counted once each), the given-back job is PENDING with no attempt
    spent, and no write of either was refused or counted twice."""
    caplog.set_level(logging.WARNING, logger="jobq")  # the worker's lines, from its threads too
    url = f"{backend_url}?busy_timeout=300"
    settings = jobq.Settings(database_url=url, backoff_base_seconds=0.01, backoff_cap_seconds=0.05)
    started, fail_now = threading.Event(), threading.Event()

    def handler(ctx: JobContext) -> None:
        started.set()
        if ending == "failure":
            assert fail_now.wait(30)
            raise RuntimeError("boom")
        while not ctx.stopping:  # a handler that gives its job back when the worker stops
            time.sleep(0.01)
        raise jobq.WorkerShutdown("the worker is stopping")

    with jobq.Queue(url, settings=settings) as q:
        job_id = q.enqueue({"x": 1}, max_attempts=2)
        worker = run_worker(Worker(q, handler, concurrency=1, name="w"))
        assert started.wait(30)
        holder = _lock_holder(tmp_path)
        holder.execute("BEGIN IMMEDIATE")  # the fault: a writer that holds the lock for seconds
        try:
            if ending == "failure":
                fail_now.set()
            else:
                threading.Thread(target=worker.stop, daemon=True).start()
            wait_for(lambda: any("could not record" in r.getMessage() for r in caplog.records), 30,
                     "the worker's write to meet the lock and give up")  # fmt: skip
        finally:
            holder.execute("COMMIT")
            holder.close()
        if ending == "failure":
            done = wait_for(lambda: (j := q.get(job_id)) is not None and j.status == jobq.JobStatus.FAILED and j,
                            30, "the job failed for good")  # fmt: skip
            assert done.attempts == 2
            assert _kinds(q, job_id) == ["enqueued", "claimed", "retry_scheduled", "claimed", "failed"]
        else:
            given = wait_for(lambda: (j := q.get(job_id)) is not None and j.status == P and j, 30, "the job given back")
            assert given.attempts == 0
            assert _kinds(q, job_id) == ["enqueued", "claimed", "released"]


def test_a_give_back_that_committed_but_raised_is_repeated_and_recognised(
    backend_url: str, run_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker gives a job back at shutdown; its write commits, but the call raises (a reply lost
    after the commit, with no way to settle it then). The worker keeps the give-back and writes it
    again as a repeat (``release_many(..., repeat=True)``), which the store recognises as applied:
    the job is PENDING with no attempt spent, one ``released`` event, no stale write recorded."""
    caplog.set_level(logging.WARNING, logger="jobq")
    settings = jobq.Settings(database_url=backend_url, backoff_base_seconds=0.01, backoff_cap_seconds=0.05)
    started = threading.Event()

    def handler(ctx: JobContext) -> None:
        started.set()
        while not ctx.stopping:
            time.sleep(0.01)
        raise jobq.WorkerShutdown("the worker is stopping")

    with jobq.Queue(backend_url, settings=settings) as q:
        job_id = q.enqueue({"x": 1}, max_attempts=2)
        real = q.release_many
        repeats: list[bool] = []

        def reply_lost_once(jobs: Any, reason: str = "", *, repeat: bool = False) -> list[bool]:
            repeats.append(repeat)
            given = real(jobs, reason, repeat=repeat)  # the fault comes after the real commit
            if len(repeats) == 1:
                raise jobq.StorageError("the reply to the commit was lost")
            return given

        q.release_many = reply_lost_once  # type: ignore[method-assign]
        worker = run_worker(Worker(q, handler, concurrency=1, name="w"))
        assert started.wait(30)
        threading.Thread(target=worker.stop, daemon=True).start()
        wait_for(lambda: len(repeats) >= 2, 30, "the worker to write its give-back again")
        assert repeats == [False, True]
        assert any("could not record" in r.getMessage() for r in caplog.records)
        given = q.get(job_id)
        assert (given.status, given.attempts) == (P, 0)
        assert _kinds(q, job_id) == ["enqueued", "claimed", "released"]
        again = q.claim("w2")  # it runs again, both its attempts intact
        assert again is not None and again.id == job_id and again.attempts == 1


def _skewed(url: str, skew: Path) -> jobq.Queue:
    """A producer on this host's clock as the workers read it (``skew``): its rows are stamped so."""
    return jobq.Queue(url, clock=lambda: time.time() + float(skew.read_text()))


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_jobs_enqueued_before_the_hosts_clock_was_set_back_run_at_once(
    backend_url: str, procs: Procs, tmp_path: Path
) -> None:
    """The host's clock ran an hour ahead while jobs were enqueued, then NTP stepped it back: the
    jobs, due at once, were stamped an hour ahead and waited for the clock to catch up (an
    hour). The worker sees its clock set back against its monotonic one, and makes the waiting
    jobs written before the step as if written now: they run at once, each once."""
    skew = _skew_file(tmp_path, 3600)
    with jobq.Queue(backend_url) as q, _skewed(backend_url, skew) as producer:
        worker = _worker_on(procs, backend_url, skew, 3)
        wait_for(lambda: any(w.clock_base is not None for w in q.workers()), 30, "the worker's registry row")
        _freeze(worker, q)  # so that it claims none before the step
        try:
            ids = [producer.enqueue({"seconds": 0.1}, task="slow") for _ in range(3)]
            _step(skew, 0)  # the fault: the clock set back an hour
        finally:
            worker.send_signal(signal.SIGCONT)
        _each_ran_once_and_nobody_lost(q, ids, procs, tmp_path)
        assert "this host's clock was set back 3600." in procs.logs()
        assert "3 waiting job(s) written before the step made due" in procs.logs()
        assert all(_kinds(q, i)[:2] == ["enqueued", "restamped"] for i in ids), [_kinds(q, i) for i in ids]


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_a_worker_started_after_the_hosts_clock_was_set_back_runs_the_jobs_written_before(
    backend_url: str, procs: Procs, tmp_path: Path
) -> None:
    """As above, but the worker that ran through the step is frozen (SIGSTOP) and a new one
    starts after it: it saw no step itself, and the frozen worker's clock base in the registry
    (wall less monotonic clock at its last beat), an hour ahead of its own, tells it of one."""
    skew = _skew_file(tmp_path, 3600)
    with jobq.Queue(backend_url) as q, _skewed(backend_url, skew) as producer:
        frozen = _worker_on(procs, backend_url, skew, 3)
        wait_for(lambda: any(w.clock_base is not None for w in q.workers()), 30, "the worker's registry row")
        _freeze(frozen, q)
        try:
            ids = [producer.enqueue({"seconds": 0.1}, task="slow") for _ in range(3)]
            _step(skew, 0)
            _worker_on(procs, backend_url, skew, 3)
            wait_for(lambda: all(q.get(i).status == C for i in ids), 60, "the new worker to run the jobs")
        finally:
            frozen.send_signal(signal.SIGCONT)
        _each_ran_once_and_nobody_lost(q, ids, procs, tmp_path)
        assert "this host's clock was set back 3600." in procs.logs()


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_a_worker_started_after_a_step_back_no_worker_saw_runs_the_jobs_written_before(
    backend_url: str, procs: Procs, tmp_path: Path
) -> None:
    """No worker ran across the step (all stopped; or the one that saw it killed before it
    restamped): the newest job, last written an hour ahead of the clock, tells the first worker
    started after it of the step."""
    skew = _skew_file(tmp_path, 3600)
    with jobq.Queue(backend_url) as q, _skewed(backend_url, skew) as producer:
        ids = [producer.enqueue({"seconds": 0.1}, task="slow") for _ in range(3)]
        _step(skew, 0)
        _worker_on(procs, backend_url, skew, 3)
        _each_ran_once_and_nobody_lost(q, ids, procs, tmp_path)
        assert re.search(r"clock was set back 3[56]\d\d\.\d s: 3 waiting job\(s\) written before", procs.logs())


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_a_restamp_that_meets_a_held_lock_is_made_at_the_next_rescue(backend_url: str, tmp_path: Path) -> None:
    """The restamp is a write: behind a lock held past its wait it fails, the step stays noted, and
    the next rescue makes it (the rescue's other duties came first and were not held up)."""
    from jobq.worker.rescuer import Rescuer
    from jobq.worker.stall import StallWatch

    with jobq.Queue(f"{backend_url}?busy_timeout=200") as q:
        now = q.clock()
        job_id = q.enqueue({"n": 1})
        later = repr(now + 200)
        holder = _lock_holder(tmp_path)
        holder.execute(f"UPDATE jobs SET run_at = {later}, updated_at = {later} WHERE id = {job_id}")
        stalls = StallWatch(q.clock, threshold=1.0, margin=3.0, grace=30.0)
        rescuer = Rescuer(q, "w-1", interval=1.0, stalls=stalls)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(jobq.StorageError, match="locked"):
                rescuer.tick()  # the first tick reads the newest job 200 s ahead: a step back
            assert q.get(job_id).run_at > q.clock() + 100 and stalls.stepped_back() > 100
        finally:
            holder.execute("COMMIT")
            holder.close()
        rescuer.tick()
        assert q.get(job_id).run_at <= q.clock() and stalls.stepped_back() == 0.0
        assert _kinds(q, job_id) == ["enqueued", "restamped"]
