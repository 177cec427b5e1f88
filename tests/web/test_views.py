"""The apps' Streamlit-free helpers (jobq.web.views) and the launcher command."""

from __future__ import annotations

import json
import logging
import re
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


# -- hardening: secrets, untrusted text, passwords, where the apps serve --------------------------------
SECRET_URL = "postgresql://jobq:SECRET-pw@db.internal:5432/jobq?sslpassword=SSL-SECRET"


def test_database_line_and_ops_caption_never_show_a_password() -> None:
    for shown in (views.database_line(SECRET_URL), views.ops_caption(SECRET_URL)):
        assert "SECRET" not in shown and "jobq:***@db.internal:5432/jobq" in shown
    assert views.ops_caption("sqlite:///data/queue.db") == "database sqlite:///data/queue.db · read-only"


def test_plain_removes_bidi_format_and_control_characters_and_cuts() -> None:
    assert views.plain("invoice\u202etxt.exe") == "invoicetxt.exe"
    assert views.plain("a\u200bb\u2066c\u2069\ufeffd\x00e\x1b[0m") == "abcde[0m"
    assert views.plain("one\r\ntwo\u2028three\tfour") == "one two three four"
    assert views.plain("one\r\ntwo\tx", multiline=True) == "one\ntwo\tx"
    cut = views.plain("x" * 1000)
    assert len(cut) == views.SHOWN_LINE_CHARS and cut.endswith(views.ELLIPSIS)
    assert views.plain("\u202e" * 10_000 + "tail", limit=10) == ""  # padding cannot push work past the limit


def test_md_literal_leaves_nothing_markdown_can_act_on() -> None:
    hostile = "[a](http://other.host/x) ![i](http://other.host/i.png) $$\\huge X$$ :red[y] www.other.host <b>"
    escaped = views.md_literal(hostile)
    # every ASCII punctuation character is escaped, so no link, image, math, directive or autolink
    assert re.fullmatch(r"(?:\\[!-/:-@\[-`{-~]|[^!-/:-@\[-`{-~])*", escaped), escaped
    assert re.sub(r"\\(.)", r"\1", escaped).replace(views.WORD_JOINER, "") == hostile
    # GFM autolinks need a space or punctuation before http/www and a letter after @: a word joiner is neither
    joined = views.md_literal("see http://a.b www.c.d e@f.g")
    assert joined == "see \u2060http\\:\\/\\/a\\.b \u2060www\\.c\\.d e\\@\u2060f\\.g"
    assert "\u202e" not in views.md_literal("a\u202eb")


def test_shown_json_writes_invisible_characters_as_escapes() -> None:
    text = views.shown_json({"path": "invoice\u202etxt.exe", "n": "a\u2028b\U000e0001"})
    assert "\u202e" not in text and "\\u202e" in text and "\\u2028" in text and "\\udb40\\udc01" in text
    assert json.loads(text) == {"path": "invoice\u202etxt.exe", "n": "a\u2028b\U000e0001"}
    assert views.payload_summary({"path": "a\u202eb"}) == "ab"
    assert views.first_line("x\nValueError: \u202eboom\x07") == "ValueError: boom"


def test_operator_names_are_cleaned_and_cut() -> None:
    assert views.clean_operator(" mal\u202elory\x1b\n  ops ") == "mallory ops"
    assert views.clean_operator("z" * 500) == "z" * views.OPERATOR_NAME_CHARS
    assert views.resolve_operator("\u202e\u200b", {"JOBQ_OPERATOR": "al\x00ice"}) == "alice"


def test_ops_password_falls_back_to_the_managers() -> None:
    assert views.expected_password({"JOBQ_MANAGER_PASSWORD": "m"}, None, app="ops") == "m"
    assert views.expected_password({"JOBQ_MANAGER_PASSWORD": "m", "JOBQ_OPS_PASSWORD": "o"}, None, app="ops") == "o"
    assert views.expected_password({"JOBQ_OPS_PASSWORD": "o"}, None, app="manager") is None
    assert views.expected_password({}, {"ops_password": "so", "manager_password": "sm"}, app="ops") == "so"


def test_login_guard_doubles_the_delay_caps_it_and_logs_who_not_what(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    guard = views.LoginGuard(first_seconds=1.0, max_seconds=5.0, sleep=slept.append)
    caplog.set_level(logging.WARNING, logger="jobq.web.login")
    for guess in ("hunter1", "hunter2", "hunter3", "hunter4"):
        assert not guard.check(guess, "right", app="manager", who="session abc (client 10.0.0.9)")
    assert slept == [1.0, 2.0, 4.0, 5.0]
    assert guard.check("right", "right", app="manager", who="session abc") and slept == [1.0, 2.0, 4.0, 5.0]
    assert not guard.check("", "right", app="ops", who="session def") and slept[-1] == 1.0  # reset by the right one
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5 and "session abc (client 10.0.0.9)" in messages[0]
    assert not any("hunter" in m or "right" in m for m in messages), messages


@pytest.mark.parametrize(("address", "password", "serves"), [
    ("127.0.0.1", None, True), ("127.0.0.2", None, True), ("localhost", None, True), ("::1", None, True),
    ("[::1]", None, True), ("unix:///tmp/s.sock", None, True), (None, None, False), ("", "pw", False),
    ("0.0.0.0", None, False), ("0.0.0.0", "pw", True), ("192.0.2.7", None, False), ("::", "pw", True),
])  # fmt: skip
def test_serving_refusal(address: str | None, password: str | None, serves: bool) -> None:
    assert (views.serving_refusal(address, password, "manager") is None) is serves


def test_host_allowed_follows_streamlits_allowed_hosts() -> None:
    for host in ("localhost:8501", "127.0.0.1:8501", "[::1]:8501", "LOCALHOST", "localhost.", None):
        assert views.host_allowed(host, []), host
    for host in ("evil.example:8501", "127.0.0.1.evil.example", "localhost@evil", "", "localhost:99999"):
        assert not views.host_allowed(host, []), host
    assert views.host_allowed("ops.example.com:443", ["*.example.com"])
    assert not views.host_allowed("localhost", ["jobq.internal"])
    assert views.host_allowed("anything", ["*"])
