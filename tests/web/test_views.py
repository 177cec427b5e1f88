"""The apps' Streamlit-free helpers (jobq.web.views) and the launcher command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from jobq import ActionResult, ConfigError, JobFilter, JobStatus, QueueStats, WorkerInfo
from jobq.web import app_path, streamlit_command, views

NOW = 1_800_000_000.0


def worker(wid: str, name: str, started: float, seen: float, stopped: float | None = None) -> WorkerInfo:
    return WorkerInfo(wid, name, "h", 1, ("default",), started, seen, stopped)


def stats(expired: int = 0, oldest: float | None = None) -> QueueStats:
    return QueueStats({}, {}, oldest, 0, 0, expired)


def test_ages_and_durations() -> None:
    assert [views.fmt_age(s) for s in (5, 185, 7500, 200_000)] == ["5s", "3m 05s", "2h 05m", "2d 7h"]
    assert views.fmt_age(None) == views.DASH
    assert views.fmt_duration(0.25) == "0.25s"


def test_payload_summary_prefers_the_path() -> None:
    assert views.payload_summary({"path": "data/files/a.txt", "x": 1}) == "data/files/a.txt"
    assert views.payload_summary({"n": "y" * 500}, limit=20).endswith("…")
    assert views.first_line("Traceback ...\n  File x\nValueError: boom\n") == "ValueError: boom"


def test_legal_buttons_follow_the_transition_table() -> None:
    assert [s for s in JobStatus if views.can_resubmit(s)] == [
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    ]
    assert [s for s in JobStatus if views.can_cancel(s)] == [JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.FAILED]


def test_filter_and_its_description() -> None:
    where = views.build_filter(["FAILED"], ["default"], "  a.txt ")
    assert where == JobFilter(statuses=(JobStatus.FAILED,), queues=("default",), search="a.txt")
    assert views.describe_filter(where) == "status FAILED, queue default, payload containing 'a.txt'"
    assert views.describe_filter(views.build_filter()) == "all jobs"
    assert views.page_count(0, 25) == 1 and views.page_count(101, 25) == 5


def test_summaries_of_action_results() -> None:
    ok = ActionResult(1, True, JobStatus.PENDING, "resubmitted")
    bad = ActionResult(2, False, JobStatus.PENDING, "job 2: cannot resubmit a job that is PENDING")
    missing = ActionResult(3, False, None, "")
    assert views.summarize([ok], "Resubmit") == views.Outcome("success", "Resubmitted 1 job.", 1, 0)
    mixed = views.summarize([ok, bad, missing], "Resubmit")
    assert mixed.level == "warning" and "2 refused" in mixed.message and "job 3 not found" in mixed.message
    assert views.summarize([bad], "Resubmit").level == "error"
    assert views.summarize([], "Cancel").level == "warning"


def test_workers_restarts_and_states() -> None:
    rows = [
        worker("a", "consumer1", NOW - 600, NOW - 300),
        worker("b", "consumer1", NOW - 100, NOW - 2),
        worker("c", "consumer2", NOW - 600, NOW - 95),
        worker("d", "consumer3", NOW - 600, NOW - 50, stopped=NOW - 50),
    ]
    frame = views.workers_frame(rows, NOW, heartbeat_seconds=10)
    by_id = frame.set_index("id")
    assert by_id.loc["a", "state"] == "restarted" and by_id.loc["b", "state"] == "alive"
    assert by_id.loc["c", "state"] == "silent" and by_id.loc["d", "state"] == "stopped"
    assert by_id.loc["a", "restarts"] == by_id.loc["b", "restarts"] == 1
    alerts = views.compute_alerts(stats(expired=2, oldest=NOW - 900), rows, NOW, heartbeat_seconds=10)
    assert [a.level for a in alerts] == ["error", "warning", "warning"]
    assert "consumer2" in alerts[2].message and "consumer1" not in alerts[2].message
    assert views.compute_alerts(stats(oldest=NOW - 10), rows[:2], NOW) == []


def test_operator_and_password() -> None:
    assert views.resolve_operator("  carol ", {"JOBQ_OPERATOR": "alice"}) == "carol"
    assert views.resolve_operator("", {"JOBQ_OPERATOR": "alice"}) == "alice"
    assert views.resolve_operator(None, {}) == views.login_name()
    assert views.expected_password({}, None) is None
    assert views.expected_password({}, {"manager_password": "x"}) == "x"
    assert views.expected_password({"JOBQ_MANAGER_PASSWORD": "y"}, {"manager_password": "x"}) == "y"
    assert views.password_ok("y", "y") and not views.password_ok(None, "y")


def test_manual_path_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "files").mkdir(parents=True)
    (tmp_path / "data" / "files" / "a.txt").write_text("a\n")
    (tmp_path / "outside.txt").write_text("no\n")
    assert views.validate_path("data/files/a.txt", "data") == "data/files/a.txt"
    for bad in ("", "../outside.txt", "data/files/missing.txt", str(tmp_path / "outside.txt")):
        with pytest.raises(ValueError):
            views.validate_path(bad, "data")


def test_launch_command_is_safe_by_default() -> None:
    cmd = streamlit_command("ops", 9000, ["--theme.base", "dark"])
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(cmd[4]) == app_path("ops") and app_path("ops").is_file()
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.port"] == "9000"
    assert flags["--browser.gatherUsageStats"] == "false" and flags["--server.headless"] == "true"
    assert flags["--client.showErrorDetails"] == "none"
    hosts = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--server.allowedHosts"]
    assert hosts == ["localhost", "127.0.0.1", "::1"]
    assert streamlit_command("manager")[streamlit_command("manager").index("--server.port") + 1] == "8501"
    with pytest.raises(ConfigError):
        streamlit_command("nope")
    with pytest.raises(ConfigError):
        streamlit_command("ops", 70000)
