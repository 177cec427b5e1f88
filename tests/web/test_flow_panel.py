"""The ops page's flow-control table (``ops_model.flow_control_frame``): paused and limited queues
and their jobs waiting on a limit, from a real store (docs/flow-control.md)."""

from __future__ import annotations

import jobq
from jobq.web import ops_model


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
