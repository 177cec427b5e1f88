"""Flow control in the apps (docs/flow-control.md): the table of paused and limited queues and their
jobs waiting on a limit (``ops_model.flow_control_frame``, in ops and the manager), and the
manager's pause and resume buttons, recorded with its operator (headless AppTest)."""

from __future__ import annotations

from handwritten import write_past_controls_checks
from seeding import MANAGER, OPS, Seeded
from streamlit.testing.v1 import AppTest

import jobq
from jobq.web import flow_panel, ops_model


def test_paused_and_limited_queues_and_their_waiting_jobs(tmp_path) -> None:
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        q.enqueue_many(["a", "b"], queue="mail")
        q.enqueue_many(["c", "d", "e"], queue="api")
        q.enqueue("free", queue="free")
        q.pause("mail", actor="ann")
        q.set_limits("api", concurrency=1, rate="10/min")
        assert q.claim("w", queue="api") is not None
        frame = ops_model.flow_control_frame(q.stats())
    assert frame.to_dict("records") == [
        {"queue": "api", "paused": "no", "limits": "concurrency 1, rate 10/min", "waiting on a limit": 2},
        {"queue": "mail", "paused": "yes (by ann)", "limits": "-", "waiting on a limit": 2},
    ]


def test_no_controls_no_rows(tmp_path) -> None:
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        q.enqueue("x")
        assert ops_model.flow_control_frame(q.stats()).empty


def test_the_manager_pauses_and_resumes_a_queue_as_its_operator(seeded: Seeded) -> None:
    at = AppTest.from_file(str(MANAGER), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.text_input(key="operator").input("carol").run()
    with jobq.Queue(seeded.url) as q:
        queue = sorted(q.stats().by_queue)[0]
    # Lazy: closed (no queue is paused or limited yet), the panel draws no widget.
    assert "flow_queue" not in [s.key for s in at.selectbox]
    at.session_state[flow_panel.OPEN] = True
    at.run()
    at.selectbox(key="flow_queue").select(queue).run()
    at.button(key="flow_pause").click().run()
    assert not at.exception
    with jobq.Queue(seeded.url) as q:
        [control] = q.controls()
        assert (control.queue, control.paused, control.paused_by) == (queue, True, "carol")
    [table] = [d.value for d in at.dataframe if "waiting on a limit" in d.value.columns]
    assert list(table["paused"]) == ["yes (by carol)"]
    at.button(key="flow_resume").click().run()
    with jobq.Queue(seeded.url) as q:
        assert [(e.action, e.actor) for e in q.control_history(queue)] == [("resume", "carol"), ("pause", "carol")]


def test_a_control_row_written_by_hand_shows_in_both_apps_without_an_error(seeded: Seeded) -> None:
    """A row the CHECKs let through before the write-time checks (SQLite keeps text in a number
    column; ``handwritten.write_past_controls_checks``): the apps show the stored
    values, and the queue's due jobs as waiting on a limit (the claim holds it back)."""
    with jobq.Queue(seeded.url) as q:
        queue = sorted(q.stats().by_queue)[0]
        q.set_limits(queue, concurrency=1)
    write_past_controls_checks(
        seeded.url, "UPDATE queue_controls SET concurrency = 'lots', rate_count = 5, rate_window = 'fast'"
    )
    for app in (MANAGER, OPS):
        at = AppTest.from_file(str(app), default_timeout=60)
        at.run()
        assert not at.exception, (app.name, [e.value for e in at.exception])
        [table] = [d.value for d in at.dataframe if "waiting on a limit" in d.value.columns]
        assert list(table["queue"]) == [queue]
        assert "concurrency lots" in table["limits"].iloc[0]
