"""The ops console's model (jobq.web.ops_model): the workers table and the alerts."""

from __future__ import annotations

from jobq import QueueStats, WorkerInfo
from jobq.web import ops_model

NOW = 1_800_000_000.0


def worker(wid: str, name: str, started: float, seen: float, stopped: float | None = None) -> WorkerInfo:
    return WorkerInfo(wid, name, "h", 1, ("default",), started, seen, stopped)


def stats(expired: int = 0, oldest: float | None = None) -> QueueStats:
    return QueueStats({}, {}, oldest, 0, 0, expired)


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
    assert by_id.loc["c", "state"] == "silent" and by_id.loc["d", "state"] == "stopped"
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
        "The oldest pending job has waited 15m (threshold 5m): are enough consumers running?",
        "Silent worker: consumer2 (pid 1, last seen 1m ago).",
    ]
