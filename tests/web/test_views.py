"""What both apps show (jobq.web.views), and the launcher command (jobq.web)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobq import ConfigError, Job, JobStatus
from jobq.web import app_path, ops_model, streamlit_command, views


def job(**changes: Any) -> Job:
    base = Job(7, "default", "", {"path": "data/files/a.txt"}, JobStatus.FAILED, 0, 0.0, 3, 3, 0.0, 0.0)
    return dataclasses.replace(base, **changes)


def test_payload_summary_prefers_the_path() -> None:
    assert views.payload_summary({"path": "data/files/a.txt", "x": 1}) == "data/files/a.txt"
    assert views.payload_summary({"n": "y" * 500}, limit=20).endswith("…")
    row = views.job_row(job(last_error="Traceback ...\n  File x\nValueError: boom\n"))
    assert row["last error"] == "ValueError: boom" and row["path / payload"] == "data/files/a.txt"
    assert list(views.jobs_frame([]).columns) == views.JOB_COLUMNS


def test_hostile_text_in_a_job_row_is_plain() -> None:
    row = views.job_row(
        job(payload={"path": "a\u202eb"}, queue="q\x1b[31m", last_error="x\nValueError: \u202eboom\x07")
    )
    assert (row["path / payload"], row["queue"], row["last error"]) == ("ab", "q[31m", "ValueError: boom")
    assert row["last error"] == views.job_row(job(last_error="ValueError: boom"))["last error"]
    # A queue no worker can serve (an older jobq's, or written by hand): quoted, not a blank cell.
    assert [views.job_row(job(queue=q))["queue"] for q in ("", "mail ", "mail")] == ["''", "'mail '", "mail"]


def test_status_and_worker_state_cells_are_styled() -> None:
    assert views.status_badge("FAILED") == ":red-badge[:material/error: FAILED]"
    red = views.STATUS_PALETTES["light"]["red"][0]
    assert red in views.style_cell("lost") and red in views.style_cell(JobStatus.FAILED)
    assert views.STATUS_PALETTES["dark"]["red"][0] in views.style_cell("crashed", "dark")
    assert views.style_cell("restarted") and views.style_cell("stopped") and views.style_cell("alive")
    assert views.style_cell("anything else") == ""


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
    for shown in (views.database_line(SECRET_URL), ops_model.ops_caption(SECRET_URL)):
        assert "SECRET" not in shown and "jobq:***@db.internal:5432/jobq" in shown
    assert ops_model.ops_caption("sqlite:///data/queue.db") == "database sqlite:///data/queue.db · read-only"


def test_html_table_escapes_every_cell_and_tooltip_and_aligns_numbers() -> None:
    frame = pd.DataFrame({"queue": ['<img src=x onerror="alert(1)">', "a&b"], "due": [12_500, 3], "p50": ["1s", "-"]})
    shown = views.html_table(frame, {"due": 'Due "now" <b>'})
    assert "<img" not in shown and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in shown
    assert "<td>a&amp;b</td>" in shown
    assert '<th class="num" title="Due &quot;now&quot; &lt;b&gt;"><span>due</span></th>' in shown
    assert '<td class="num">12,500</td>' in shown and "<td>1s</td>" in shown  # text columns stay left
    assert shown.count("<tr>") == 3  # the header and two rows
    # Free text wraps in its cell (a job's event details) instead of widening the table.
    wrapped = views.html_table(frame, wrap=("p50",))
    assert '<td class="wrap">1s</td>' in wrapped and "<th><span>p50</span></th>" in wrapped
    assert '<td class="wrap">' not in shown


def test_metric_cards_escape_every_text_and_colour_labels_for_the_theme() -> None:
    cards = [
        views.Metric("Failed", "1,204", color="red"),
        views.Metric("<b>Due</b>", "<img src=x onerror=alert(1)>", 'say "hi" & <go>', "a <tooltip> & 'quote'"),
    ]
    light, dark = views.metric_cards(cards, "light"), views.metric_cards(cards, "dark")
    assert "<img" not in light and "<b>" not in light
    assert "&lt;img src=x onerror=alert(1)&gt;" in light and "say &quot;hi&quot; &amp; &lt;go&gt;" in light
    assert 'title="a &lt;tooltip&gt; &amp; &#x27;quote&#x27;"' in light
    assert 'data-label="&lt;b&gt;Due&lt;/b&gt;"' in light
    red_light, red_dark = views.STATUS_PALETTES["light"]["red"][0], views.STATUS_PALETTES["dark"]["red"][0]
    assert f"color: {red_light}" in light and red_dark not in light
    assert f"color: {red_dark}" in dark
    assert light.count('class="jobq-metric"') == 2 and light.count('class="note"') == 1
