"""The schedules panel both apps show (``jobq.schedules``): a table in ops, and in the manager the
same table with pause and resume (recorded with the operator's name and the time). Both show the
pause/resume history: who, when, what.

A panel of its own so that the pages only call it: it is drawn only when a schedule exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import streamlit as st

from jobq import Queue, ScheduleAction, ScheduleInfo
from jobq.queue import SCHEDULE_HISTORY_LIMIT_DEFAULT
from jobq.schedules import expression_of
from jobq.web import safety, views

COLUMNS = ["name", "expression", "zone", "task", "next run", "last run", "paused"]
HISTORY_COLUMNS = ["when", "schedule", "action", "by"]


def schedules_frame(schedules: Sequence[ScheduleInfo], now: float) -> pd.DataFrame:
    """One row per schedule, every text made safe to show."""
    rows = [
        {
            "name": safety.plain(s.name),
            "expression": safety.plain(expression_of(s.cron, s.every)),
            "zone": safety.plain(s.zone),
            "task": safety.plain(s.task),
            "next run": "-" if s.paused else views.fmt_short_time(s.next_run_at, now),
            "last run": views.fmt_short_time(s.last_run_at, now) if s.last_run_at is not None else "-",
            "paused": f"yes, by {safety.plain(s.paused_by or '?')} {views.fmt_short_time(s.paused_at, now)}"
            if s.paused
            else "no",
        }
        for s in schedules
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def history_frame(actions: Sequence[ScheduleAction], now: float) -> pd.DataFrame:
    """The pause/resume history, newest first, every text made safe to show."""
    rows = [
        {
            "when": views.fmt_short_time(a.at, now),
            "schedule": safety.plain(a.name),
            "action": a.action,
            "by": safety.plain(a.actor),
        }
        for a in actions
    ]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def _history(q: Queue, name: str | None, now: float) -> None:
    actions = q.schedule_history(name)
    more = "+" if len(actions) >= SCHEDULE_HISTORY_LIMIT_DEFAULT else ""
    with st.expander(f"Pause/resume history ({len(actions)}{more})"):
        if actions:
            st.dataframe(history_frame(actions, now), hide_index=True, width="stretch")
        else:
            st.caption("Never paused or resumed.")


def _act(q: Queue, name: str, pause: bool, actor: str, allowed: bool, flash: Callable[[str, str], None]) -> None:
    act = (lambda: q.pause_schedule(name, actor=actor)) if pause else (lambda: q.resume_schedule(name, actor=actor))
    views.pause_or_resume(f"Schedule {name}", pause, act, allowed=allowed, flash=flash)


def panel(
    q: Queue,
    now: float,
    *,
    actor: str | None = None,
    allowed: bool = False,
    flash: Callable[[str, str], None] | None = None,
    heading: bool = True,
    schedules: Sequence[ScheduleInfo] | None = None,
) -> bool:
    """Draw the schedules (nothing when there are none: returns False); with ``flash``, pause/resume
    buttons. ``schedules`` where the caller has read them already."""
    schedules = q.schedules() if schedules is None else schedules
    if not schedules:
        return False
    if heading:  # not under ops' "Schedules" tab
        st.subheader(":material/schedule: Schedules")
    st.dataframe(schedules_frame(schedules, now), hide_index=True, width="stretch")
    if flash is None or actor is None:
        _history(q, None, now)
        return True
    names = [s.name for s in schedules]
    left, middle, right = st.columns([3, 1, 1])
    name = left.selectbox("Schedule", names, key="schedule_name", format_func=safety.plain)
    if name is None:
        return True
    middle.button(
        "Pause", key="schedule_pause", on_click=_act, args=(q, name, True, actor, allowed, flash), width="stretch"
    )
    right.button(
        "Resume", key="schedule_resume", on_click=_act, args=(q, name, False, actor, allowed, flash), width="stretch"
    )
    _history(q, name, now)
    return True
