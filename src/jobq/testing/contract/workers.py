"""The backend contract: the worker registry and wake-up; hardening (repeated writes, write-time
clocks, stalls, bad rows); liveness by pid."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest

import jobq
from jobq.backends.base import WorkerEnd, WorkerInfo
from jobq.testing import FakeClock
from jobq.testing.contract.common import C, F, P, R, kinds
from jobq.worker.rescuer import LOST_AFTER_LEASES, WORKER_ROWS_KEPT_SECONDS, Rescuer, process_table_id


# -- workers and wake-up ------------------------------------------------------------------------
def test_the_store_tells_its_time(queue: jobq.Queue) -> None:
    # Every store of the suite is on this machine, its server's clock this host's: the store's
    # time is now (SQLite reads it to the millisecond), and this host needs no correction.
    before = time.time()
    store = queue.backend.store_time()
    after = time.time()
    assert before - 0.002 <= store <= after + 0.002
    assert abs(queue.sync_clock()) < 0.5
    assert queue.clock_offset == 0.0


def test_worker_registry(queue: jobq.Queue, clock: FakeClock) -> None:
    info = WorkerInfo(
        id="host:1:abc",
        name="consumer1",
        host="host",
        pid=1,
        queues=("default",),
        started_at=clock.now,
        last_seen_at=clock.now,
    )
    # No row yet (deleted by hand, or a SQLite file replaced under the worker): the worker is
    # told, and registers again (jobq.worker.heartbeat); nothing is written.
    assert queue.backend.worker_seen(info.id, clock.now, [], 0, 0) is False
    assert queue.workers() == []
    queue.backend.register_worker(info)
    clock.advance(5)
    assert queue.backend.worker_seen(info.id, clock.now, [7, 8], 3, 1) is True
    (seen,) = queue.workers()
    assert (seen.name, seen.current_jobs, seen.jobs_done, seen.jobs_failed) == ("consumer1", (7, 8), 3, 1)
    assert seen.last_seen_at == clock.now and seen.stopped_at is None
    queue.backend.worker_stopped(info.id, clock.now)
    (stopped,) = queue.workers()
    assert stopped.stopped_at == clock.now and stopped.current_jobs == ()


def test_the_registry_lists_every_running_worker_however_many_stopped_after_it(
    queue: jobq.Queue, clock: FakeClock
) -> None:
    # A consumer that has run for weeks, while a crash-looping one was restarted by supervisord
    # hundreds of times since: the listing of the newest rows left the live consumer out, and
    # `jobq workers`, the ops app's "no live worker serves" alert, the metrics' liveness gauge,
    # the rescuer's peers and the pause warning all read it.
    old = WorkerInfo("w-old", "consumer1", "host", 1, ("default",), clock.now, clock.now)
    queue.backend.register_worker(old)
    for i in range(7):
        clock.advance(1)
        queue.backend.register_worker(WorkerInfo(f"w-{i}", "looping", "host", 100 + i, ("mail",), clock.now, clock.now))
        queue.backend.worker_stopped(f"w-{i}", clock.now, WorkerEnd.CRASHED)
    clock.advance(1)
    new = WorkerInfo("w-new", "consumer2", "host", 2, ("default",), clock.now, clock.now)
    queue.backend.register_worker(new)
    listed = queue.workers(limit=3)
    # Every running worker, and the newest stopped ones up to the limit; newest start first.
    assert [w.id for w in listed] == ["w-new", "w-6", "w-5", "w-4", "w-old"]
    assert [w.id for w in queue.workers(limit=1)] == ["w-new", "w-6", "w-old"]
    assert len(queue.workers()) == 9


def test_the_registry_keeps_each_workers_clock_skew(queue: jobq.Queue, clock: FakeClock) -> None:
    # A worker's host clock against the store's, as of its registration, then of each beat: the
    # host whose NTP an operator should look at (jobq workers' CLOCK, the ops app's alert).
    info = WorkerInfo("w-skew", "consumer1", "host", 1, ("default",), clock.now, clock.now, clock_skew=60.25)
    queue.backend.register_worker(info)
    assert [w.clock_skew for w in queue.workers()] == [60.25]
    assert queue.backend.worker_seen(info.id, clock.now, [], 0, 0, -0.5) is True
    assert [w.clock_skew for w in queue.workers()] == [-0.5]
    assert queue.backend.worker_seen(info.id, clock.now, [], 0, 0, None) is True  # nothing measured
    assert [w.clock_skew for w in queue.workers()] == [None]


def test_the_registry_keeps_each_workers_clock_base(queue: jobq.Queue, clock: FakeClock) -> None:
    # A worker's wall clock less its monotonic one, as of its registration, then of each beat: a
    # worker starting on the same host learns from it of a step of the clock it did not run through.
    info = WorkerInfo("w-base", "consumer1", "host", 1, ("default",), clock.now, clock.now, clock_base=1.75e9)
    queue.backend.register_worker(info)
    assert [w.clock_base for w in queue.workers()] == [1.75e9]
    assert queue.backend.worker_seen(info.id, clock.now, [], 0, 0, None, 1.75e9 + 300.5) is True
    assert [(w.clock_base, w.clock_skew) for w in queue.workers()] == [(1.75e9 + 300.5, None)]
    assert queue.backend.worker_seen(info.id, clock.now, [], 0, 0) is True  # a caller's clock: none
    assert [w.clock_base for w in queue.workers()] == [None]


def test_a_worker_end_says_how_it_ended(queue: jobq.Queue, clock: FakeClock) -> None:
    """A clean stop is the worker's own word and always wins; a rescuer's verdict (crashed, lost)
    lands only on a row not yet ended and keeps the last heartbeat; a lost worker that heartbeats
    again is running again."""

    def row(worker_id: str) -> WorkerInfo:
        return next(w for w in queue.workers() if w.id == worker_id)

    for worker_id in ("clean", "crashed", "lost", "back"):
        queue.backend.register_worker(_worker(worker_id, worker_id, 1, None, clock.now))
    seen = clock.now
    clock.advance(100)
    queue.backend.worker_stopped("clean", clock.now)
    queue.backend.worker_stopped("clean", clock.now + 1, WorkerEnd.CRASHED)  # too late: it said goodbye
    queue.backend.worker_stopped("crashed", clock.now, WorkerEnd.CRASHED)
    assert (row("clean").end_reason, row("clean").stopped_at, row("clean").last_seen_at) == (
        "stopped",
        clock.now,
        clock.now,
    )
    assert (row("crashed").end_reason, row("crashed").stopped_at, row("crashed").last_seen_at) == (
        "crashed",
        clock.now,
        seen,
    )
    assert sorted(queue.backend.mark_lost_workers(seen + 1, clock.now)) == ["back", "lost"]
    assert queue.backend.mark_lost_workers(seen + 1, clock.now) == []  # once
    assert (row("lost").end_reason, row("lost").stopped_at, row("lost").last_seen_at) == ("lost", clock.now, seen)
    assert row("crashed").end_reason == "crashed"  # an ended worker is never judged again
    clock.advance(1)
    queue.backend.worker_seen("back", clock.now, [3], 1, 0)
    back = row("back")
    assert (back.end_reason, back.stopped_at, back.current_jobs) == (None, None, (3,))
    queue.backend.worker_seen("crashed", clock.now, [], 0, 0)  # a late write of a crashed one
    assert row("crashed").end_reason == "crashed"


def test_the_rescuer_records_a_worker_not_heard_from_for_two_leases_as_lost(queue: jobq.Queue) -> None:
    # The registry keeps wall-clock times (Queue.worker_seen), so these rows do too.
    now = time.time()
    lease = queue.settings.lease_seconds
    queue.backend.register_worker(_worker("quiet", "quiet", 1, None, now - LOST_AFTER_LEASES * lease - 60))
    queue.backend.register_worker(_worker("slow", "slow", 1, None, now - LOST_AFTER_LEASES * lease + 60))
    Rescuer(queue, "the-rescuer", 1.0).tick()
    assert {w.id: w.end_reason for w in queue.workers()} == {"quiet": WorkerEnd.LOST, "slow": None}


def test_the_rescuer_forgets_workers_stopped_longer_ago_than_the_registry_keeps_them(queue: jobq.Queue) -> None:
    # A worker row is written at each start and was never deleted: a consumer that supervisord
    # restarts in a loop adds thousands a day, and every read of the registry walks them. Ended
    # rows are kept WORKER_ROWS_KEPT_SECONDS (the ops app shows who crashed and when), then go;
    # a running worker's row stays however old it is (its heartbeat, not its age, says whether it
    # lives), and a lost one that heartbeats again is running again, as before.
    now = time.time()  # the registry keeps wall-clock times, as the rescuer reads them
    kept = WORKER_ROWS_KEPT_SECONDS
    for worker_id in ("old-stopped", "old-crashed", "recent-stopped", "old-running"):
        queue.backend.register_worker(_worker(worker_id, worker_id, 1, None, now - kept - 3_600))
    queue.backend.worker_stopped("old-stopped", now - kept - 60)
    queue.backend.worker_stopped("old-crashed", now - kept - 60, WorkerEnd.CRASHED)
    queue.backend.worker_stopped("recent-stopped", now - kept + 600)
    queue.backend.worker_seen("old-running", now, [], 0, 0)
    assert sorted(queue.backend.prune_workers(now - kept)) == ["old-crashed", "old-stopped"]
    assert queue.backend.prune_workers(now - kept) == []  # once
    queue.backend.register_worker(_worker("stopped-again", "stopped-again", 1, None, now - kept - 3_600))
    queue.backend.worker_stopped("stopped-again", now - kept - 60)
    Rescuer(queue, "the-rescuer", 1.0).tick()
    assert sorted(w.id for w in queue.workers()) == ["old-running", "recent-stopped"]


def test_listener_wakes_on_enqueue(queue: jobq.Queue, open_queue: Callable[[], jobq.Queue]) -> None:
    now = time.time()
    listener = queue.backend.listener("w-listen", ["default"])
    try:
        queue.backend.register_worker(
            WorkerInfo(
                id="w-listen",
                name="w",
                host="h",
                pid=1,
                queues=("default",),
                started_at=now,
                last_seen_at=now,
                wake_address=listener.address,
            )
        )
        producer = jobq.Queue(settings=queue.settings)  # real clock: the registry is "live"
        try:
            listener.wait(0)  # drain anything pending
            producer.enqueue("wake up")
            deadline = time.monotonic() + 10
            woke = False
            while not woke and time.monotonic() < deadline:
                woke = listener.wait(0.5)
            assert woke
        finally:
            producer.close()
    finally:
        listener.close()


def test_jobs_of_a_gone_worker_are_rescued_before_their_lease_expires(queue: jobq.Queue, clock: FakeClock) -> None:
    gone_job = queue.enqueue("held by a dead worker")
    live_job = queue.enqueue("held by a live worker")
    dead = queue.claim("dead-worker", lease=300)
    live = queue.claim("live-worker", lease=300)
    assert dead is not None and live is not None and dead.id == gone_job and live.id == live_job
    results = queue.rescue_expired(actor="w", gone_owners=["dead-worker"])
    assert [(r.job_id, r.outcome) for r in results] == [(gone_job, "rescued")]
    assert "exited" in (queue.get(gone_job).last_error or "")
    assert queue.get(live_job).status == R
    with pytest.raises(jobq.LeaseLost):
        queue.complete(dead)


# -- hardening: repeated writes, late clocks, stalls, bad rows -----------------------------------
def test_a_repeated_write_that_had_committed_is_recognised_not_refused(queue: jobq.Queue) -> None:
    """After a commit whose reply was lost, the worker repeats its write with ``repeat=True``."""
    done_id, failed_id, retried_id = queue.enqueue_many(["c", "f", "r"])
    jobs = {j.id: j for j in queue.claim_many("w", 3)}
    queue.complete(jobs[done_id], {"ok": 1})
    queue.fail(jobs[failed_id], "bad", retry=False)
    queue.fail(jobs[retried_id], "flaky")
    assert queue.complete_many([(jobs[done_id], {"ok": 1})], repeat=True) == [True]
    assert queue.fail_many([(jobs[failed_id], "bad", False), (jobs[retried_id], "flaky", True)], repeat=True) == [
        (F, True),
        (P, True),
    ]
    for job_id in (done_id, failed_id, retried_id):
        assert "stale_write_refused" not in kinds(queue, job_id)
    assert kinds(queue, done_id).count("completed") == 1
    # Without repeat a second write with the same lease is refused, as any stale one.
    with pytest.raises(jobq.LeaseLost):
        queue.complete(jobs[done_id])


def test_a_repeat_does_not_accept_a_write_that_another_lease_superseded(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue("x")
    a = queue.claim("A", lease=5)
    assert a is not None
    clock.advance(6)
    queue.rescue_expired()
    clock.advance(queue.settings.backoff_cap_seconds + 1)
    b = queue.claim("B", lease=60)
    assert b is not None and b.id == job_id
    queue.complete(b)
    assert queue.complete_many([(a, None)], repeat=True) == [False]
    assert kinds(queue, job_id)[-1] == "stale_write_refused"


def test_completion_clears_the_error_of_an_earlier_attempt(queue: jobq.Queue, clock: FakeClock) -> None:
    job_id = queue.enqueue("x", max_attempts=3)
    first = queue.claim("w")
    assert first is not None
    queue.fail(first, "boom")
    assert queue.get(job_id).last_error == "boom"
    clock.advance(queue.settings.backoff_cap_seconds + 1)
    second = queue.claim("w")
    assert second is not None
    queue.complete(second)
    done = queue.get(job_id)
    assert (done.status, done.last_error) == (C, None)
    assert queue.events(job_id)[2].detail["error"] == "boom"  # the history keeps it


def test_completion_note_is_recorded(queue: jobq.Queue) -> None:
    job_id = queue.enqueue("x")
    job = queue.claim("w")
    assert job is not None
    assert queue.complete_many([(job, 1)], notes=["a cancel came too late"]) == [True]
    assert queue.events(job_id)[-1].detail == {"note": "a cancel came too late"}


def test_worker_writes_read_the_clock_when_they_happen(queue: jobq.Queue, clock: FakeClock) -> None:
    """The time is read inside the transaction (after any wait for a lock), not before."""
    queue.enqueue("x")
    calls = []

    def later() -> float:
        calls.append(clock.now)
        return clock.now

    queue.clock = later
    job = queue.claim("w", lease=10)
    assert job is not None and calls  # the backend asked for the time itself
    assert job.lease_expires_at == pytest.approx(clock.now + 10)


def test_rescue_cutoff_spares_leases_that_expired_after_it(queue: jobq.Queue, clock: FakeClock) -> None:
    early, late = queue.enqueue_many(["early", "late"])
    a = queue.claim("A", lease=5)
    clock.advance(3)
    b = queue.claim("B", lease=5)
    assert a is not None and b is not None and (a.id, b.id) == (early, late)
    clock.advance(10)  # both leases expired: A's at +5, B's at +8
    start = clock.now
    rescued = queue.rescue_expired(cutoff=lambda now: start - 13 + 6)  # a stall began at +6
    assert [r.job_id for r in rescued] == [early]
    assert queue.get(late).status == R
    assert queue.rescue_expired() and queue.get(late).status == P


def test_enqueue_refuses_too_deep_a_payload(queue: jobq.Queue) -> None:
    from jobq.payloads import JSON_DEPTH_LIMIT

    deep: object = "leaf"
    for _ in range(990):
        deep = [deep]
    with pytest.raises(jobq.InvalidPayload, match="deeper than"):
        queue.enqueue(deep)
    ok: object = 1
    for _ in range(JSON_DEPTH_LIMIT):
        ok = {"k": ok}
    job_id = queue.enqueue(ok)
    assert queue.get(job_id).payload == ok and queue.get(job_id).defect is None
    with pytest.raises(jobq.InvalidPayload):
        queue.enqueue({"k": ok})
    assert queue.count() == 1


# -- liveness by pid: only within our own process table ----------------------------------------
DEAD_PID = 2**22 + 1
"""Above Linux's PID_MAX_LIMIT (2**22): no process has it, so ``kill(pid, 0)`` always says gone."""


def _worker(worker_id: str, host: str, pid: int, process_table: str | None, now: float) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        name=worker_id,
        host=host,
        pid=pid,
        queues=("default",),
        started_at=now,
        last_seen_at=now,
        process_table=process_table,
    )


def test_a_dead_pid_means_gone_only_in_our_own_process_table(queue: jobq.Queue, clock: FakeClock) -> None:
    """Every row has this host's name and (but one) a pid no process has. Only rows of our process
    table (same boot, same PID namespace) are pid-checked: another container's row (other PID
    namespace), another boot's, or one of unknown identity waits for its lease. The host name
    plays no part. PostgreSQL (many hosts) never checks pids at all."""
    ours = process_table_id()
    if ours is None:
        pytest.skip("no /proc here: no process-table identity, so pids are never checked")
    boot_id, namespace = ours.split("/")
    host = socket.gethostname()
    rows = {
        "ours-dead": (host, DEAD_PID, ours),
        "ours-renamed-dead": ("another-uts-name", DEAD_PID, ours),
        "ours-alive": (host, os.getpid(), ours),
        "other-namespace-dead": (host, DEAD_PID, f"{boot_id}/pid:[1]"),
        "other-boot-dead": (host, DEAD_PID, f"00000000-0000-0000-0000-000000000000/{namespace}"),
        "unknown-dead": (host, DEAD_PID, None),
    }
    held = {}
    for worker_id, (name, pid, table) in rows.items():
        queue.backend.register_worker(_worker(worker_id, name, pid, table, clock.now))
        queue.enqueue(worker_id)
        job = queue.claim(worker_id, lease=300)
        assert job is not None
        held[worker_id] = job.id
    assert {w.id: w.process_table for w in queue.workers()} == {k: v[2] for k, v in rows.items()}

    rescuer = Rescuer(queue, "the-rescuer", 1.0)
    gone = ["ours-dead", "ours-renamed-dead"] if queue.backend.single_host else []
    assert sorted(rescuer.gone_workers()) == gone
    rescuer.tick()
    assert sorted(w.id for w in queue.workers() if w.stopped_at is not None) == gone
    assert {w.end_reason for w in queue.workers() if w.stopped_at is not None} <= {WorkerEnd.CRASHED}
    assert {k: queue.get(i).status for k, i in held.items()} == {k: P if k in gone else R for k in held}


def test_errors_are_capped_in_the_job_and_in_each_event(queue: jobq.Queue) -> None:
    from jobq.backends.common import EVENT_ERROR_MAX_CHARS
    from jobq.queue import ERROR_MAX_CHARS

    job_id = queue.enqueue("x", max_attempts=2)
    job = queue.claim("w")
    assert job is not None
    error = "Traceback (most recent call last):\n" + "x" * 100_000 + "\nValueError: the cause"
    queue.fail(job, error)
    stored = queue.get(job_id).last_error or ""
    assert len(stored) <= ERROR_MAX_CHARS and stored.endswith("ValueError: the cause")
    detail = queue.events(job_id)[-1].detail["error"]
    assert len(detail) <= EVENT_ERROR_MAX_CHARS and detail.endswith("ValueError: the cause")
    assert "characters cut" in detail


def test_out_of_range_numbers_are_refused_in_one_line(queue: jobq.Queue) -> None:
    with pytest.raises(jobq.JobNotFound):
        queue.get(10**20)
    with pytest.raises(jobq.InvalidPayload, match="priority"):
        queue.enqueue("x", priority=2**31)
    with pytest.raises(jobq.InvalidPayload, match="max_attempts"):
        queue.enqueue("x", max_attempts=2**40)
    assert queue.count() == 0


class _Odd(BaseException):
    """Not an Exception: what a handler may still raise."""


def test_a_handler_that_raises_a_base_exception_or_unstorable_text_fails_its_job(queue: jobq.Queue) -> None:
    """A handler's SystemExit, KeyboardInterrupt or other BaseException ended the worker's runner:
    the job stayed PROCESSING under a lease the live worker kept renewing, and a worker told to
    exit when idle never did. An error holding a lone surrogate (a file name's undecodable byte)
    could not be stored, and the worker retried recording it for ever. A generator returned was
    called a coroutine. Each now fails its own job; the next job runs."""
    raised: dict[str, BaseException] = {
        "exit": SystemExit(3),
        "interrupt": KeyboardInterrupt(),
        "odd": _Odd("odd"),
        "surrogate": ValueError("bad file " + os.fsdecode(b"\xff.txt")),
    }

    def handler(ctx: jobq.JobContext) -> object:
        if ctx.payload == "generator":
            return (n for n in range(3))
        if ctx.payload == "fine":
            return {"ok": True}
        raise raised[ctx.payload]

    ids = {p: queue.enqueue(p, max_attempts=1) for p in [*raised, "generator", "fine"]}
    jobq.Worker(queue, {"": handler}, exit_when_idle=True).run()
    jobs = {p: queue.get(i) for p, i in ids.items()}
    assert {p: j.status for p, j in jobs.items()} == {**{p: F for p in [*raised, "generator"]}, "fine": C}
    assert "SystemExit: 3" in (jobs["exit"].last_error or "")
    assert "bad file \\udcff.txt" in (jobs["surrogate"].last_error or "")
    assert "not JSON-serialisable" in (jobs["generator"].last_error or "")


def test_worker_calls_given_no_list_of_their_items_are_refused_in_one_line(queue: jobq.Queue) -> None:
    """A Job where a list of them is meant, pairs of the wrong size, notes or delays that are not
    one per item: each is one ValueError line before anything is written (they raised TypeError
    or IndexError from inside, or, for notes=[] with items, took no notes), and the job's lease
    still holds for the call done right."""
    queue.enqueue("x")
    job = queue.claim("w")
    assert job is not None
    bad: list[tuple[Callable[[], object], str]] = [
        (lambda: queue.complete_many(job), "a list of \\(job, result\\) pairs, not Job"),  # type: ignore[arg-type]
        (lambda: queue.complete_many([(job,)]), "not one holding"),  # type: ignore[list-item]
        (lambda: queue.complete_many([("x", 1)]), "a Job handed out by claim\\(\\) is needed"),  # type: ignore[list-item]
        (lambda: queue.complete_many([(job, 1)], notes=[b"x"]), "one text or None per item"),  # type: ignore[list-item]
        (lambda: queue.complete_many([(job, 1)], notes=[]), "one text or None per item"),
        (lambda: queue.fail_many([(job, "e", True)], delays=[]), "delays must be one per item"),
        (lambda: queue.fail_many([(job, "e")]), "\\(job, error, retry\\) triples"),  # type: ignore[list-item]
        (lambda: queue.heartbeat_many(job), "a list of Jobs, not Job"),  # type: ignore[arg-type]
        (lambda: queue.release_many("ab"), "a list of Jobs, not str"),  # type: ignore[arg-type]
        (lambda: queue.complete_many_and_claim(job, "w", 1), "a list of \\(job, result\\) pairs"),  # type: ignore[arg-type]
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message):
            call()
    assert queue.get(job.id).status == R
    assert queue.complete_many([(job, "done")], notes=["kept"]) == [True]
    assert queue.get(job.id).result == "done"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": "4"}, "concurrency must be a whole number from 1 to 1,024"),
        ({"concurrency": 0}, "concurrency must be a whole number"),
        ({"batch": -3}, "batch must be a whole number from 1"),
        ({"batch": True}, "batch must be a whole number"),
        ({"async_concurrency": 10**6}, "async_concurrency must be a whole number from 1 to 100,000"),
        ({"prefetch_wait": float("nan")}, "prefetch_wait must be seconds"),
        ({"queues": [5]}, "a queue name must be text"),
        ({"queues": b"mail"}, "a list of queue names, not bytes"),
        ({"queues": ""}, "a queue name must not be empty"),
        ({"queues": ["mail", ""]}, "a queue name must not be empty"),
        ({"name": 7}, "a worker's name must be text"),
        ({"handlers": {"t": "not callable"}}, "a task name and a function to call"),
    ],
)  # fmt: skip
def test_a_worker_given_options_it_cannot_use_says_so_in_one_line(
    queue: jobq.Queue, options: dict[str, object], message: str
) -> None:
    """Worker(concurrency="4") raised TypeError deep inside, batch=-3 was taken, and a handler that
    cannot be called failed each job it was given, one by one."""
    options = dict(options)  # the parameter is shared by every backend's run
    handlers = options.pop("handlers", {"": lambda ctx: None})
    with pytest.raises((ValueError, jobq.InvalidPayload), match=message):
        jobq.Worker(queue, handlers, **options)  # type: ignore[arg-type]


def test_a_claim_of_queue_empty_takes_the_default_queue_as_an_enqueue_names_it(queue: jobq.Queue) -> None:
    """``enqueue(queue="")`` puts the job in the settings' queue; ``claim(queue="")`` looked for
    it in a queue named "" and found nothing."""
    job_id = queue.enqueue({"n": 1}, queue="")
    assert queue.get(job_id).queue == queue.settings.queue
    job = queue.claim("w", queue="")
    assert job is not None and job.id == job_id


def test_a_handler_s_bad_sleep_or_progress_fails_its_job_at_once(queue: jobq.Queue) -> None:
    """ctx.sleep(NaN) slept not at all and ctx.sleep(inf) raised OverflowError from the wait; a
    progress report of the wrong type failed only when a write was due (the first report of a
    run is throttled, so it passed unseen)."""

    def handler(ctx: jobq.JobContext) -> None:
        if ctx.payload == "sleep":
            ctx.sleep(float("nan"))
        elif ctx.payload == "progress":
            ctx.progress("half")  # type: ignore[arg-type]
        else:
            ctx.sleep(-1)  # below 0: no sleep
            ctx.progress(0.5, "half")

    ids = {p: queue.enqueue(p, max_attempts=1) for p in ("sleep", "progress", "fine")}
    jobq.Worker(queue, {"": handler}, exit_when_idle=True).run()
    jobs = {p: queue.get(i) for p, i in ids.items()}
    assert {p: j.status for p, j in jobs.items()} == {"sleep": F, "progress": F, "fine": C}
    assert "ctx.sleep takes a number of seconds" in (jobs["sleep"].last_error or "")
    assert "progress fraction must be a number" in (jobs["progress"].last_error or "")


def test_jobs_written_before_the_clock_was_set_back_are_made_as_if_written_now(
    queue: jobq.Queue, clock: FakeClock
) -> None:
    """A clock set back 100 s leaves the rows written before it 100 s ahead: a job due at once
    would wait 100 s, a delay or a retry's backoff would run 100 s long. ``restamp_ahead`` makes
    each waiting one as if written now; a running job, a job written since, and a row further
    ahead than the step are left alone; a second restamp finds nothing."""
    assert queue.newest_write() is None  # no job yet
    written = clock.now
    retried = queue.enqueue({"n": "retried"}, max_attempts=3)
    assert queue.newest_write() == written
    job = queue.claim("w")
    assert job is not None and job.id == retried
    assert queue.fail(job, "boom") == jobq.JobStatus.PENDING
    backoff = queue.get(retried).run_at - written
    running = queue.enqueue({"n": "running"})
    job = queue.claim("w")
    assert job is not None and job.id == running
    at_once = queue.enqueue({"n": "at once"})
    delayed = queue.enqueue({"n": "delayed"}, delay=60)
    clock.now = written + 1000.0
    far = queue.enqueue({"n": "far"})  # 1,100 s ahead of the clock set back below: no such step
    clock.now = written - 100.0  # the step
    assert queue.newest_write() == written + 1000.0  # ahead: what tells a worker started now of the step
    since = queue.enqueue({"n": "since"})
    assert queue.newest_write() == clock.now
    assert queue.restamp_ahead(100.0, 1.0, actor="w-1") == sorted([retried, at_once, delayed])
    now = clock.now
    for job_id in (retried, at_once, delayed):
        (event,) = [e for e in queue.events(job_id) if e.kind == "restamped"]
        assert (event.at, event.actor, event.detail) == (now, "w-1", {"clock_set_back": 100.0})
    assert all("restamped" not in kinds(queue, i) for i in (running, far, since))
    assert [queue.get(i).run_at for i in (at_once, delayed)] == [pytest.approx(now), pytest.approx(now + 60)]
    assert queue.get(retried).run_at == pytest.approx(now + backoff)
    assert [queue.get(i).updated_at for i in (retried, at_once, delayed)] == [now, now, now]
    assert queue.get(running).status == jobq.JobStatus.PROCESSING
    assert queue.get(far).run_at == pytest.approx(written + 1000.0)
    assert queue.get(since).run_at == now
    job = queue.claim("w")
    assert job is not None and job.id == at_once  # due now, as if enqueued now (before `since`)
    assert queue.restamp_ahead(100.0, 1.0) == []  # once
