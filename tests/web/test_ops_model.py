"""The ops console's model (jobq.web.ops_model): the workers table and the alerts."""

from __future__ import annotations

import dataclasses
import datetime
import re

from jobq import QueueStats, WorkerEnd, WorkerInfo
from jobq.backends.base import DueHistory, QueueWait
from jobq.web import ops_model
from jobq.web.supervisor import ProgramState

NOW = 1_800_000_000.0


def worker(
    wid: str,
    name: str,
    started: float,
    seen: float,
    stopped: float | None = None,
    queues: tuple[str, ...] = ("default",),
    end: WorkerEnd | None = None,
) -> WorkerInfo:
    return WorkerInfo(wid, name, "h", 1, queues, started, seen, stopped, end_reason=end)


def stats(expired: int = 0, oldest: float | None = None, due: dict[str, int] | None = None) -> QueueStats:
    due = due if due is not None else ({"default": 1} if oldest is not None else {})
    oldest_by_queue = {q: oldest for q in due} if oldest is not None else {}
    return QueueStats(
        counts={},
        by_queue={},
        oldest_pending_at=oldest,
        completed_last_minute=0,
        failed_last_minute=0,
        expired_leases=expired,
        due_by_queue=due,
        oldest_due_by_queue=oldest_by_queue,
    )


def test_workers_restarts_and_states() -> None:
    rows = [
        worker("a", "consumer1", NOW - 600, NOW - 300),
        worker("b", "consumer1", NOW - 100, NOW - 2),
        worker("c", "consumer2", NOW - 600, NOW - 95),
        worker("d", "consumer3", NOW - 600, NOW - 50, stopped=NOW - 50),
    ]
    frame = ops_model.workers_frame(rows, NOW, heartbeat_seconds=10)
    by_id = frame.set_index("id")
    assert by_id.loc["a", "state"] == "restarted" and by_id.loc["b", "state"] == "alive"
    assert by_id.loc["c", "state"] == "lost" and by_id.loc["d", "state"] == "stopped"
    assert by_id.loc["a", "restarts"] == by_id.loc["b", "restarts"] == 1
    alerts = ops_model.compute_alerts(stats(expired=2, oldest=NOW - 900), rows, NOW, heartbeat_seconds=10)
    assert [a.level for a in alerts] == ["error", "warning", "warning"]
    assert "consumer2" in alerts[2].message and "consumer1" not in alerts[2].message
    assert ops_model.compute_alerts(stats(oldest=NOW - 10), rows[:2], NOW) == []


def test_ages_in_the_workers_table_and_alerts_read_as_the_cli_prints_them() -> None:
    rows = [worker("c", "consumer2", NOW - 600, NOW - 95), worker("e", "consumer4", NOW - 60, NOW + 2)]
    by_id = ops_model.workers_frame(rows, NOW, heartbeat_seconds=10).set_index("id")
    assert by_id.loc["c", "last heartbeat"] == "1m ago"
    assert by_id.loc["e", "last heartbeat"] == "now"  # a clock slightly ahead of ours
    alerts = ops_model.compute_alerts(stats(oldest=NOW - 900), rows, NOW, heartbeat_seconds=10)
    assert [a.message for a in alerts] == [
        "In queue default, the oldest due job has waited 15m (threshold 5m): are enough workers serving it?",
        "Lost worker (no heartbeat): consumer2 (pid 1, last seen 1m ago).",
    ]


def test_a_crash_is_an_alert_for_a_while_even_after_a_restart() -> None:
    crashed = worker("a", "consumer1", NOW - 600, NOW - 300, stopped=NOW - 120, end=WorkerEnd.CRASHED)
    restarted = worker("b", "consumer1", NOW - 100, NOW - 2)
    frame = ops_model.workers_frame([crashed, restarted], NOW, heartbeat_seconds=10).set_index("id")
    assert frame.loc["a", "state"] == "crashed"  # not "stopped", not "restarted": it did crash
    (alert,) = ops_model.compute_alerts(stats(), [crashed, restarted], NOW, heartbeat_seconds=10)
    assert alert.level == "error" and alert.message.startswith("Worker crashed (exited without stopping): consumer1")
    later = NOW + ops_model.CRASH_ALERT_SECONDS_DEFAULT
    moved = dataclasses.replace(restarted, last_seen_at=later)
    assert ops_model.compute_alerts(stats(), [crashed, moved], later, heartbeat_seconds=10) == []
    stopped = dataclasses.replace(crashed, end_reason=WorkerEnd.STOPPED)
    assert ops_model.compute_alerts(stats(), [stopped, restarted], NOW, heartbeat_seconds=10) == []


def test_no_live_worker_is_an_alert_and_names_the_queues_with_due_jobs() -> None:
    gone = worker("a", "consumer1", NOW - 600, NOW - 300, stopped=NOW - 300, end=WorkerEnd.STOPPED)
    (alert,) = ops_model.compute_alerts(stats(due={"default": 84}), [gone], NOW)
    assert alert == ops_model.Alert(
        "error", "No worker is alive, and 84 jobs due in queue default: nothing will run them."
    )
    (idle,) = ops_model.compute_alerts(stats(), [], NOW)
    assert idle.level == "warning" and idle.message.startswith("No worker is alive")
    live = worker("b", "consumer2", NOW - 60, NOW - 1, queues=("default",))
    (unserved,) = ops_model.compute_alerts(stats(due={"default": 3, "mail": 84, "pdf": 0}), [gone, live], NOW)
    assert unserved == ops_model.Alert("error", "No live worker serves 84 jobs due in queue mail.")
    assert ops_model.compute_alerts(stats(due={"default": 3}), [gone, live], NOW) == []
    # Queues stored by an older jobq (or by hand) under a name no worker can be told to serve.
    (stuck,) = ops_model.compute_alerts(stats(due={"": 2, "mail ": 1}), [live], NOW)
    assert stuck.message == (
        "No live worker serves 2 jobs due in queue '' (a name no worker can serve: jobq move --queue '' --to QUEUE"
        " moves its jobs), 1 job due in queue 'mail ' (a name no worker can serve: jobq move --queue 'mail ' --to"
        " QUEUE moves its jobs)."
    )


def test_the_backlog_warning_names_each_queue_that_waits_too_long() -> None:
    live = worker("b", "consumer2", NOW - 60, NOW - 1, queues=("default", "mail"))
    waiting = QueueStats(
        {}, {}, NOW - 900, 0, 0, 0, {"default": 1, "mail": 2}, {"default": NOW - 10, "mail": NOW - 900}
    )
    (alert,) = ops_model.compute_alerts(waiting, [live], NOW)
    assert alert.level == "warning" and alert.message.startswith("In queue mail, the oldest due job has waited 15m")


def test_supervisord_programs_in_trouble_are_named() -> None:
    live = worker("b", "consumer2", NOW - 60, NOW - 1)
    programs = [
        ProgramState("consumer2", "RUNNING"),
        ProgramState("consumer1", "FATAL", "Exited too quickly (process log may have details)"),
        ProgramState("producer1", "BACKOFF"),
    ]
    (alert,) = ops_model.compute_alerts(stats(), [live], NOW, programs=programs)
    assert alert == ops_model.Alert(
        "error",
        "supervisord: consumer1 FATAL (Exited too quickly (process log may have details)), producer1 BACKOFF.",
    )
    (unreachable,) = ops_model.compute_alerts(stats(), [live], NOW, supervisor_error="run/supervisor.sock: refused")
    assert unreachable.level == "warning" and "run/supervisor.sock: refused" in unreachable.message


def test_queue_health_separates_due_from_scheduled_and_counts_live_workers() -> None:
    stats_ = QueueStats(
        {},
        {"default": {"PENDING": 3003, "PROCESSING": 2, "FAILED": 1}, "mail": {"PENDING": 84}},
        NOW - 120,
        0,
        0,
        0,
        {"default": 3, "mail": 84},
        {"default": NOW - 120, "mail": NOW - 30},
        {"default": 5},
    )
    workers = [
        worker("a", "consumer1", NOW - 60, NOW - 1, queues=("default",)),
        worker("b", "consumer2", NOW - 60, NOW - 1, queues=("default", "pdf")),
        worker("c", "consumer3", NOW - 600, NOW - 300, stopped=NOW - 300, queues=("mail",)),
    ]
    waits = {"default": QueueWait(40, 0.042, 7.25), "archive": QueueWait(1, 200.0, 200.0)}
    frame = ops_model.queue_health_frame(stats_, workers, NOW, waits=waits).set_index("queue")
    stuck = QueueStats({"PENDING": 1}, {"": {"PENDING": 1}}, NOW - 5, 0, 0, 0, {"": 1}, {"": NOW - 5})
    assert list(ops_model.queue_health_frame(stuck, workers, NOW)["queue"]) == ["''", "default", "pdf"]
    assert frame.loc["default"].to_dict() == {
        "due": 3,
        "scheduled": 3000,  # 3,000 delayed jobs are not a backlog
        "waiting to retry": 5,
        "running": 2,
        "failed": 1,
        "oldest due waited": "2m",
        "wait p50": "42ms",
        "wait p95": "7.2s",
        "live workers": 2,
    }
    assert frame.loc["mail", "live workers"] == 0 and frame.loc["mail", "due"] == 84
    assert frame.loc["mail", "wait p50"] == "-"  # nothing of it was claimed in the window
    assert frame.loc["pdf", "due"] == 0 and frame.loc["pdf", "oldest due waited"] == "-"  # served, empty
    assert frame.loc["archive", "wait p95"] == "3m 20s"  # a queue with only recent waits is listed too


def test_the_due_chart_leaves_unread_buckets_empty_and_says_what_it_covers() -> None:
    whole = DueHistory(NOW - 180, 60.0, NOW - 180, None, [2, 0, 1], {})
    frame = ops_model.due_frame(whole)
    assert frame["due"].tolist() == [2, 0, 1]
    assert list(frame.index) == [datetime.datetime.fromtimestamp(NOW - 180 + i * 60) for i in range(3)]
    assert "jobs claimed in the chart window" in ops_model.due_coverage_text(whole)
    cut = DueHistory(NOW - 180, 60.0, NOW - 70, 20_000, [None, 0, 1], {})
    assert ops_model.due_frame(cut)["due"].isna().tolist() == [True, False, False]  # unknown, not zero
    text = ops_model.due_coverage_text(cut)
    assert "newest 20,000 finished jobs" in text and "since" in text


def test_jobs_link_to_the_manager_or_name_the_command() -> None:
    base, problem = ops_model.manager_base("http://localhost:8501")
    assert (base, problem) == ("http://localhost:8501/", None)
    assert ops_model.job_link(42, base) == "http://localhost:8501/?job=42"
    assert re.search(ops_model.JOB_LINK_TEXT, ops_model.job_link(42, base)).group(1) == "42"  # type: ignore[union-attr]
    assert ops_model.manager_base(None) == (None, None)
    assert ops_model.job_link(42, None) == "jobq show 42"
    refused, why = ops_model.manager_base("javascript:alert(1)")
    assert refused is None and why is not None and "not an http(s) URL" in why


def test_the_attempt_failure_rate_counts_retried_attempts() -> None:
    from jobq.backends.base import Bucket

    buckets = [Bucket(0.0, 0, 0, 80, 2, 0, None, None, None, None, retried=16)]
    assert ops_model.failure_rate(buckets) == 2 / 82
    assert ops_model.attempt_failure_rate(buckets) == 18 / 98
    assert ops_model.attempt_failure_rate([]) is None


def test_a_live_worker_whose_host_clock_is_off_is_an_alert() -> None:
    # A second or more off the database server's (what jobq corrects): the host's NTP needs an
    # operator. Less, nothing measured (SQLite), or a worker no longer alive: no alert.
    fast = dataclasses.replace(worker("a", "consumer1", NOW - 60, NOW - 1), host="web-1", clock_skew=60.04)
    near = dataclasses.replace(worker("b", "consumer2", NOW - 60, NOW - 1), clock_skew=-0.4)
    local = worker("c", "consumer3", NOW - 60, NOW - 1)
    gone = dataclasses.replace(worker("d", "consumer4", NOW - 600, NOW - 500, stopped=NOW - 500), clock_skew=-120.0)
    (alert,) = ops_model.compute_alerts(stats(), [fast, near, local, gone], NOW, heartbeat_seconds=10)
    assert alert.level == "warning"
    assert "web-1 +60.0 s (worker consumer1)" in alert.message and "NTP" in alert.message
    assert "consumer2" not in alert.message and "consumer4" not in alert.message
    assert ops_model.compute_alerts(stats(), [near, local], NOW, heartbeat_seconds=10) == []


def test_a_stopped_process_holding_the_write_lock_is_the_first_alert() -> None:
    # Queue.blockers names it (test_health.py, a real SIGSTOPped holder).
    held = "pid 4242 (sqlite3 queue.db), which is stopped (SIGSTOP or a debugger; `kill -CONT 4242` continues it)"
    alerts = ops_model.compute_alerts(stats(expired=2), [], NOW, frozen_writers=[held])
    assert [a.level for a in alerts][:2] == ["error", "error"]
    assert alerts[0].message.startswith("Every write waits: the queue's write lock is held by pid 4242 (sqlite3")
    assert "`kill -CONT 4242`" in alerts[0].message and "expired lease" in alerts[1].message
    assert not any("write lock" in a.message for a in ops_model.compute_alerts(stats(), [], NOW))
