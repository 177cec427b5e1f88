"""The ops console: counts, throughput, alerts, charts over time, and tabs of tables (queues,
workers, running and latest jobs, activity, schedules). Read-only.

Run with ``jobq ops``, or ``streamlit run src/ops/ops.py`` from a clone. The live part is one
``st.fragment(run_every=...)``: it redraws in place every few seconds without reloading the page,
so the sidebar and the user's scroll position stay put. Charts read ``Queue.history`` (the stored
events) and ``Queue.due_history`` (due jobs over time and each queue's waits, from the job rows),
so they survive restarts of every process. Job ids link to the manager (``JOBQ_MANAGER_URL``).
With ``JOBQ_OPS_PASSWORD`` (or, unset, the manager's ``JOBQ_MANAGER_PASSWORD``) nothing is shown
before the password is entered.
"""

from __future__ import annotations

import time
import xmlrpc.client
from typing import Final

import pandas as pd
import streamlit as st
from streamlit.elements.lib.column_types import ColumnConfig

from jobq import JobFilter, JobqError, JobStatus, Page, Queue, QueueStats, Settings
from jobq.backends.base import Bucket, DueHistory
from jobq.backends.common import HISTORY_SAMPLE_LIMIT
from jobq.present import LOST_AFTER_HEARTBEATS, WorkerState, duration_text, oldest_pending_age, worker_state
from jobq.web import _page, ops_charts, ops_model, safety, schedules_panel, supervisor, views
from jobq.web._page import open_queue, storage_error

REFRESH_CHOICES = {"2 s": 2, "5 s": 5, "10 s": 10, "30 s": 30, "Off": 0}
WINDOW_CHOICES = {
    "15 minutes": (900.0, 30.0),
    "1 hour": (3600.0, 60.0),
    "6 hours": (21600.0, 300.0),
    "24 hours": (86400.0, 900.0),
}
LATEST_JOBS_LIMIT = 50
# Streamlit shows a bare string at a run script's top level on the page ("magic"): comments here.
#: Running jobs listed with their progress (the longest-running first).
RUNNING_JOBS_LIMIT = 50
RECENT_EVENTS_LIMIT = 30
#: The queue table's container key.
QUEUE_TABLE_KEY: Final = "queue_health"


def _metrics(q: Queue, buckets: list[Bucket], bucket_seconds: float, settings: Settings, now: float) -> None:
    stats = q.stats()
    counts = stats.counts
    # No sparklines: the completed/failed chart below draws the same buckets.
    cards = [
        views.Metric(status.value.title(), f"{counts.get(status.value, 0):,}", color=views.STATUS_COLORS[status])
        for status in JobStatus
    ]
    workers = q.workers()
    heartbeat = settings.heartbeat_seconds
    alive = sum(1 for w in workers if worker_state(w, now, heartbeat) == WorkerState.ALIVE)
    age = oldest_pending_age(stats, now)
    rate = ops_model.failure_rate(buckets)
    attempts = ops_model.attempt_failure_rate(buckets)
    # Programs expected to run: those whose newest process did not stop cleanly.
    names = {
        w.name for w in ops_model.latest_per_name(workers) if worker_state(w, now, heartbeat) != WorkerState.STOPPED
    }
    cards += [
        views.Metric(
            "Due now",
            f"{stats.due:,}",
            f"{stats.scheduled:,} scheduled",
            "Pending jobs whose time has come (the backlog); scheduled ones (delayed, or waiting to retry) "
            "are not due yet.",
        ),
        views.Metric(
            "Oldest pending",
            duration_text(age) if age is not None else "none",
            help="How long the oldest due pending job has waited.",
        ),
        views.Metric(
            "Throughput",
            f"{stats.completed_last_minute:,}/min",
            f"{ops_model.throughput_per_minute(buckets, bucket_seconds):.1f}/min average",
            "Jobs completed in the last minute (and the average over the chart window).",
        ),
        views.Metric(
            "Failure rate",
            f"{rate:.1%}" if rate is not None else views.DASH,
            f"{attempts:.1%} per try" if attempts is not None else "no try finished",
            "Jobs that failed for good / (completed + failed) over the chart window; below it, the share of "
            "all attempts (tries) that failed, retried ones included.",
        ),
        views.Metric(
            "Workers alive",
            f"{alive} / {len(names)}",
            help=f"Alive: heartbeat within {LOST_AFTER_HEARTBEATS} heartbeats of {heartbeat:g} s.",
        ),
    ]
    st.html(views.metric_cards(cards, _page.theme_type()))
    note = views.finished_window_note(stats.finished_window)
    if note is not None:
        st.caption(note)

    programs, supervisor_error = _supervisor_programs()
    # Whoever holds up the writes (Queue.blockers), said as the backend's lock works: SQLite's one
    # write lock held by a stopped process or an open transaction, PostgreSQL's row and table locks.
    blockers = q.blockers()
    alerts = ops_model.compute_alerts(
        stats,
        workers,
        now,
        pending_alert_seconds=st.session_state.get("pending_alert_min", 5) * 60.0,
        heartbeat_seconds=heartbeat,
        programs=programs,
        supervisor_error=supervisor_error,
        frozen_writers=blockers if q.single_host else (),
        lock_blockers=() if q.single_host else blockers,
    )
    if alerts:
        for alert in alerts:
            getattr(st, alert.level)(
                safety.md_literal(alert.message, safety.SHOWN_MESSAGE_CHARS),
                icon=":material/crisis_alert:" if alert.level == "error" else ":material/warning:",
            )
    else:
        st.success(
            "All clear: workers alive for every queue with due jobs, no expired leases, no crash, "
            "nothing waiting too long.",
            icon=":material/check_circle:",
        )
    st.session_state["_workers"] = workers
    st.session_state["_stats"] = stats


def _supervisor_programs() -> tuple[list[supervisor.ProgramState], str | None]:
    """supervisord's programs where a socket is configured (``jobq.web.supervisor``), and why not."""
    where = supervisor.configured_socket()
    if where is None:
        return [], None
    try:
        return supervisor.read_programs(where), None
    except (OSError, xmlrpc.client.Error) as exc:
        return [], f"{where.path}: {exc}"


def _charts(frame: pd.DataFrame, bucket_seconds: float, due: DueHistory) -> None:
    per = "minute" if bucket_seconds == 60 else f"{bucket_seconds:g} s"
    # Drawn on the server as HTML and SVG images (ops_charts says why: a chart library's views
    # cost the browser's first render more than anything else on the page).
    st.html(ops_charts.charts_html(frame, ops_model.due_frame(due), per))
    st.caption(ops_model.due_coverage_text(due))
    st.caption(
        f"Wait and run times: of the newest {HISTORY_SAMPLE_LIMIT:,} jobs at most that finished in the window "
        "(completed or failed), placed in the bucket they finished in. The dashed line marks the bucket still filling."
    )


def _linked(frame: pd.DataFrame, column: str, manager: str | None) -> pd.DataFrame:
    """``frame`` with its job ids turned into links to the manager (or ``jobq show ID``)."""
    out = frame.copy()
    out[column] = [ops_model.job_link(int(i), manager) for i in out[column]]
    return out


def _job_column(manager: str | None) -> ColumnConfig:
    """How a job column shows: a link that opens the job in the manager, showing the id; without
    a manager URL, the command that shows the job (copy it from the cell)."""
    if manager is None:
        return st.column_config.TextColumn(
            help="Set JOBQ_MANAGER_URL (e.g. http://localhost:8501/) to open jobs in the manager from here."
        )
    return st.column_config.LinkColumn(display_text=ops_model.JOB_LINK_TEXT, help="Open the job in the manager")


def _latest(q: Queue, settings: Settings, now: float, due: DueHistory, manager: str | None) -> None:
    # Its status filter reruns the tabs' fragment (this open tab) only, not the whole live part.
    now = q.wall_time()
    show = st.segmented_control(
        "Status",
        ["All", *[s.value for s in JobStatus]],
        default="All",
        key="jobs_status",
        label_visibility="collapsed",
    )
    # Bounded at any table size (a sort of every row by updated_at took seconds at 10M jobs).
    jobs = q.latest(JobStatus(show) if show and show != "All" else None, LATEST_JOBS_LIMIT)
    frame = views.jobs_frame(jobs)[
        ["id", "status", "path / payload", "attempts", "created", "started", "finished", "last error"]
    ]
    # Short times (today's as HH:MM:SS), so that the columns fit at 1366 px; the zone is in the help.
    for column, field in (("created", "created_at"), ("started", "started_at"), ("finished", "finished_at")):
        frame[column] = [views.fmt_short_time(getattr(j, field), now) for j in jobs]
    when = f"Server time ({views.zone_name(now)}); a date when not today"
    st.dataframe(
        _linked(frame, "id", manager).style.map(views.style_cell, theme=_page.theme_type(), subset=["status"]),
        hide_index=True,
        width="stretch",
        height=420,
        column_config={
            "id": _job_column(manager),
            "path / payload": st.column_config.TextColumn(width="medium"),
            **{c: st.column_config.TextColumn(help=when) for c in ("created", "started", "finished")},
        },
    )


def _queues(q: Queue, settings: Settings, now: float, due: DueHistory, manager: str | None) -> None:
    workers = st.session_state.get("_workers", [])
    stats = st.session_state.get("_stats") or q.stats()
    waited = (
        "of the jobs claimed in the chart window"
        if due.sample_limit is None
        else f"of the jobs claimed since {views.fmt_short_time(due.covers_since, now)}"
    )
    # Plain HTML, not a data grid: the grid's first draw on a page costs the browser about half a
    # second, and this is the first screen's only table. Keyed so that the page (and
    # bench/apps.py) finds it ("st-key-queue_health").
    frame = ops_model.queue_health_frame(stats, workers, now, settings.heartbeat_seconds, due.waits)
    st.container(key=QUEUE_TABLE_KEY).html(
        views.html_table(
            frame,
            {
                "due": "Pending jobs whose time has come",
                "scheduled": "Pending jobs not yet due: delayed, or waiting to retry",
                "wait p50": f"Median wait from due to claimed, {waited}",
                "wait p95": f"95th percentile wait from due to claimed, {waited}",
                "live workers": "Alive workers that take jobs of this queue",
            },
        )
    )
    _flow_control(stats)


def _workers(q: Queue, settings: Settings, now: float, due: DueHistory, manager: str | None) -> None:
    workers = st.session_state.get("_workers", [])
    if not workers:
        st.info(
            "No worker has registered yet. Start consumers (e.g. `supervisord -c supervisord.conf`).",
            icon=":material/bedtime:",
        )
        return
    st.dataframe(
        ops_model.workers_frame(workers, now, settings.heartbeat_seconds).style.map(
            views.style_cell, theme=_page.theme_type(), subset=["state"]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "restarts": st.column_config.NumberColumn(
                help="Process starts of this supervisord program beyond the first"
            ),
            "id": st.column_config.TextColumn(width="small"),
            "started": st.column_config.TextColumn(help=f"Server time ({views.zone_name(now)}); a date when not today"),
        },
    )


def _running(q: Queue, settings: Settings, now: float, due: DueHistory, manager: str | None) -> None:
    running = q.list(
        JobFilter(statuses=(JobStatus.PROCESSING,)), Page(sort="started_at", descending=False, limit=RUNNING_JOBS_LIMIT)
    )
    if not running:
        st.caption("No job is running.")
        return
    progress = q.progress_of([j.id for j in running])
    st.dataframe(
        _linked(views.running_frame(running, progress, now), "id", manager),
        hide_index=True,
        width="stretch",
        key="running_jobs",
        column_config={
            "id": _job_column(manager),
            "progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent"),
        },
    )


def _activity(q: Queue, settings: Settings, now: float, due: DueHistory, manager: str | None) -> None:
    events = q.recent_events(RECENT_EVENTS_LIMIT)
    rows = [
        {
            "at": views.fmt_short_time(e.at, now),
            "job": e.job_id,
            "event": str(e.kind),
            "by": safety.plain(e.actor or ""),
        }
        for e in events
    ]
    st.dataframe(
        _linked(pd.DataFrame(rows, columns=["at", "job", "event", "by"]), "job", manager),
        hide_index=True,
        width="stretch",
        height=420,
        column_config={
            "at": st.column_config.TextColumn(width="small", help=f"Server time ({views.zone_name(now)})"),
            "job": _job_column(manager),
        },
    )


def _schedules(q: Queue, settings: Settings, now: float, due: DueHistory, manager: str | None) -> None:
    if not schedules_panel.panel(q, now, heading=False):
        st.caption("No schedule. Add one with `jobq schedule add` (docs/schedules.md).")


#: The tables below the charts, one tab each, in this order; only the open tab is read and drawn
#: (lazy tabs: a new page drew five tables nobody had scrolled to, about a quarter of its first
#: render at 125,000 jobs). The open tab is in the URL (``?view=Workers``), so a link opens it.
VIEWS: Final = {
    "Queues": _queues,
    "Workers": _workers,
    "Running jobs": _running,
    "Latest jobs": _latest,
    "Activity": _activity,
    "Schedules": _schedules,
}
#: The tabs' key, and their query parameter.
VIEW_KEY: Final = "view"


def _tables(q: Queue, settings: Settings, now: float, due: DueHistory) -> None:
    """The tabs of tables: a fragment of its own inside the live one, so that a tab change reruns
    the tables only, not the charts and metrics above them."""
    manager, manager_problem = ops_model.manager_base(settings.manager_url)
    if manager_problem:
        st.warning(safety.md_literal(manager_problem, safety.SHOWN_MESSAGE_CHARS), icon=":material/link_off:")
    tabs = st.tabs(list(VIEWS), key=VIEW_KEY, bind="query-params")
    for tab, draw in zip(tabs, VIEWS.values(), strict=True):
        if tab.open:
            with tab:
                try:
                    draw(q, settings, now, due, manager)
                except JobqError as exc:  # a tab change or a filter in a tab reruns this fragment alone
                    storage_error(exc, q)


def _flow_control(stats: QueueStats) -> None:
    """Paused and limited queues, if any (docs/flow-control.md)."""
    frame = ops_model.flow_control_frame(stats)
    if not frame.empty:
        st.caption("Paused and limited queues (`jobq pause`, `jobq limit`): their held-back jobs stay PENDING")
        st.dataframe(frame, hide_index=True, width="stretch")


def live(q: Queue, settings: Settings, window: float, bucket_seconds: float) -> None:
    """Everything that refreshes: one fragment, redrawn in place."""
    now = q.wall_time()  # the store's times are the server's (Queue.clock_offset)
    try:
        buckets = q.history(window=window, bucket=bucket_seconds)
        st.caption(
            safety.md_literal(f"Updated {time.strftime('%H:%M:%S %Z')} · {ops_model.ops_caption(q.display_url)}")
        )
        due = q.due_history(window=window, bucket=bucket_seconds)
        _metrics(q, buckets, bucket_seconds, settings, now)
        _charts(ops_model.history_frame(buckets), bucket_seconds, due)
        st.fragment(_tables)(q, settings, now, due)
    except JobqError as exc:
        storage_error(exc, q)


def main() -> None:
    """Draw the ops page."""
    # An emoji page icon: a ":material/..." one is fetched from fonts.gstatic.com on every load.
    st.set_page_config(page_title="jobq · ops", page_icon="📈", layout="wide")
    _page.gate("ops", "jobq ops")
    settings, q = open_queue(create=False)
    sb = st.sidebar
    sb.markdown("### :material/tune: Display")
    refresh_label = sb.selectbox("Refresh every", list(REFRESH_CHOICES), index=1, key="refresh")
    window_label = sb.selectbox("Chart window", list(WINDOW_CHOICES), index=1, key="window")
    sb.number_input("Alert when a job waits longer than (minutes)", min_value=1, value=5, key="pending_alert_min")
    sb.caption("Read-only: act on jobs in the manager app.")
    _page.lock_button("ops")
    st.title(":material/monitoring: jobq ops")
    window, bucket = WINDOW_CHOICES[window_label]
    every = REFRESH_CHOICES[refresh_label] or None
    st.fragment(run_every=every)(_page.watched(live))(q, settings, window, bucket)


if __name__ == "__main__":
    main()
