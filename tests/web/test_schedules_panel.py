"""The schedules panel: listed in ops and the manager; paused and resumed from the manager, with
the operator recorded (headless, streamlit.testing.v1.AppTest, on a seeded temporary database)."""

from __future__ import annotations

from pathlib import Path

from seeding import MANAGER, Seeded, run_ops
from streamlit.testing.v1 import AppTest

from jobq import Queue
from jobq.web import manager

TIMEOUT = 60


def run(path: Path) -> AppTest:
    at = AppTest.from_file(str(path), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _frames(at: AppTest) -> list[list[str]]:
    return [list(d.value.columns) for d in at.dataframe]


def test_no_panel_without_schedules(seeded: Seeded) -> None:
    assert ["name", "expression", "zone", "task", "next run", "last run", "paused"] not in _frames(run_ops("Schedules"))


def test_ops_lists_schedules_and_the_manager_pauses_and_resumes_them(seeded: Seeded) -> None:
    with Queue(seeded.url) as q:
        q.add_schedule("nightly", task="report", cron="0 3 * * *", zone="Europe/Paris")
        q.add_schedule("poll", task="poll", every=30)
    ops = run_ops("Schedules")
    [table] = [d.value for d in ops.dataframe if "expression" in d.value.columns]
    assert list(table["name"]) == ["nightly", "poll"] and list(table["paused"]) == ["no", "no"]
    assert "Pause" not in {b.label for b in ops.button}  # ops is read-only

    at = run(MANAGER)
    at.text_input(key="operator").input("carol").run()
    assert "schedule_name" not in [b.key for b in at.selectbox]  # a lazy expander: closed, nothing drawn
    at.session_state[manager.SCHEDULES_OPEN] = True
    at.run()
    at.selectbox(key="schedule_name").select("poll").run()
    at.button(key="schedule_pause").click().run()
    assert not at.exception
    with Queue(seeded.url) as q:
        poll = {s.name: s for s in q.schedules()}["poll"]
    assert (poll.paused, poll.paused_by) == (True, "carol") and poll.paused_at is not None
    [table] = [d.value for d in at.dataframe if "expression" in d.value.columns]
    assert list(table["paused"])[1].startswith("yes, by carol")
    at.button(key="schedule_resume").click().run()
    with Queue(seeded.url) as q:
        assert {s.name: s.paused for s in q.schedules()} == {"nightly": False, "poll": False}
    # Every action stays in the history both apps show: who, when, what (newest first).
    [history] = [d.value for d in at.dataframe if "action" in d.value.columns]
    assert [(r["schedule"], r["action"], r["by"]) for _, r in history.iterrows()] == [
        ("poll", "resume", "carol"),
        ("poll", "pause", "carol"),
    ]
    [ops_history] = [d.value for d in run_ops("Schedules").dataframe if "action" in d.value.columns]
    assert list(ops_history["action"]) == ["resume", "pause"] and list(ops_history["by"]) == ["carol", "carol"]
