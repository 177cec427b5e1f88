"""Flow-control rows and retry policies written by hand (an operator's ``sqlite3``/``psql``, another
program): a control row jobq could not enforce is refused with the database's one-line error
(the table's CHECKs, and since SQLite schema 11 / PostgreSQL schema 13 the write-time checks of
what got past them: SQLite stores text in a number column and orders it above every number;
PostgreSQL takes ``'NaN'`` as above every number; nothing tied a rate's count to its window). Such
a row written before those checks (``handwritten.write_past_controls_checks``), and a job's
``policy`` column, which is plain text, never stop a worker loop, loses a job, or breaks ``jobq stats``,
``jobq limits``, ``jobq show`` or the apps' models: a bad control row holds its queue back (its
jobs stay PENDING, logged once with how to fix it), a bad policy falls back to the task's and the
queue's (logged)."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest
from cli_errors import run_jobq
from handwritten import write_by_hand, write_past_controls_checks
from polling import wait_for
from worker_thread import running

import jobq
import jobq.flow
from jobq.testing import FakeClock
from jobq.testing.contract.common import kinds
from jobq.web import manager_model, ops_model, views
from jobq.worker import Worker
from jobq.worker.runtime import GAVE_BACK_AT_STOP
from jobq.worker.scheduler import Scheduler

#: Writes the CHECKs refuse on both backends.
REFUSED = [
    "UPDATE queue_controls SET concurrency = -1 WHERE queue = 'lim'",
    "UPDATE queue_controls SET per_key = 0 WHERE queue = 'lim'",
    "UPDATE queue_controls SET rate_count = 5, rate_window = -1 WHERE queue = 'lim'",
]
#: Writes that got past them before the write-time checks, per backend (PostgreSQL's typed columns
#: refuse text at the write). Refused now; written past the checks, they stand for older rows.
OLD_ROWS = {
    "sqlite": [
        "UPDATE queue_controls SET concurrency = 'lots' WHERE queue = 'lim'",
        "UPDATE queue_controls SET rate_count = 5, rate_window = 'fast' WHERE queue = 'lim'",
        "UPDATE queue_controls SET per_key = 2.5 WHERE queue = 'lim'",
    ],
    "postgres": [
        "UPDATE queue_controls SET rate_count = 5, rate_window = 'NaN' WHERE queue = 'lim'",
        "UPDATE queue_controls SET rate_count = 5, rate_window = NULL WHERE queue = 'lim'",
        "UPDATE queue_controls SET rate_count = 5, rate_window = 'Infinity' WHERE queue = 'lim'",
    ],
}
#: New rows get the same checks as changed ones.
REFUSED_INSERTS = {
    "sqlite": "INSERT INTO queue_controls (queue, concurrency, updated_at) VALUES ('new', 'lots', 0)",
    "postgres": "INSERT INTO queue_controls (queue, rate_count, updated_at) VALUES ('new', 5, 0)",
}
RESET = "UPDATE queue_controls SET concurrency = 1, per_key = NULL, rate_count = NULL, rate_window = NULL"


@contextmanager
def _sql_shell(url: str) -> Iterator[Any]:
    """A plain connection, as an operator's SQL shell (autocommit, no jobq in between)."""
    if url.startswith("sqlite:///"):
        conn = apsw.Connection(url.removeprefix("sqlite:///"))
        conn.set_busy_timeout(10_000)
        try:
            yield conn
        finally:
            conn.close()
        return
    from pg import raw_connect

    with raw_connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture(autouse=True)
def _fresh_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad control rows are reported once per process: each test counts its own reports."""
    monkeypatch.setattr(jobq.flow, "_REPORTED", set())


def _backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


def _cli(url: str, cwd: Path, *args: str) -> str:
    proc = run_jobq(*args, "--db", url, cwd=cwd)
    assert proc.returncode == 0, (args, proc.stderr)
    assert "Traceback" not in proc.stderr, args  # (a failed run's stored error may hold one: stdout)
    return proc.stdout


def test_a_bad_control_row_holds_its_queue_back_and_nothing_else(
    backend_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = jobq.Settings(database_url=backend_url, poll_interval_seconds=0.05)
    with jobq.Queue(settings=settings) as q, _sql_shell(backend_url) as sql:
        q.set_limits("lim", concurrency=1)
        for statement in REFUSED + OLD_ROWS[_backend(backend_url)]:  # a one-line error; the row is unchanged
            with pytest.raises(Exception, match=r"(?i)check|queue_controls: a limit is a whole number"):
                sql.execute(statement)
        with pytest.raises(Exception, match=r"(?i)check|queue_controls: a limit is a whole number"):
            sql.execute(REFUSED_INSERTS[_backend(backend_url)])
        assert [c.queue for c in q.controls()] == ["lim"]
        assert q.controls()[0].concurrency == 1 and q.controls()[0].rate_count is None
        for statement in OLD_ROWS[_backend(backend_url)]:  # rows an older schema let in
            sql.execute(RESET)
            write_past_controls_checks(backend_url, statement)
            held = q.enqueue({"q": "lim"}, queue="lim")
            free = q.enqueue({"q": "plain"}, queue="plain")
            with caplog.at_level(logging.ERROR, logger="jobq.flow"):
                claimed = q.claim_many("w1", 5, queue=["lim", "plain"])
            assert [j.id for j in claimed] == [free], statement  # the other queue goes on
            assert q.get(held).status == jobq.JobStatus.PENDING
            assert q.next_due_at("lim") is None  # idle workers do not spin on it
            assert q.stats().waiting_on_limit_by_queue.get("lim") == 1, statement
            assert not ops_model.flow_control_frame(q.stats()).empty
            _cli(backend_url, tmp_path, "stats")
            _cli(backend_url, tmp_path, "limits")
            q.complete(claimed[0])
            q.cancel(held)
        for args in (["limits", "--json"], ["stats", "--json"]):
            _cli(backend_url, tmp_path, *args)
        reports = [r.getMessage() for r in caplog.records if r.name == "jobq.flow"]
        assert len(reports) == len(OLD_ROWS[_backend(backend_url)]), reports  # once per bad row
        assert all("\n" not in r and "jobq limit lim" in r for r in reports)


def test_a_worker_waits_out_a_bad_control_row_and_runs_the_job_once_it_is_set(backend_url: str, tmp_path: Path) -> None:
    settings = jobq.Settings(database_url=backend_url, poll_interval_seconds=0.05)
    with jobq.Queue(settings=settings) as q:
        q.set_limits("lim", concurrency=1)
        write_past_controls_checks(backend_url, OLD_ROWS[_backend(backend_url)][0])
        held = q.enqueue({"q": "lim"}, queue="lim")
        free = [q.enqueue({"q": "plain", "n": n}, queue="plain") for n in range(3)]
        done: list[int] = []
        with running(Worker(q, lambda ctx: done.append(ctx.job.id), queues=["lim", "plain"])):
            wait_for(
                lambda: all(q.get(i).status == jobq.JobStatus.COMPLETED for i in free), 30, "the free queue's jobs"
            )
            assert q.get(held).status == jobq.JobStatus.PENDING  # its loop goes on: it runs the job below
            _cli(backend_url, tmp_path, "limit", "lim", "--clear", "all")  # as the log line advises
            wait_for(lambda: q.get(held).status == jobq.JobStatus.COMPLETED, 30, "the held job, once the row is good")
        assert sorted(done) == sorted([held, *free])  # each ran once


def test_a_next_admission_written_a_year_ahead_holds_a_rate_limited_queue_back_one_step(backend_url: str) -> None:
    """A rate's next admission (``rate_tat``) set a year ahead, by hand or by a clock since set
    back: a number the CHECKs take. Taken as it stood, the queue admitted nothing for a year and
    its idle workers slept until then. jobq writes it at most one step ahead, so one further is
    taken as one step from now: the worker runs the queue's jobs at the rate."""
    settings = jobq.Settings(database_url=backend_url, poll_interval_seconds=0.05)
    with jobq.Queue(settings=settings) as q, _sql_shell(backend_url) as sql:
        q.set_limits("lim", rate="10/s")
        sql.execute(f"UPDATE queue_controls SET rate_tat = {q.clock() + 365 * 86400.0} WHERE queue = 'lim'")
        ids = [q.enqueue({"n": n}, queue="lim") for n in range(3)]
        assert (q.next_due_at("lim") or 0) <= q.clock() + 0.1 + 1.0  # the worker's sleep: a step
        with running(Worker(q, lambda ctx: None, queues=["lim"])):
            wait_for(lambda: all(q.get(i).status == jobq.JobStatus.COMPLETED for i in ids), 30, "the queue's jobs")
        claimed = sorted(j.started_at for i in ids if (j := q.get(i)) is not None and j.started_at is not None)
        assert len(claimed) == 3
        assert all(b - a >= 0.1 - 1e-6 for a, b in itertools.pairwise(claimed))  # at the rate
        [control] = q.controls()
        assert control.next_admit_at is not None and control.next_admit_at <= q.clock() + 0.1


BAD_POLICIES = ["{not json", "[1, 2]", '{"max_attempts": -1}', '{"backoff": "soon"}', '{"retry_on": 7}']


def test_a_bad_policy_falls_back_to_the_task_and_queue_policy(
    backend_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = jobq.Settings(
        database_url=backend_url, poll_interval_seconds=0.05, backoff_base_seconds=0.01, backoff_cap_seconds=0.01
    )
    with jobq.Queue(settings=settings) as q, _sql_shell(backend_url) as sql:
        ids = [q.enqueue({"n": n}, max_attempts=2, backoff=0.01) for n in range(len(BAD_POLICIES))]
        for job_id, policy in zip(ids, BAD_POLICIES, strict=True):
            sql.execute(f"UPDATE jobs SET policy = '{policy}' WHERE id = {job_id}")
        runs: dict[int, int] = {}

        def flaky(ctx: jobq.JobContext) -> None:  # each job fails its first run, then succeeds
            runs[ctx.job.id] = runs.get(ctx.job.id, 0) + 1
            if runs[ctx.job.id] == 1:
                raise RuntimeError("first run fails")

        with caplog.at_level(logging.WARNING, logger="jobq"), running(Worker(q, flaky)):
            wait_for(lambda: all(q.get(i).status == jobq.JobStatus.COMPLETED for i in ids), 60, "every job")
        assert runs == {i: 2 for i in ids}  # retried by the stored max_attempts (2), not lost
        fallbacks = [
            r.getMessage() for r in caplog.records if "using the task's and the queue's policy" in r.getMessage()
        ]
        assert {int(m.split(":")[0].split()[1]) for m in fallbacks} == set(ids)
        for job_id in ids:
            shown = _cli(backend_url, tmp_path, "show", str(job_id))
            assert "policy" in shown


def test_a_schedule_row_that_cannot_fire_holds_back_only_itself(
    backend_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Schedule rows that ``add_schedule`` refuses, written by hand (or by an older jobq): a
    payload over the size limit, a cron expression that is not one. Before, the first one's
    error ended every scheduler tick, and no schedule fired at all. Now each is skipped and
    logged once, the others fire, and a mended row fires again."""
    clock = FakeClock(1_800_000_000.0)
    with jobq.Queue(backend_url, clock=clock) as q:
        for name in ("big", "good", "garbled"):
            q.add_schedule(name, task="t", every=60)
        write_by_hand(
            backend_url,
            "UPDATE schedules SET payload_json = '\"" + "x" * 70_000 + "\"' WHERE name = 'big'",
            "UPDATE schedules SET cron = 'every tuesday', every = NULL WHERE name = 'garbled'",
        )
        scheduler = Scheduler(q, declared={})
        with caplog.at_level(logging.INFO, logger="jobq.worker"):
            for _minute in range(3):
                clock.advance(60)
                assert list(scheduler.run_due()) == ["good"]
            errors = sorted(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
            assert len(errors) == 2, errors  # once each, not once a tick
            assert errors[0].startswith("schedule big cannot fire") and "over the limit" in errors[0]
            assert errors[1].startswith("schedule garbled cannot fire") and "bad cron expression" in errors[1]
            write_by_hand(backend_url, "UPDATE schedules SET payload_json = NULL WHERE name = 'big'")
            clock.advance(60)
            assert sorted(scheduler.run_due()) == ["big", "good"]
            assert "schedule big fires again" in caplog.text
        assert {j.payload["schedule"] for j in q.list_jobs()} == {"big", "good"}  # type: ignore[index]


def test_times_no_calendar_holds_are_shown_not_raised(backend_url: str, tmp_path: Path) -> None:
    """A job's and a schedule's times written by hand as 1e300 and -1e300: the manager's list
    raised OverflowError, ``jobq schedules list`` ended in a traceback and ``jobq show`` printed
    a count of days with 290 digits."""
    with jobq.Queue(backend_url) as q:
        job_id = q.enqueue({"a": 1})
        q.add_schedule("far", task="t", every=3600)
        write_by_hand(
            backend_url,
            f"UPDATE jobs SET run_at = 1e300, created_at = 1e300, updated_at = -1e300 WHERE id = {job_id}",
            "UPDATE schedules SET next_run_at = 1e300 WHERE name = 'far'",
        )
        [row] = manager_model.jobs_table(q.list_jobs()).to_dict("records")
        assert row["created"] == views.NOT_A_DATE
    shown = _cli(backend_url, tmp_path, "show", str(job_id))
    assert "run at    1e+300 (not a date) (in over 100 years)" in shown
    assert "updated   -1e+300 (not a date) (over 100 years ago)" in shown
    assert "in over 100 years" in _cli(backend_url, tmp_path, "list")
    assert "1e+300 (not a date)" in _cli(backend_url, tmp_path, "schedules", "list")
    assert "next run:   1e+300 (not a date)" in _cli(backend_url, tmp_path, "schedules", "show", "far")


def test_a_queue_name_stored_as_a_blob_is_shown_and_blanks_no_metric(sqlite_url: str, tmp_path: Path) -> None:
    """A queue written by hand as the blob X'FF' failed `jobq stats` (bytes and str compared), and
    every scrape of the metrics (HTTP 500: one bad row blanked every metric)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from jobq.observability.metrics import JobqCollector

    with jobq.Queue(sqlite_url) as q:
        q.enqueue({"a": 1})
        write_by_hand(
            sqlite_url,
            "INSERT INTO jobs (queue, task, payload, status, priority, run_at, attempts, max_attempts, created_at, "
            "updated_at) SELECT X'FF', 't', '{}', 'PENDING', 0, run_at, 0, 3, created_at, updated_at FROM jobs",
        )
        assert set(q.stats().by_queue) == {"default", "\ufffd"}
        registry = CollectorRegistry(auto_describe=False)
        registry.register(JobqCollector(q, settle_seconds=0.0))
        text = generate_latest(registry).decode()
    assert 'jobq_jobs_pending{due="true",queue="default"} 1.0' in text
    assert 'queue="\ufffd"' in text
    for args in (["stats"], ["stats", "--json"], ["list"]):
        _cli(sqlite_url, tmp_path, *args)


def test_completed_jobs_whose_queue_is_a_blob_are_each_counted_once(sqlite_url: str) -> None:
    """The exporter's fold of completed jobs whose queue was written by hand as a blob: one that is
    no UTF-8 (X'FF') must not fail the fold, whichever job finished last, and a blob 'default'
    counts in the queue 'default' with the text ones, none lost (the fold names every queue but
    the last job's through a blob since 2026-12-07; one of two keys that read alike was dropped
    before)."""
    from jobq.backends.base import HistogramBounds

    bounds = HistogramBounds(wait=(1.0,), run=(1.0,), attempts=(1.0,))
    with jobq.Queue(sqlite_url) as q:
        start = q.completion_cursor()
        q.enqueue_many(["a", "b", "c", "d"])
        for job in q.claim_many("w", 4):
            q.complete(job)
        first, second, third, last = sorted(e.id for e in q.completions_after(start))

        def counted() -> dict[str, int]:
            return {name: t.completed for name, t in q.completion_totals(start, bounds)[1].items()}

        write_by_hand(sqlite_url, f"UPDATE jobs SET queue = X'FF' WHERE id = {first}")
        assert counted() == {"\ufffd": 1, "default": 3}
        write_by_hand(sqlite_url, f"UPDATE jobs SET queue = X'FF' WHERE id = {last}")  # the last one's queue
        assert counted() == {"\ufffd": 2, "default": 2}
        write_by_hand(sqlite_url, f"UPDATE jobs SET queue = CAST('default' AS BLOB) WHERE id = {second}")
        assert counted() == {"\ufffd": 2, "default": 2}
        write_by_hand(sqlite_url, f"UPDATE jobs SET queue = X'61FF20' WHERE id = {third}")
        assert counted() == {"\ufffd": 2, "default": 1, "a\ufffd ": 1}


def test_jobs_under_a_queue_name_no_worker_can_serve_are_moved_out_by_jobq_move(
    backend_url: str, tmp_path: Path
) -> None:
    """Stored by hand (or an older jobq) under '' and 'mail ': no worker can be told to serve them,
    and no command moved them (the docs gave an UPDATE). `jobq move --queue 'mail ' --to mail`
    does (by filter, and the empty name's job by its id), and a worker of mail then claims them."""
    with jobq.Queue(backend_url) as q:
        ids = q.enqueue_many([{"n": n} for n in range(3)], queue="mail")
        write_by_hand(
            backend_url,
            f"UPDATE jobs SET queue = 'mail ' WHERE id IN ({ids[0]}, {ids[1]})",
            f"UPDATE jobs SET queue = '' WHERE id = {ids[2]}",
        )
        assert q.claim("w", queue="mail") is None
        out = _cli(backend_url, tmp_path, "move", "--queue", "mail ", "--to", "mail")
        assert out.splitlines() == [f"job {i}: moved to queue 'mail' (PENDING)" for i in ids[:2]]
        _cli(backend_url, tmp_path, "move", "--to", "mail", str(ids[2]))
        assert [q.get(i).queue for i in ids] == ["mail"] * 3
        assert {e.detail["from"] for i in ids for e in q.events(i) if str(e.kind) == "moved"} == {"mail ", ""}
        assert sorted(q.claim("w", queue="mail").id for _ in ids) == ids  # type: ignore[union-attr]


def test_a_give_back_after_the_job_was_set_pending_by_hand_changes_nothing(sqlite_url: str) -> None:
    """A running job set back to PENDING by hand (the seed's sqlite3) while its worker shuts down
    and gives it back: the give-back is refused (its lease ended with the edit) and recorded as
    such; the row stays as the hand left it, and the next claim runs it once."""
    with jobq.Queue(sqlite_url) as q:
        job_id = q.enqueue({"n": 1}, max_attempts=2)
        job = q.claim("w1")
        assert job is not None
        write_by_hand(sqlite_url, f"UPDATE jobs SET status = 'PENDING' WHERE id = {job_id}")
        assert q.release(job, GAVE_BACK_AT_STOP) is False
        stored = q.get(job_id)
        assert stored is not None and (stored.status, stored.attempts) == (jobq.JobStatus.PENDING, 1)
        history = kinds(q, job_id)
        assert history[-2:] == ["external_update", "stale_write_refused"], history
        assert "released" not in history
        again = q.claim("w2")
        assert again is not None and again.id == job_id and again.attempts == 2


def test_progress_and_an_interval_of_the_wrong_type_are_shown_not_raised(sqlite_url: str, tmp_path: Path) -> None:
    """SQLite keeps any value in any column: a progress of 'half' failed `jobq show` with a
    ValueError, an interval of 'often' every `jobq schedules` listing."""
    with jobq.Queue(sqlite_url) as q:
        job_id = q.enqueue({"a": 1})
        job = q.claim("w")
        assert job is not None
        q.progress(job, 0.5, "halfway")
        q.add_schedule("odd", task="t", every=3600)
        write_by_hand(
            sqlite_url,
            f"UPDATE jobs SET progress = 'half', progress_at = 'soon' WHERE id = {job_id}",
            "UPDATE schedules SET every = 'often' WHERE name = 'odd'",
        )
        assert q.progress_of([job_id])[job_id].fraction is None
    assert "progress" in _cli(sqlite_url, tmp_path, "show", str(job_id))
    assert "every 'often'" in _cli(sqlite_url, tmp_path, "schedules", "list")


def test_a_clock_skew_that_is_no_number_reads_as_unknown_not_as_in_sync(sqlite_url: str, tmp_path: Path) -> None:
    """A worker's clock skew written by hand as text, infinity or a blob is unknown (None, shown
    as -), never the neutral 0.0 that other bad numbers read as: that would say the clock is in
    sync. A number written by hand is read as one (and alerted on when a second or more)."""
    with jobq.Queue(sqlite_url) as q:
        info = jobq.WorkerInfo("w", "consumer1", "host", 1, ("default",), q.clock(), q.clock())
        for value in ("'abc'", "1e999", "X'00'", "'-75.5'"):
            q.register_worker(info)
            write_by_hand(sqlite_url, f"UPDATE workers SET clock_skew = {value}")
            (worker,) = q.workers()
            assert worker.clock_skew == (-75.5 if value == "'-75.5'" else None), value
            shown = _cli(sqlite_url, tmp_path, "workers")
            alerts = ops_model.compute_alerts(q.stats(), q.workers(), q.wall_time())
            clock_alerts = [a.message for a in alerts if "Clock off" in a.message]
            if value == "'-75.5'":
                assert "-75.5 s" in shown and len(clock_alerts) == 1 and "host -75.5 s" in clock_alerts[0]
            else:  # no CLOCK column: nothing was measured, as on every SQLite queue
                assert "CLOCK" not in shown and clock_alerts == []


def test_a_worker_end_written_by_hand_as_no_time_is_listed_and_never_pruned(sqlite_url: str) -> None:
    """``stopped_at`` written by hand as text or a blob: the row reads as ended (listed among the
    ended ones, shown ``-``), and the rescuer's prune of ended rows, which compares it with a time,
    leaves it: text and blobs are never less than a number in SQLite. A real old end goes."""
    with jobq.Queue(sqlite_url) as q:
        now = q.wall_time()
        for worker_id in ("text", "blob", "old"):
            q.register_worker(jobq.WorkerInfo(worker_id, worker_id, "host", 1, ("default",), now - 9e5, now - 9e5))
        q.worker_stopped("old")
        write_by_hand(sqlite_url, "UPDATE workers SET stopped_at = 'soon' WHERE id = 'text'")
        write_by_hand(sqlite_url, "UPDATE workers SET stopped_at = X'00' WHERE id = 'blob'")
        write_by_hand(sqlite_url, f"UPDATE workers SET stopped_at = {now - 8e5} WHERE id = 'old'")
        assert sorted(w.id for w in q.workers()) == ["blob", "old", "text"]
        assert q.prune_workers(7 * 86_400) == 1
        assert sorted(w.id for w in q.workers()) == ["blob", "text"]
        assert {w.id: w.stopped_at for w in q.workers()} == {"blob": 0.0, "text": 0.0}  # ended, time unknown


def test_a_clock_base_that_is_no_number_is_not_compared_and_one_far_behind_reads_as_a_jump(sqlite_url: str) -> None:
    """A live worker's clock base (wall less monotonic clock) written by hand as text, infinity or
    a blob is unknown: a worker starting beside it compares nothing and excuses no lease. One
    written five minutes behind reads as a jump of the host's clock before that worker started:
    its first rescue waits for the heartbeats (the leases expired since that worker's beat)."""
    from jobq.worker.rescuer import Rescuer, process_table_id
    from jobq.worker.stall import StallWatch

    with jobq.Queue(sqlite_url) as q:
        now = q.clock()
        peer = jobq.WorkerInfo(
            "peer", "consumer1", "host", os.getpid(), ("default",), now, now, process_table=process_table_id()
        )
        for value, jumped in (("'abc'", False), ("1e999", False), ("X'00'", False), (None, True)):
            q.register_worker(peer)
            base = q.clock_base()
            assert base is not None
            written = value if value is not None else repr(base - 300)
            write_by_hand(sqlite_url, f"UPDATE workers SET clock_base = {written}")
            stalls = StallWatch(q.clock, threshold=1.0, margin=3.0, grace=30.0)
            Rescuer(q, "new", interval=1.0, stalls=stalls).tick()
            excused = stalls.excused_since(q.clock())
            if jumped:
                assert excused is not None and excused <= now - 3.0, value
            else:
                assert excused is None, value


def test_a_restamp_leaves_times_that_are_no_number_alone_and_a_clock_base_ahead_reads_as_a_step_back(
    sqlite_url: str,
) -> None:
    """After the clock was set back, the waiting jobs written before are made as if written now
    (``restamp_ahead``). A due time or a write time written by hand as text, a blob or infinity is
    no time a clock wrote: left as it is (text compared as a number, SQLite's way, would have made
    such a job due, or pushed it out of reach). A live worker's clock base written an hour ahead of
    this host's reads as a step back since its beat: the next worker's first rescue restamps."""
    from jobq.worker.rescuer import Rescuer, process_table_id
    from jobq.worker.stall import StallWatch

    clock = FakeClock(1_800_000_000.0)
    with jobq.Queue(sqlite_url, clock=clock) as q:
        written = [q.enqueue({"n": n}) for n in range(6)]
        clock.now -= 100.0  # the step
        bad = [
            ("updated_at", "'abc'"), ("updated_at", "X'00'"), ("updated_at", "1e999"), ("run_at", "'abc'"),
            ("run_at", "1e999"),
        ]  # fmt: skip
        for job_id, (column, value) in zip(written, bad, strict=False):
            write_by_hand(sqlite_url, f"UPDATE jobs SET {column} = {value} WHERE id = {job_id}")
        times = "SELECT id, run_at, updated_at FROM jobs ORDER BY id"
        with _sql_shell(sqlite_url) as shell:
            before = [tuple(r) for r in shell.execute(times)]
            assert q.restamp_ahead(100.0, 1.0) == [written[5]]  # the one whose times are a clock's
            after = [tuple(r) for r in shell.execute(times)]
        assert after[:5] == before[:5]
        assert after[5] == (written[5], clock.now, clock.now)
        newest = q.enqueue({"n": "newest"})
        for value, read in (("1900000000", 1.9e9), ("'abc'", None), ("X'00'", None), ("1e999", None)):
            write_by_hand(sqlite_url, f"UPDATE jobs SET updated_at = {value} WHERE id = {newest}")
            assert q.newest_write() == read, value  # a whole number is a time; the rest are none

    with jobq.Queue(sqlite_url) as q:
        now = q.clock()
        ahead = q.enqueue({"n": "ahead"})
        later = repr(now + 200)
        write_by_hand(sqlite_url, f"UPDATE jobs SET run_at = {later}, updated_at = {later} WHERE id = {ahead}")
        base = q.clock_base()
        assert base is not None
        peer = jobq.WorkerInfo(
            "peer", "consumer1", "host", os.getpid(), ("default",), now, now, process_table=process_table_id()
        )
        q.register_worker(peer)
        write_by_hand(sqlite_url, f"UPDATE workers SET clock_base = {base + 3600!r}")
        stalls = StallWatch(q.clock, threshold=1.0, margin=3.0, grace=30.0)
        Rescuer(q, "new", interval=1.0, stalls=stalls).tick()
        assert q.get(ahead).run_at <= q.clock() and stalls.stepped_back() == 0.0
        assert stalls.excused_since(q.clock()) is None  # a step back excuses no lease
