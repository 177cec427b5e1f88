"""No row in the database can stop a worker, the CLI or a listing.

Rows written by hand (``sqlite3``/``psql``), by another program or by an older version can hold
payloads that are not JSON, nest ~990 levels deep (2 KB, and ``json.loads`` raises
``RecursionError``), or columns of the wrong type. Each such job fails on its own (FAILED, a
readable ``last_error``, an event) and the worker goes on with the next job.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import apsw
import pytest
from cli_errors import run_jobq
from handwritten import write_by_hand
from polling import wait_for
from worker_thread import running

import jobq
from jobq.testing.contract.common import kinds
from jobq.worker import Worker

DEEP = "[" * 990 + "]" * 990


def _insert(url: str, tmp_path: Path, payload: str, **columns: object) -> int:
    """Insert a jobs row by hand, as an operator's SQL shell would."""
    now = time.time()
    row = {"queue": "default", "task": "", "payload": payload, "run_at": now, "created_at": now, "updated_at": now}
    row.update(columns)
    names = ", ".join(row)
    if url.startswith("sqlite"):
        conn = apsw.Connection(str(tmp_path / "queue.db"))
        conn.set_busy_timeout(10_000)
        marks = ", ".join("?" * len(row))
        job_id = conn.execute(
            f"INSERT INTO jobs ({names}) VALUES ({marks}) RETURNING id", tuple(row.values())
        ).fetchall()
        conn.close()
        return int(job_id[0][0])
    from pg import raw_connect

    with raw_connect(url, autocommit=True) as pg:
        marks = ", ".join(["%s"] * len(row))
        found = pg.execute(f"INSERT INTO jobs ({names}) VALUES ({marks}) RETURNING id", tuple(row.values())).fetchone()
        assert found is not None
        return int(found[0])


def _bad_rows(url: str, tmp_path: Path) -> dict[str, int]:
    rows = {
        "deep": _insert(url, tmp_path, DEEP),
        "not json": _insert(url, tmp_path, "{not json"),
        "control character": _insert(url, tmp_path, '"a\x01b"'),
    }
    if url.startswith("sqlite"):  # PostgreSQL's typed columns and text refuse these at INSERT
        rows["nul"] = _insert(url, tmp_path, '"a\x00b"')
        rows["text priority"] = _insert(url, tmp_path, "{}", priority="high")
        rows["blob payload"] = _insert(url, tmp_path, b"\xff\xfe{")
    return rows


def test_bad_rows_fail_their_own_job_and_the_worker_goes_on(backend_url: str, tmp_path: Path) -> None:
    settings = jobq.Settings(database_url=backend_url, poll_interval_seconds=0.05)
    with jobq.Queue(settings=settings) as q:
        bad = _bad_rows(backend_url, tmp_path)
        good = q.enqueue({"n": 1})
        done: list[int] = []
        worker = Worker(q, lambda ctx: done.append(ctx.job.id), exit_when_idle=True)
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        t.join(60)
        assert not t.is_alive(), "the worker finished its work and returned"
        assert done == [good]  # no handler ever saw a bad row
        assert q.get(good).status == jobq.JobStatus.COMPLETED
        for what, job_id in bad.items():
            job = q.get(job_id)
            assert job.status == jobq.JobStatus.FAILED, what
            assert job.last_error and job.last_error.startswith("cannot run this job:"), (what, job.last_error)
            assert "\n" not in job.last_error
            assert [e.kind for e in q.events(job_id)][-1] == "failed"
            assert job.defect
        # Every listing still reads them.
        assert {j.id for j in q.list_jobs()} >= set(bad.values())


def test_bad_rows_show_in_the_cli_without_a_traceback(backend_url: str, tmp_path: Path) -> None:
    with jobq.Queue(backend_url):
        bad = _bad_rows(backend_url, tmp_path)
    commands = [["list", "--db", backend_url], ["stats", "--db", backend_url]]
    commands += [["show", str(job_id), "--db", backend_url] for job_id in bad.values()]
    commands += [["list", "--json", "--db", backend_url]]
    for args in commands:
        proc = run_jobq(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout, args
        if args[0] == "show":
            assert "cannot run" in proc.stdout, proc.stdout


def test_a_claim_that_raises_does_not_end_the_worker(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception out of the claim or outcome path is logged and retried with backoff."""
    settings = jobq.Settings(database_url=sqlite_url, poll_interval_seconds=0.05)
    with jobq.Queue(settings=settings) as q:
        job_id = q.enqueue({})
        real = q.claim_many
        failures = iter([RuntimeError("a bug of ours"), RecursionError("a deep row")])

        def flaky(*args: object, **kwargs: object) -> list[jobq.Job]:
            exc = next(failures, None)
            if exc is not None:
                raise exc
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(q, "claim_many", flaky)
        monkeypatch.setattr("jobq.worker.runtime.LOOP_ERROR_BACKOFF_SECONDS", 0.01)
        worker = Worker(q, lambda ctx: "ok")
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        try:
            wait_for(lambda: q.get(job_id).status == jobq.JobStatus.COMPLETED, 30, "the job to complete")
        finally:
            worker.stop()
            t.join(30)
        assert not t.is_alive()


def test_an_idle_worker_takes_a_row_written_by_hand_without_a_wake_up(
    backend_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle worker claims only once a read (``next_due_at``) says a job is due. A row written by
    hand sends no wake-up: it is taken at the next poll. On SQLite a ``run_at`` the read cannot
    use (text, stored as such in the REAL column) does not hide the due row from it."""
    settings = jobq.Settings(database_url=backend_url, poll_interval_seconds=0.05)
    with jobq.Queue(settings=settings) as q:
        reads: list[float | None] = []
        real_next_due_at = q.next_due_at

        def next_due_at(*args: Any, **kwargs: Any) -> float | None:
            reads.append(due := real_next_due_at(*args, **kwargs))
            return due

        monkeypatch.setattr(q, "next_due_at", next_due_at)
        done: list[int] = []
        with running(Worker(q, lambda ctx: done.append(ctx.job.id))):
            wait_for(lambda: len(reads) >= 3, 30, "the worker's idle polls")  # idle: reads, no claims
            odd = _insert(backend_url, tmp_path, "{}", run_at="soon") if backend_url.startswith("sqlite") else None
            by_hand = _insert(backend_url, tmp_path, '{"n": 1}')
            wait_for(lambda: by_hand in done, 30, "the row written by hand to run")
            assert odd not in done  # text sorts above every number: never due, never claimed


def test_an_idle_worker_whose_read_fails_claims_anyway(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read before an idle worker's claim is a hint: when it fails (a database error, a row it
    cannot use), the worker claims as before instead of waiting on a read that keeps failing."""
    settings = jobq.Settings(database_url=sqlite_url, poll_interval_seconds=0.05)
    with jobq.Queue(settings=settings) as q:
        failed_reads: list[int] = []

        def next_due_at(*args: Any, **kwargs: Any) -> float | None:
            failed_reads.append(1)
            raise jobq.StorageError("database is locked (held by pid 4242)")

        monkeypatch.setattr(q, "next_due_at", next_due_at)
        done: list[int] = []
        with running(Worker(q, lambda ctx: done.append(ctx.job.id))):
            wait_for(lambda: len(failed_reads) >= 3, 30, "the worker's failing reads")
            by_hand = _insert(sqlite_url, tmp_path, '{"n": 1}')  # no wake-up
            wait_for(lambda: by_hand in done, 30, "the row written by hand to run")


def test_times_written_by_hand_as_text_fail_no_read(sqlite_url: str) -> None:
    """SQLite keeps text in a REAL column. Text sorts above every number, so it passes the reads'
    ``run_at <= now`` and ``finished_at >= since`` only where it should not, and a ``min()`` over
    text alone returns the text. Every read that the worker, ``jobq metrics``, ``stats`` and the
    ops app make still answers: such a job is never due (claims skip it) and is left out of the
    times it cannot give."""
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from jobq.observability.metrics import JobqCollector

    with jobq.Queue(sqlite_url) as q:
        now = time.time()
        collector = JobqCollector(q, settle_seconds=0.0, scrape_events=0)
        collector._take_events(now - 1, 0)  # the cursors start here
        common = "queue, task, payload, created_at, updated_at, attempts"
        write_by_hand(
            sqlite_url,
            f"INSERT INTO jobs ({common}, run_at) VALUES ('only-text', '', '{{}}', {now}, {now}, 0, 'soon')",
            f"INSERT INTO jobs ({common}, run_at, status, started_at, lease_owner, lease_token, lease_expires_at)"
            f" VALUES ('mixed', '', '{{}}', {now}, {now}, 1, 'soon', 'PROCESSING', 'later', 'w', 't', {now + 60})",
            f"INSERT INTO jobs ({common}, run_at, status, started_at, finished_at)"
            f" VALUES ('mixed', '', '{{}}', {now}, {now}, 1, 'soon', 'COMPLETED', {now}, {now})",
            f"INSERT INTO jobs ({common}, run_at, status, started_at, finished_at)"
            f" VALUES ('mixed', '', '{{}}', {now}, {now}, 1, {now}, 'COMPLETED', 'then', 'when')",
        )
        due = q.enqueue({"n": 1}, queue="mixed", run_at=now - 5)

        assert q.next_due_at(["only-text"]) is None  # was: ValueError
        assert q.next_due_at(["only-text", "mixed"]) == pytest.approx(now - 5)
        gauges = q.queue_gauges()  # was: TypeError comparing text with a float
        assert (gauges["only-text"].pending_due, gauges["only-text"].oldest_due_at) == (0, None)
        assert gauges["mixed"].oldest_due_at == pytest.approx(now - 5)
        q.set_limits("only-text", rate=(5, 60.0))
        assert q.next_due_at(["only-text"]) is None  # a rate-limited queue reads its own min()
        assert q.due_history(window=600, bucket=60).due[-1] == 1  # was: ValueError
        buckets = q.history(window=600, bucket=60)  # was: TypeError
        assert sum(b.completed for b in buckets) == 1  # the job with numbers; 'then' is no time
        assert buckets[-1].run_p50 == 0.0
        assert q.stats().counts["PENDING"] == 2
        collector._take_events(time.time() + 1, 10**6)
        registry = CollectorRegistry()
        registry.register(collector)
        assert b"jobq_jobs" in generate_latest(registry)
        assert q.claim("w", queue=["only-text", "mixed"]).id == due  # type: ignore[union-attr]


def test_times_written_by_hand_as_nan_or_infinity_fail_no_chart(backend_url: str, tmp_path: Path) -> None:
    """PostgreSQL's double precision takes 'NaN', 'Infinity' and '-Infinity' from ``psql``; SQLite
    keeps 9e999 as an infinity (and a NaN as NULL). PostgreSQL sorts NaN above every number, so
    such a time passes ``>= since``; its bucket (``trunc()::bigint``) then failed the ops page's
    history and due-history reads ("bigint out of range"), and ``int()`` of it in Python raised
    ValueError or OverflowError. Each such time is now no time: its job is left out of what needs
    it (a duration, a bucket), and everything else is counted."""
    values = _no_times(backend_url)
    with jobq.Queue(backend_url) as q:
        good = q.enqueue({"n": 1})
        job = q.claim("w")
        assert job is not None and job.id == good
        q.complete(job)
        q.enqueue({"n": 2})
        now = time.time()
        done = {"status": "COMPLETED", "attempts": 1, "created_at": now - 10, "run_at": now - 10}
        for v in values:
            _insert(backend_url, tmp_path, "{}", created_at=v, run_at=now - 5)  # PENDING, due, made at no time
            # Completed, with one time of no use each: started, finished, made.
            _insert(backend_url, tmp_path, "{}", **{**done, "started_at": v, "finished_at": now - 2})
            _insert(backend_url, tmp_path, "{}", **{**done, "started_at": now - 3, "finished_at": v})
            _insert(
                backend_url, tmp_path, "{}", **{**done, "created_at": v, "started_at": now - 3, "finished_at": now - 2}
            )
            # Running since no time.
            running = {"status": "PROCESSING", "attempts": 1, "created_at": now - 10, "run_at": now - 10}
            _insert(backend_url, tmp_path, "{}", **running, started_at=v, lease_owner="w", lease_token="t",
                    lease_expires_at=now + 600)  # fmt: skip
        buckets = q.history(window=600, bucket=60)
        times = [x for b in buckets for x in (b.wait_p50, b.wait_p95, b.run_p50, b.run_p95) if x is not None]
        assert times and all(math.isfinite(x) for x in times)
        # Completions with a finished_at to place: the API's job, and two of each value's three.
        assert sum(b.completed for b in buckets) == 1 + 2 * len(values)
        assert buckets[-1].depth == 1 + len(values)  # every PENDING job, the unplaceable ones too
        due = q.due_history(window=600, bucket=60)
        assert due.due[-1] == 1 + len(values)
        waits = [x for w in due.waits.values() for x in (w.p50, w.p95) if x is not None]
        assert waits and all(math.isfinite(x) for x in waits)
        assert q.stats().counts["PENDING"] == 1 + len(values)


def test_a_lease_written_by_hand_as_no_time_has_expired(backend_url: str, tmp_path: Path) -> None:
    """A lease is a time or nothing. One written by hand as Infinity or NaN (PostgreSQL sorts NaN
    above every number), or as text on SQLite, never passed ``< now``: such a job was rescued only
    once its worker was gone, and on PostgreSQL, where leases alone tell that, never. It now counts
    as expired, in the rescue and in what ``stats`` and the exporter's gauge count."""
    values = _no_times(backend_url, *(["soon"] if backend_url.startswith("sqlite") else []))
    now = time.time()
    running = {"status": "PROCESSING", "attempts": 1, "created_at": now, "run_at": now, "started_at": now,
               "lease_owner": "live-worker"}  # fmt: skip
    with jobq.Queue(backend_url) as q:
        void = [_insert(backend_url, tmp_path, "{}", **running, lease_token=f"t{i}", lease_expires_at=v)
                for i, v in enumerate(values)]  # fmt: skip
        held = _insert(backend_url, tmp_path, "{}", **running, lease_token="held", lease_expires_at=now + 600)
        assert q.stats().expired_leases == len(void)  # was: 1 (-Infinity alone)
        assert q.queue_gauges()["default"].processing_expired == len(void)
        rescued = q.rescue_expired()
        assert sorted(r.job_id for r in rescued) == sorted(void)  # was: []
        assert all(q.get(i).status == jobq.JobStatus.PENDING for i in void)  # type: ignore[union-attr]
        assert q.get(held).status == jobq.JobStatus.PROCESSING  # type: ignore[union-attr]


def test_a_live_workers_lease_written_by_hand_as_no_time_is_rescued_and_its_late_writes_refused(
    backend_url: str,
) -> None:
    """The two halves together, with a real worker: while its handler runs, the job's lease is
    written by hand as Infinity. The job is rescued (it counts as expired), another worker claims
    and completes it, and the first worker's completion, sent when its handler returns, is refused
    by the token fence: the job completes once, by the second."""
    infinity = "9e999" if backend_url.startswith("sqlite") else "'Infinity'"
    # A long lease: the worker's heartbeat (a third of it) rarely falls between the rescue and
    # the handler's return, so its late write is mostly the completion (either is fenced).
    settings = jobq.Settings(lease_seconds=60, backoff_base_seconds=0.01, backoff_cap_seconds=0.05)
    q = jobq.Queue(backend_url, settings=settings)
    started, release, ran = threading.Event(), threading.Event(), []

    def handler(ctx: Any) -> None:
        ran.append(ctx.job.id)
        started.set()
        assert release.wait(60)

    job_id = q.enqueue({"x": 1})
    with q, running(Worker(q, handler, concurrency=1)):
        try:
            assert started.wait(30)
            first = q.get(job_id)
            assert first is not None and first.status == jobq.JobStatus.PROCESSING

            def rescued() -> bool:
                # Written again while the job is still the first worker's: its heartbeat may have
                # overwritten the lease with a time since (it may also rescue the job itself).
                write_by_hand(backend_url, f"UPDATE jobs SET lease_expires_at = {infinity} "
                                           f"WHERE id = {job_id} AND lease_token = '{first.lease_token}'")  # fmt: skip
                q.rescue_expired()
                now = q.get(job_id)
                return now is not None and now.lease_token != first.lease_token

            wait_for(rescued, 30, "the job with a lease of no time rescued")
            second = wait_for(lambda: q.claim("second-worker", lease=60), 30, "the rescued job claimed again")
            assert second.id == job_id and second.lease_token != first.lease_token
            release.set()  # the first worker's handler returns: its completion is sent, and refused

            def refused() -> list[Any]:
                return [e for e in q.events(job_id) if e.kind == jobq.EventKind.STALE_WRITE_REFUSED]

            late = wait_for(refused, 30, "the first worker's completion refused")
            assert {(e.actor, e.detail["operation"]) for e in late} <= {(first.lease_owner, "complete"),
                                                                        (first.lease_owner, "heartbeat")}  # fmt: skip
            held = q.get(job_id)
            assert held is not None and (held.status, held.lease_owner) == (jobq.JobStatus.PROCESSING, "second-worker")
            q.complete(second)
        finally:
            release.set()  # also when the test fails: the worker then stops at once

    with jobq.Queue(backend_url) as again:
        done = again.get(job_id)
    assert done is not None and (done.status, done.attempts) == (jobq.JobStatus.COMPLETED, 2)
    assert ran == [job_id]


def _asked(url: str) -> list[str]:
    """``cancel_requested`` values an operator may write by hand to ask a cancel besides jobq's own:
    SQLite stores any value (jobq reads every one but 0 as asked), PostgreSQL's boolean takes its
    literals ('yes', 'on') as true."""
    return ["2", "'yes'", "0.5"] if url.startswith("sqlite") else ["'yes'", "'on'"]


def test_a_cancel_request_written_by_hand_is_honoured_by_every_write(backend_url: str) -> None:
    """A cancel asked by hand with another value than jobq's own means what ``Queue.cancel`` means:
    a heartbeat reports it, its acknowledgement cancels the job, and a failure with attempts left or
    a release ends it CANCELLED. SQLite's statements read 2 as not asked (``= 1``) where Python read
    it as asked: the acknowledgement was refused as a stale write (the job held until its lease
    ran out), and a retry or a release ran the job again."""
    x = jobq.JobStatus.CANCELLED
    with jobq.Queue(backend_url) as q:
        for value in _asked(backend_url):
            ids = [q.enqueue({"asked": value, "n": n}, max_attempts=3) for n in range(3)]
            jobs = [q.claim("w") for _ in ids]
            assert [j.id if j else None for j in jobs] == ids
            beat, failed, released = (j for j in jobs if j is not None)
            listed = ", ".join(map(str, ids))
            write_by_hand(backend_url, f"UPDATE jobs SET cancel_requested = {value} WHERE id IN ({listed})")
            assert q.heartbeat(beat) is True, value  # was True, then refused below
            assert q.ack_cancel(beat) is True, value  # was: False (a stale write)
            assert q.fail(failed, "boom") == x, value  # was: PENDING, to run again
            assert q.release(released) is True
            assert [q.get(i).status for i in ids] == [x, x, x], value  # type: ignore[union-attr]
            assert all("stale_write_refused" not in kinds(q, i) for i in ids), value


def test_a_worker_cancels_a_job_whose_cancel_was_asked_by_hand_at_once(backend_url: str) -> None:
    """The same with a real worker: while its handler runs, the job's cancel is asked by hand. The
    worker's heartbeat reports it, the handler stops, and the job ends CANCELLED by the worker,
    without a stale write, long before its lease would have run out (a minute)."""
    settings = jobq.Settings(lease_seconds=60)
    q = jobq.Queue(backend_url, settings=settings)
    started = threading.Event()

    def handler(ctx: Any) -> None:
        started.set()
        while True:  # until the cancel is known: ensure_lease or sleep raises JobCancelled
            ctx.ensure_lease()  # a heartbeat now, rather than the worker's next one in 20 s
            ctx.sleep(0.1)

    value = _asked(backend_url)[0]
    job_id = q.enqueue({"x": 1})
    with q, running(Worker(q, handler, concurrency=1)):
        assert started.wait(30)
        write_by_hand(backend_url, f"UPDATE jobs SET cancel_requested = {value} WHERE id = {job_id}")

        def ended() -> jobq.Job | None:
            job = q.get(job_id)
            return job if job is not None and job.status != jobq.JobStatus.PROCESSING else None

        job = wait_for(ended, 30, "the job cancelled by its worker")
        assert job.status == jobq.JobStatus.CANCELLED
        assert kinds(q, job_id) == ["enqueued", "claimed", "cancelled"]  # was: a stale write between


def test_a_job_whose_cancel_was_asked_by_hand_and_whose_worker_is_gone_is_cancelled_by_the_rescuer(
    backend_url: str,
) -> None:
    """The worker killed (-9) or frozen past its lease after a cancel was asked by hand: the
    rescuer ends the job CANCELLED, not PENDING to run again (it read the value as Python does,
    which the statements now agree with)."""
    with jobq.Queue(backend_url) as q:
        for value in _asked(backend_url):
            job_id = q.enqueue({"asked": value})
            job = q.claim("gone-worker", lease=0.05)  # its worker never writes again
            assert job is not None and job.id == job_id
            write_by_hand(backend_url, f"UPDATE jobs SET cancel_requested = {value} WHERE id = {job_id}")
            wait_for(lambda j=job_id: [r for r in q.rescue_expired() if r.job_id == j], 30, "the lease rescued")
            assert q.get(job_id).status == jobq.JobStatus.CANCELLED, value  # type: ignore[union-attr]
            assert kinds(q, job_id)[-1] == "cancelled"


def _no_times(url: str, *more: object) -> list[object]:
    """Times a row written by hand can hold that are no time: NaN and the infinities on
    PostgreSQL; on SQLite, which stores a NaN as NULL, the infinities (9e999)."""
    values: list[object] = [math.inf, -math.inf] + ([] if url.startswith("sqlite") else [math.nan])
    return values + list(more)


def test_a_completion_dated_by_hand_past_now_or_at_no_time_stops_no_metric(backend_url: str, tmp_path: Path) -> None:
    """``jobq metrics`` starts its completion cursor at the newest finished job. One whose
    finished_at was written by hand as Infinity, NaN (PostgreSQL sorts it above every number) or a
    time to come put the cursor past every completion to come: the exporter counted none, for as
    long as it ran. It now starts at the newest job finished by now. A wait of no number (a run_at
    written by hand) is left out of the sums, which it would have made infinite or NaN for good."""
    from jobq.observability.metrics import JobqCollector

    values = _no_times(backend_url, time.time() + 86_400)

    def completed(run_at: object, started_at: object, finished_at: object) -> None:
        _insert(backend_url, tmp_path, "{}", status="COMPLETED", attempts=1, created_at=time.time() - 10,
                run_at=run_at, started_at=started_at, finished_at=finished_at)  # fmt: skip

    with jobq.Queue(backend_url) as q:
        now = time.time()
        for v in values:
            completed(now - 10, now - 5, v)
        collector = JobqCollector(q, settle_seconds=0.0, scrape_events=0)
        collector._take_events(time.time(), 0)  # the cursors start here
        for i in range(3):
            q.enqueue({"i": i})
            job = q.claim("w")
            assert job is not None
            q.complete(job)
        now = time.time()
        for v in values:
            completed(v, now - 1, now)  # due at no time: no wait
            completed(now - 2, v, now)  # started at no time: no wait, no run
        collector._take_events(time.time() + 1, 10**6)
        counted = 3 + 2 * len(values)
        assert collector._totals.counters.get(("completed", "default")) == counted  # was: None
        wait, run = collector._totals.wait["default"], collector._totals.run["default"]
        assert sum(wait.counts) == sum(run.counts) == counted
        assert math.isfinite(wait.total) and math.isfinite(run.total)


def test_a_row_dated_far_ahead_or_at_no_time_holds_back_no_counter(backend_url: str, tmp_path: Path) -> None:
    """Where the exporter lets young rows settle (PostgreSQL by default: an id becomes visible at
    commit), it held back every job and event after the first one dated past its cutoff. One
    created_at written by hand a day ahead, as Infinity or as NaN, or an event from a host whose
    clock is that far ahead, stopped the enqueue and event counters for good. A time more than
    ``METRICS_CLOCK_AHEAD_MAX_SECONDS`` past the cutoff is now counted at once; a young one
    (a little ahead) is still held back until it settles."""
    from jobq.backends.ops.metrics import METRICS_CLOCK_AHEAD_MAX_SECONDS
    from jobq.observability.metrics import JobqCollector

    ahead = time.time() + 86_400
    values = _no_times(backend_url, ahead, *(["soon"] if backend_url.startswith("sqlite") else []))
    with jobq.Queue(backend_url) as q:
        collector = JobqCollector(q, settle_seconds=5.0, scrape_events=0)
        collector._take_events(time.time(), 0)  # the cursors start here
        for v in values:
            _insert(backend_url, tmp_path, "{}", created_at=v)
        first = q.enqueue({"n": 1})
        q.cancel(first, actor="op")  # an event after the rows dated ahead
        write_by_hand(backend_url, f"UPDATE job_events SET at = {ahead} WHERE job_id = {first}")
        q.enqueue({"n": 2})
        q.cancel(q.enqueue({"n": 3}), actor="op")
        soon = time.time() + 10  # a host a little ahead: young, held back
        _insert(backend_url, tmp_path, "{}", created_at=soon, run_at=soon, updated_at=soon)
        collector._take_events(time.time() + 6, 10**6)  # everything but the young job has settled
        counters = collector._totals.counters
        assert counters.get(("enqueued", "default")) == len(values) + 3  # was: None
        assert counters.get(("cancelled", "default")) == 2  # was: None
        assert soon < time.time() + 6 + METRICS_CLOCK_AHEAD_MAX_SECONDS
        collector._take_events(soon + 6, 10**6)
        assert counters.get(("enqueued", "default")) == len(values) + 4


@pytest.mark.parametrize(
    "detail",
    ['{"claimed_at": "abc"}', '{"claimed_at": 1e999}', '{"claimed_at": "NaN"}', '{"claimed_at": [1]}',
     '{"claimed_at": true}', '{"claimed_at": null}', "not json, claimed_at"],
)  # fmt: skip
def test_an_event_detail_written_by_hand_fails_no_chart(backend_url: str, detail: str) -> None:
    """An attempt that ended in an event (a retry, a failure) carries its claim time in the
    event's detail, and the ops page's history counts that claim from it. On PostgreSQL the read
    cast the detail to jsonb and its claimed_at to double precision: a detail written by hand
    that is no JSON, or whose claimed_at is text, a list, true or 1e999, failed the whole chart.
    Such a detail now gives no claim time, and the chart still counts every other claim."""
    with jobq.Queue(backend_url) as q:
        kept, edited = q.enqueue({"n": 1}), q.enqueue({"n": 2})
        for _ in range(2):
            job = q.claim("w")
            assert job is not None
            q.fail(job, "boom")  # retries later: an event carrying the attempt's claim time
        write_by_hand(backend_url, f"UPDATE job_events SET detail = '{detail}' WHERE job_id = {edited}")
        buckets = q.history(window=600, bucket=60)  # was: StorageError on PostgreSQL
        assert sum(b.claimed for b in buckets) == 1  # the event left as jobq wrote it
        assert sum(b.retried for b in buckets) == 2
        assert [str(e.kind) for e in q.events(kept)][-2:] == ["claimed", "retry_scheduled"]
