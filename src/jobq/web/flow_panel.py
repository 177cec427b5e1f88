"""The manager's flow-control panel (docs/flow-control.md): pause and resume a queue, recorded
with the operator's name, and the paused and limited queues with their jobs waiting on a limit
(``ops_model.flow_control_frame``, the table ops shows too). A panel of its own so that the page
only calls it. Limits are set with ``jobq limit`` (the CLI), not here.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from jobq import Queue, QueueStats
from jobq.web import ops_model, safety, views

#: The expander's session-state key (open or not).
OPEN = "flow_open"


def _act(q: Queue, queue: str, pause: bool, actor: str, allowed: bool, flash: Callable[[str, str], None]) -> None:
    act = (lambda: q.pause(queue, actor=actor)) if pause else (lambda: q.resume(queue, actor=actor))
    views.pause_or_resume(
        f"Queue {queue}", pause, act, allowed=allowed, flash=flash, paused="paused: no worker claims from it"
    )


def panel(q: Queue, stats: QueueStats, *, actor: str, allowed: bool, flash: Callable[[str, str], None]) -> None:
    """Pause/resume buttons for the queues that have jobs or controls; the controls table if any."""
    names = sorted(set(stats.by_queue) | {c.queue for c in q.controls()})
    if not names:
        return
    # Lazy like the manager's other expanders: closed, nothing inside is computed or drawn. Open
    # at first where a queue is paused or limited (the table says which).
    box = st.expander(
        ":material/traffic: Pause and resume queues", expanded=bool(stats.controls), key=OPEN, on_change="rerun"
    )
    if not box.open:
        return
    with box:
        frame = ops_model.flow_control_frame(stats)
        if not frame.empty:
            st.dataframe(frame, hide_index=True, width="stretch")
        left, middle, right = st.columns([3, 1, 1])
        name = left.selectbox("Queue", names, key="flow_queue", format_func=safety.plain)
        if name is None:
            return
        middle.button(
            "Pause", key="flow_pause", on_click=_act, args=(q, name, True, actor, allowed, flash), width="stretch"
        )
        right.button(
            "Resume", key="flow_resume", on_click=_act, args=(q, name, False, actor, allowed, flash), width="stretch"
        )
