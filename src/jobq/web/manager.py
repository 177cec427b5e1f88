"""The manager: find jobs, resubmit or cancel them (one, a selection, or all matching), move one to another
queue, enqueue by path.

Run with ``jobq manager``, or ``streamlit run src/manager/manager.py`` from a clone. A thin page
over ``jobq.Queue`` and ``jobq.web.manager_model``; every action records the operator as ``actor``.
Actions run in button callbacks, before the page is drawn, so the table always shows their effect.
With ``JOBQ_MANAGER_PASSWORD`` set nothing of the queue is shown before the password is entered
(``_page.gate``). Text that jobs, workers or operators bring (paths, payloads, errors, names) is
shown as plain text (``safety.plain``) or escaped Markdown (``safety.md_literal``), never as Markdown.
Buttons are offered only where ``jobq.job.operator_actions`` allows the action.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Final

import streamlit as st

from jobq import (
    ActionResult,
    DuplicateJob,
    Job,
    JobFilter,
    JobNotFound,
    JobqError,
    JobStatus,
    Page,
    Queue,
    QueueStats,
    Settings,
)
from jobq.job import MOVABLE, operator_actions
from jobq.present import progress_text, queue_text
from jobq.web import _page, flow_panel, job_table, manager_model, safety, schedules_panel, views
from jobq.web._page import open_queue, storage_error

# The job list's columns' relative widths (pixels at the narrowest page, 1366 px with the sidebar
# open, where the table fits without scrolling sideways and no header is cut:
# tests/web/test_browser_manager.py measures it). A wider page widens every column in proportion;
# a cell's text past its width ends in an ellipsis (the full times, payload and error are in the
# cell's tooltip and the job's detail).
TABLE_WIDTHS: Final = {
    "id": 72,
    "status": 116,
    "queue": 76,
    "task": 76,
    "path / payload": 168,
    "tries": 60,  # room for the sort mark (a click on a header sorts by it)
    "created": 80,
    "finished": 80,
    "last error": 140,
}
# Streamlit shows a bare string at a run script's top level on the page ("magic"): comments here.
#: Session state: a header click changed the sort, and the page must run whole (``_sort_by_header``).
RESORTED: Final = "_resorted"
#: Session state: the stats the whole page read, handed to the job list's fragment in the same run.
PAGE_STATS: Final = "_page_stats"
#: The job list's rows and header (``jobq.web.job_table``).
ROW_HEIGHT_PX: Final = job_table.ROW_HEIGHT_PX
BAR_GAP: Final = "xxsmall"


#: The session-state keys of the lazy expanders (open or not); tests open them through these.
ENQUEUE_OPEN: Final = "enqueue_open"
SCHEDULES_OPEN: Final = "schedules_open"

#: Session state: the action messages on the page, with when each goes (``_flashes``).
FLASHES_SHOWN: Final = "_flashes_shown"
#: How long an action's message stays on the page, through the job list's refreshes. It went with
#: the next one (the message is drawn in the list's fragment), at a 5 s refresh often before the
#: operator looked back; and a run that a click cut short after taking them could lose them.
FLASH_SHOWN_SECONDS: Final = 30.0
#: Most action messages on the page at once (the newest): a burst of actions does not push the
#: job list down the page.
FLASH_SHOWN_MAX: Final = 3

REFRESH_CHOICES = {"5 s": 5, "10 s": 10, "30 s": 30, "Off": 0}
#: How often the job list redraws on its own (the filters, selection and page stay).
REFRESH_DEFAULT = "10 s"


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """A bulk action waiting for the operator's confirmation."""

    verb: str
    """``"Resubmit"``, ``"Cancel"`` or ``"Move"`` (to the queue typed in the confirmation)."""
    count: int
    ids: tuple[int, ...] = ()
    where: JobFilter | None = None
    label: str = ""
    """The count as the list shows it ("50,000+" past its window); ``count`` written out if empty."""


# -- state helpers ------------------------------------------------------------------------------
def _flash(level: str, message: str) -> None:
    st.session_state.setdefault("flash", []).append((level, message))


def _selected() -> set[int]:
    selected: set[int] = st.session_state.setdefault("selected", set())
    return selected


def _operator() -> str:
    return manager_model.resolve_operator(st.session_state.get("operator"))


def _unlocked() -> bool:
    return _page.unlocked("manager")


# -- actions (button callbacks) -------------------------------------------------------------------
def _run_action(
    q: Queue,
    verb: str,
    *,
    ids: Sequence[int] | None = None,
    where: JobFilter | None = None,
    to_key: str | None = None,
) -> None:
    """Resubmit, cancel, or move to the queue typed in the widget ``to_key``; report the outcome
    as a flash message (never a traceback)."""
    if not _unlocked():
        _flash("error", "Actions are locked: enter the manager password.")
        return
    actor = _operator()
    try:
        if verb == "Resubmit":
            results: Sequence[ActionResult] = q.resubmit_many(ids=ids, where=where, actor=actor)
        elif verb == "Move":
            to = st.session_state.get(to_key or "", "")
            results = q.move_many(str(to), ids=ids, where=where, actor=actor)
        else:
            results = q.cancel_many(ids=ids, where=where, actor=actor)
    except JobqError as exc:
        _flash("error", f"{verb} failed: {exc}")
        return
    outcome = manager_model.summarize(results, verb)
    _flash(outcome.level, outcome.message)
    selected = _selected()  # a few rows picked by hand; the results may be millions (kept compact)
    done = {r.job_id for r in results if r.ok and r.job_id in selected} if selected else set()
    if done:
        selected.difference_update(done)
        _redraw_selection()


def _ask(pending: Pending) -> None:
    st.session_state["confirm"] = pending


def _confirm(q: Queue) -> None:
    pending: Pending | None = st.session_state.pop("confirm", None)
    if pending is not None:
        ids = list(pending.ids) if pending.ids else None
        _run_action(q, pending.verb, ids=ids, where=pending.where, to_key=CONFIRM_MOVE_TO)


#: The confirmation's queue field of a bulk move.
CONFIRM_MOVE_TO: Final = "confirm_move_to"


def _dismiss() -> None:
    st.session_state.pop("confirm", None)


def _redraw_selection() -> None:
    """Draw the table anew from the ``selected`` set: the table shows its own selection until its
    key changes, and a new key starts from the set (``selection_default``)."""
    st.session_state["_selection_round"] = st.session_state.get("_selection_round", 0) + 1


def _select_page(ids: Sequence[int]) -> None:
    _selected().update(ids)
    _redraw_selection()


def _clear_selection() -> None:
    _selected().clear()
    _redraw_selection()


def _show_detail(job_id: int | None) -> None:
    st.session_state["detail"] = job_id


def _open_typed_job() -> None:
    value = st.session_state.get("open_id")
    if value:
        st.session_state["detail"] = int(value)


def _enqueue(q: Queue, settings: Settings) -> None:
    if not _unlocked():
        _flash("error", "Actions are locked: enter the manager password.")
        return
    text = st.session_state.get("enqueue_path", "")
    try:
        path, key = manager_model.file_job(text, settings.data_dir, settings.database_url)
    except ValueError as exc:
        _flash("error", f"Not enqueued: {exc}")
        return
    queue = (st.session_state.get("enqueue_queue") or "").strip() or settings.queue
    task = (st.session_state.get("enqueue_task") or "").strip()
    try:
        # Keyed by the file as the producer and `jobq enqueue PATH` key it: a second click (or a
        # file the producer already submitted) made a second job, and the file was stamped twice.
        job_id = q.enqueue({"path": path}, queue=queue, task=task, key=key, on_conflict="raise")
    except DuplicateJob as exc:
        _flash("warning", f"Not enqueued: {path} is job {exc.job_id} already. Resubmit that job to run it again.")
        return
    except JobqError as exc:
        _flash("error", f"Not enqueued: {exc}")
        return
    _flash("success", f"Enqueued job {job_id} for {path} on queue {queue!r} (by {_operator()}).")
    st.session_state["enqueue_path"] = ""


# -- page sections ----------------------------------------------------------------------------------
def _sidebar(q: Queue, settings: Settings, queues: list[str]) -> tuple[JobFilter, Page]:
    sb = st.sidebar
    sb.markdown("### :material/person: Operator")
    sb.text_input(
        "Your name (recorded on every action)",
        value=manager_model.resolve_operator(None),
        key="operator",
        max_chars=manager_model.OPERATOR_NAME_CHARS,
    )
    _page.lock_button("manager")

    sb.markdown("### :material/filter_list: Filter")
    # Defaults through session state, not default=: a deep link may have set them already.
    st.session_state.setdefault("statuses", [s.value for s in manager_model.DEFAULT_STATUSES])
    st.session_state.setdefault("time_field", "finished")
    statuses = sb.multiselect(
        "Status",
        [s.value for s in JobStatus],
        key="statuses",
        help="By default the jobs an operator acts on: pending, processing and failed.",
    )
    chosen_queues = sb.multiselect("Queue", queues, key="queues", placeholder="All queues", format_func=safety.plain)
    tasks = sb.text_input("Task", key="tasks", placeholder="All tasks", help="Exact task names, comma-separated.")
    search = sb.text_input("Search payload", key="search", placeholder="e.g. report.txt")
    error = sb.text_input("Last error contains", key="error", placeholder="e.g. timeout")
    time_range = sb.selectbox("Time", list(manager_model.TIME_RANGES), key="time_range")
    time_field = sb.segmented_control(
        "Time of", manager_model.TIME_FIELDS, key="time_field", disabled=time_range == "Any time"
    )
    sort_label = sb.selectbox("Sort by", list(manager_model.SORTS), key="sort")
    descending = sb.toggle("Descending", value=True, key="descending")
    size = sb.selectbox(
        "Rows per page",
        manager_model.PAGE_SIZES,
        index=manager_model.PAGE_SIZES.index(manager_model.PAGE_SIZE_DEFAULT),
        key="page_size",
    )

    sb.selectbox(
        "Refresh every", list(REFRESH_CHOICES), index=list(REFRESH_CHOICES).index(REFRESH_DEFAULT), key="refresh"
    )

    sb.markdown("### :material/search: Open a job")
    sb.number_input("Job id", min_value=0, step=1, value=None, key="open_id", on_change=_open_typed_job)
    sb.caption(safety.md_literal(views.database_line(q.display_url)))
    where = manager_model.build_filter(
        statuses,
        chosen_queues,
        search,
        tasks=[t.strip() for t in (tasks or "").split(",")],
        error=error,
        time_range=time_range,
        time_field=time_field or "finished",
        now=q.wall_time(),  # a time range counts back from the store's now, as its times are written
    )
    # The choices, not the filter: a time range's bound moves with the clock, the page must not.
    choices = (tuple(statuses), tuple(chosen_queues), tasks, search, error, time_range, time_field)
    st.session_state["_filter_choices"] = repr(choices)
    sort = manager_model.SORTS[sort_label]
    return where, Page(sort=sort, descending=descending, limit=int(size), window=manager_model.LIST_WINDOW)


def _flashes() -> None:
    """The actions' messages: each new one as a toast, and every one of the last
    ``FLASH_SHOWN_SECONDS`` (at most ``FLASH_SHOWN_MAX``) on the page. The new ones are kept in
    session state before anything is drawn: a run cut short by a click loses at most a toast."""
    icons = {"success": ":material/check_circle:", "warning": ":material/warning:", "error": ":material/error:"}
    now = time.monotonic()
    shown: list[tuple[str, str, float]] = [f for f in st.session_state.get(FLASHES_SHOWN, []) if f[2] > now]
    new = [
        (level, safety.md_literal(message, safety.SHOWN_MESSAGE_CHARS))
        for level, message in st.session_state.pop("flash", [])
    ]
    shown = [*shown, *((level, text, now + FLASH_SHOWN_SECONDS) for level, text in new)][-FLASH_SHOWN_MAX:]
    st.session_state[FLASHES_SHOWN] = shown
    for level, text, _ in shown:
        getattr(st, level)(text, icon=icons.get(level))
    for level, text in new:
        st.toast(text, icon=icons.get(level))


def _detail(q: Queue, job_id: int) -> None:
    try:
        job = q.get(job_id)
        events = q.events(job_id)
    except JobNotFound:
        st.warning(f"Job {job_id} not found.", icon=":material/search_off:")
        st.button("Close", key="detail_close_missing", on_click=_show_detail, args=(None,))
        return
    with st.container(border=True, key="job_detail"):
        head, right = st.columns([3, 2], vertical_alignment="center")
        head.markdown(f"### Job {job.id} &nbsp; {views.status_badge(job.status)}")
        # Buttons as wide as their labels (wrapping when narrow): at 1366 px none is cut.
        actions = right.container(horizontal=True, horizontal_alignment="right", gap="xxsmall")
        legal, ids = operator_actions(job.status), [job.id]
        for verb, icon in (("resubmit", ":material/replay:"), ("cancel", ":material/block:")):
            if verb in legal:
                label = verb.capitalize()
                actions.button(
                    label, key=f"detail_{verb}", icon=icon, on_click=_run_action, args=(q, label), kwargs={"ids": ids}
                )
        if job.status in MOVABLE:
            # Out of a mistyped queue, or one stored under a name no worker can serve.
            with actions.popover("Move", icon=":material/drive_file_move:", help="Move this job to another queue"):
                st.text_input("To queue", key="detail_move_to", placeholder="a queue name, e.g. mail")
                move = {"ids": ids, "to_key": "detail_move_to"}
                st.button(
                    "Move", key="detail_move", type="primary", on_click=_run_action, args=(q, "Move"), kwargs=move
                )
        actions.button("Close", key="detail_close", icon=":material/close:", on_click=_show_detail, args=(None,))
        facts = {
            "queue": safety.md_literal(queue_text(job.queue)),
            "task": safety.md_literal(job.task) if job.task else "(default)",
            "attempts": f"{job.attempts} / {job.max_attempts}",
            "run": str(job.run),
            "priority": str(job.priority),
            "events": str(len(events)),
        }
        st.markdown(" · ".join(f"**{k}** {v}" for k, v in facts.items()))
        times = {
            "created": views.fmt_time(job.created_at),
            "runs at": views.fmt_time(job.run_at),
            "started": views.fmt_time(job.started_at) or views.DASH,
            "finished": views.fmt_time(job.finished_at) or views.DASH,
            "updated": views.fmt_time(job.updated_at),
        }
        st.markdown(" · ".join(f"**{k}** {v}" for k, v in times.items()))
        if job.status == JobStatus.PROCESSING:
            owner = safety.md_literal(job.lease_owner or "")
            lease = f"held by {owner} until {views.fmt_time(job.lease_expires_at)}"
            st.markdown(f"**Lease** {lease}" + (" · **cancellation requested**" if job.cancel_requested else ""))
        progress = q.progress_of([job.id]).get(job.id)
        if progress is not None:
            # What the handler last reported (ctx.progress); kept after the run ends, as it stood.
            text = "**Progress** " + safety.md_literal(progress_text(progress, q.wall_time()))
            if progress.fraction is not None:
                st.progress(progress.fraction, text=text)
            else:
                st.markdown(text)
        left, right = st.columns([2, 3])
        with left:
            st.markdown("**Payload**")
            st.code(safety.shown_json(job.payload), language="json", wrap_lines=True)
            if job.result is not None:
                st.markdown("**Result**")
                st.code(safety.shown_json(job.result), language="json", wrap_lines=True)
        with right:
            st.markdown("**History** (every attempt, lease and operator action)")
            names = {w.id: w.name for w in q.workers()}
            # Plain HTML, not a data grid: the grid cost about half a second of each job's opening.
            st.html(views.html_table(manager_model.events_frame(events, names), wrap=("at", "actor", "detail")))
        if job.last_error:
            with st.expander("Last error", expanded=job.status == JobStatus.FAILED):
                st.code(safety.plain(job.last_error, safety.SHOWN_BLOCK_CHARS, multiline=True), language="text")
        for event, error in manager_model.event_errors(events):
            if error == job.last_error:
                continue
            actor = safety.md_literal(event.actor or "")
            title = f"{event.kind} · attempt {event.attempt} · {views.fmt_time(event.at)} · {actor}"
            with st.expander(title):
                st.code(safety.plain(error, safety.SHOWN_BLOCK_CHARS, multiline=True), language="text")


def _confirmation(q: Queue) -> None:
    pending: Pending | None = st.session_state.get("confirm")
    if pending is None:
        return
    what = (
        f"the {pending.count:,} selected job{'s' if pending.count != 1 else ''}"
        if pending.ids
        else f"all {pending.label or f'{pending.count:,}'} jobs matching "
        f"{manager_model.describe_filter(pending.where or JobFilter())}"
    )
    with st.container(border=True, key="confirm_box"):
        st.warning(
            f"**{safety.md_literal(f'{pending.verb} {what}?', safety.SHOWN_MESSAGE_CHARS)}** "
            "Jobs for which this is not allowed are left unchanged and listed.",
            icon=":material/warning:",
        )
        if pending.verb == "Move":
            st.text_input("To queue", key=CONFIRM_MOVE_TO, placeholder="a queue name, e.g. mail")
        yes, no, _ = st.columns([1.4, 1, 4])
        yes.button(
            f"Yes, {pending.verb.lower()} {pending.label or f'{pending.count:,}'}",
            key="confirm_yes",
            type="primary",
            on_click=_confirm,
            args=(q,),
            width="stretch",
        )
        no.button("No, go back", key="confirm_no", on_click=_dismiss, width="stretch")


def _bulk_bar(q: Queue, where: JobFilter, total: int, label: str, page_ids: list[int]) -> None:
    """``label``: the count of matching jobs as the list shows it (``manager_model.count_label``)."""
    chosen = sorted(_selected())
    # A row of buttons as wide as their labels that wraps when the page is narrow: at 1366 px no
    # label is cut ("Res…"), whatever the counts in them.
    bar = st.container(horizontal=True, gap=BAR_GAP, vertical_alignment="center", key="bulk_bar")
    bar.button(
        "Select page",
        key="select_page",
        icon=":material/select_all:",
        on_click=_select_page,
        args=(page_ids,),
        disabled=not page_ids,
    )
    bar.button(
        "Details",
        key="open_selected",
        icon=":material/open_in_new:",
        help="Open the selected job (select one row)",
        disabled=len(chosen) != 1,
        on_click=_show_detail,
        args=(chosen[0] if len(chosen) == 1 else None,),
    )
    bar.button(
        f"Resubmit selected ({len(chosen)})",
        key="bulk_resubmit",
        disabled=not chosen,
        on_click=_ask,
        args=(Pending("Resubmit", len(chosen), ids=tuple(chosen)),),
    )
    bar.button(
        f"Cancel selected ({len(chosen)})",
        key="bulk_cancel",
        disabled=not chosen,
        on_click=_ask,
        args=(Pending("Cancel", len(chosen), ids=tuple(chosen)),),
    )
    bar.button(
        f"Move selected ({len(chosen)})…",
        key="bulk_move",
        disabled=not chosen,
        help="Move the selected jobs to another queue (PENDING, FAILED or CANCELLED ones)",
        on_click=_ask,
        args=(Pending("Move", len(chosen), ids=tuple(chosen)),),
    )
    bar.button("Clear", key="clear_selection", disabled=not chosen, on_click=_clear_selection)
    bar.button(
        f"Resubmit all {label} matching…",
        key="all_resubmit",
        disabled=not total,
        on_click=_ask,
        args=(Pending("Resubmit", total, where=where, label=label),),
    )
    bar.button(
        f"Cancel all {label} matching…",
        key="all_cancel",
        disabled=not total,
        on_click=_ask,
        args=(Pending("Cancel", total, where=where, label=label),),
    )


def table_key(page_ids: Sequence[int]) -> str:
    """The job list's widget key: the jobs it shows (a selection is by row position, so other rows
    are another table) and the selection round (``_redraw_selection``)."""
    digest = zlib.crc32(",".join(map(str, page_ids)).encode())
    return f"jobs_{st.session_state.get('_selection_round', 0)}_{digest:08x}"


def _job_table(jobs: list[Job], now: float) -> None:
    """The page's jobs as one table with a check box per row (one element, not hundreds of
    widgets; plain HTML, not a data grid: ``jobq.web.job_table`` says why). The selection is kept
    in the ``selected`` set of job ids, so it survives paging and the auto-refresh: a table keeps
    its selection while it shows the same jobs, and a table of other jobs starts from the set."""
    page_ids = [j.id for j in jobs]
    key = table_key(page_ids)
    st.session_state["_jobs_table"] = key  # tests select rows through it
    theme = _page.theme_type()
    when = f"Server time ({views.zone_name()}); a date when not today"
    rows = job_table.job_table(
        manager_model.jobs_table(jobs, now),
        key=key,
        selected=manager_model.selected_rows(_selected(), page_ids),
        widths=TABLE_WIDTHS,
        helps={
            "id": "Job id",
            "tries": "Attempts / max attempts",
            "created": when,
            "finished": when,
            "last error": "The last error's summary; the job's detail has it all",
        },
        # The colour follows the status word ("PROCESSING cancelling" is still PROCESSING).
        style=lambda column, value: views.style_cell(value.split(" ")[0], theme) if column == "status" else "",
        sortable=list(manager_model.SORT_BY_COLUMN),
        sorted_by=manager_model.sorted_column(st.session_state.get("sort")),
        descending=bool(st.session_state.get("descending", True)),
        on_sort=functools.partial(_sort_by_header, key),
    )
    chosen = manager_model.merge_selection(_selected(), page_ids, rows)
    if chosen != _selected():
        _selected().clear()
        _selected().update(chosen)


def _sort_by_header(key: str) -> None:
    """A click on a sortable header of the job list (its ``sort`` value, for one run): the sidebar's
    sort widgets are set here, in a callback, which runs before they are drawn again. The click
    reruns only the list's fragment, which then asks for the whole page (``RESORTED``): the sort is
    read in the sidebar."""
    state = st.session_state.get(key)
    column = state.get("sort") if isinstance(state, Mapping) else None
    now = st.session_state
    after = manager_model.sort_after_click(column, now.get("sort"), bool(now.get("descending", True)))
    if after is not None:
        st.session_state["sort"], st.session_state["descending"] = after
        st.session_state[RESORTED] = True


def _pager_key(where: JobFilter, page: Page) -> str:
    """The pager's widget key: a new filter, sort or page size starts again at page 1."""
    signature = f"{st.session_state.get('_filter_choices', where)}|{page.sort}|{page.descending}|{page.limit}"
    return f"page_{abs(hash(signature))}"


def _pager(where: JobFilter, page: Page, total: int) -> None:
    pages = manager_model.page_count(total, page.limit)
    if pages > 1:
        st.pagination(pages, key=_pager_key(where, page), max_visible_pages=9)  # streamlit>=1.67 has it


def _copy_page(source: str, target: str) -> None:
    st.session_state[target] = st.session_state.get(source, 1)


def _bottom_pager(where: JobFilter, page: Page, total: int, number: int) -> None:
    """The same pager again below the list (a long page need not be scrolled back up). Its key
    names the page shown, so it is drawn anew on the top pager's page; a click on it moves the
    top one (whose state the list follows)."""
    pages = manager_model.page_count(total, page.limit)
    if pages > 1:
        top = _pager_key(where, page)
        shown = min(max(1, number), pages)
        bottom = f"{top}_bottom_{shown}"
        st.pagination(pages, default=shown, key=bottom, max_visible_pages=9, on_change=_copy_page, args=(bottom, top))


def _enqueue_form(q: Queue, settings: Settings) -> None:
    # Lazy (on_change="rerun"): a closed expander's widgets are not drawn at all, which is most
    # of the page's first render that an operator never looks at (docs/benchmarks.md, the apps).
    box = st.expander(":material/add_circle: Enqueue a job by path", key=ENQUEUE_OPEN, on_change="rerun")
    if not box.open:
        return
    with box:
        cols = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
        cols[0].text_input("File path", key="enqueue_path", placeholder=f"{settings.data_dir}/files/report.txt")
        cols[1].text_input("Queue", value=settings.queue, key="enqueue_queue")
        cols[2].text_input("Task", value="stamp", key="enqueue_task")
        cols[3].button(
            "Enqueue",
            key="enqueue_submit",
            type="primary",
            on_click=_enqueue,
            args=(q, settings),
            width="stretch",
        )
        st.caption("The path is checked as the consumer would: an existing file under the data folder.")


def _schedules(q: Queue) -> None:
    """The schedules with their pause/resume buttons, in a lazy expander (only where any exist)."""
    schedules = q.schedules()
    if not schedules:
        return
    box = st.expander(":material/schedule: Schedules", key=SCHEDULES_OPEN, on_change="rerun")
    if box.open:
        with box:
            schedules_panel.panel(
                q,
                q.wall_time(),
                actor=_operator(),
                allowed=_unlocked(),
                flash=_flash,
                heading=False,
                schedules=schedules,
            )


def _counts_line(stats: QueueStats) -> None:
    """Jobs per status, from ``Queue.stats``: bounded at any table size (``Queue.counts`` reads
    every row: 0.4 s a refresh at 1,000,000 stored jobs on SQLite), finished jobs counted among the
    newest ones as ops counts them, and said so."""
    badges = [f"{views.status_badge(s)} **{stats.counts.get(s.value, 0):,}**" for s in JobStatus]
    st.markdown(" &nbsp; ".join(badges))
    note = views.finished_window_note(stats.finished_window)
    if note is not None:
        st.caption(note)


def _sync_link() -> None:
    """Keep the URL's query parameters on the filter and open job shown, so the link can be shared."""
    params = manager_model.link_params(st.session_state.to_dict())
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def _jobs(q: Queue, where: JobFilter, page: Page) -> None:
    """Counts, messages, the open job and the job list: one fragment that redraws on its own every
    few seconds, keeping the operator's filters, selection, page and open job (all in session state)."""
    # Run with the page: the stats the page has just read. Run alone (a refresh, a tick): read now.
    handed: QueueStats | None = st.session_state.pop(PAGE_STATS, None)
    if st.session_state.pop(RESORTED, False):
        st.rerun()  # the whole page: its sidebar reads the sort a header click chose
    _sync_link()
    try:
        stats = handed if handed is not None else q.stats()
        _counts_line(stats)
        _flashes()
        _confirmation(q)
        detail = st.session_state.get("detail")
        if detail is not None:
            _detail(q, int(detail))
        st.subheader(f"Jobs · {safety.md_literal(manager_model.describe_filter(where))}")
        number = int(st.session_state.get(_pager_key(where, page), 1) or 1)
        total, jobs = q.list_page(where, dataclasses.replace(page, offset=(number - 1) * page.limit))
        if not jobs and total:  # the page is past the end now (jobs left the filter): show the last one
            number = manager_model.page_count(manager_model.listed(total, page.window), page.limit)
            total, jobs = q.list_page(where, dataclasses.replace(page, offset=(number - 1) * page.limit))
        page = dataclasses.replace(page, offset=(number - 1) * page.limit)
        shown, counted = manager_model.listed(total, page.window), manager_model.count_label(total, page.window)
        _pager(where, page, shown)
        first, last = (page.offset + 1, page.offset + len(jobs)) if jobs else (0, 0)
        # The bar and the caption above the table show the selection the table just reported.
        caption, bar = st.empty(), st.container()
        if jobs:
            _job_table(jobs, q.wall_time())
            _bottom_pager(where, page, shown, number)
        beyond = f" (the newest {shown:,} are listed: narrow the filter to reach older ones)" if total > shown else ""
        caption.caption(
            f"Showing {first:,}-{last:,} of {counted} matching jobs{beyond} · "
            f"page {number:,} of {manager_model.page_count(shown, page.limit):,} · {len(_selected())} selected · "
            f"times in {views.zone_name()} · updated {time.strftime('%H:%M:%S')}"
        )
        with bar:
            _bulk_bar(q, where, total, counted, [j.id for j in jobs])
        if not jobs:
            st.info(
                "No job matches this filter. Widen the status filter in the sidebar to see more.",
                icon=":material/inbox:",
            )
    except JobqError as exc:
        storage_error(exc, q)


def main() -> None:
    """Draw the manager page."""
    # The page icon is an emoji: a ":material/..." page icon makes the browser fetch it from
    # fonts.gstatic.com on every load (the icons inside the page use the font Streamlit serves).
    st.set_page_config(page_title="jobq · manager", page_icon="📦", layout="wide")
    _page.gate("manager", "jobq manager")
    # Never create a database: a mistyped JOBQ_DATABASE_URL must be an error, not an empty queue.
    settings, q = open_queue(create=False)
    try:
        stats = q.stats()
    except JobqError as exc:
        storage_error(exc, q)
        return
    if "_link_read" not in st.session_state:  # a shared link: its filter and open job, once per session
        st.session_state["_link_read"] = True
        st.session_state.update(manager_model.state_from_link(st.query_params.to_dict(), sorted(stats.by_queue)))
    where, page = _sidebar(q, settings, sorted(stats.by_queue))
    st.title(":material/inventory_2: jobq manager")
    st.caption(f"Resubmit, cancel and enqueue jobs · acting as **{safety.md_literal(_operator())}**")
    _enqueue_form(q, settings)
    _schedules(q)
    flow_panel.panel(q, stats, actor=_operator(), allowed=_unlocked(), flash=_flash)
    every = REFRESH_CHOICES[st.session_state.get("refresh", REFRESH_DEFAULT)] or None
    st.session_state[PAGE_STATS] = stats  # read once a run: the list's counts need the same
    st.fragment(run_every=every)(_page.watched(_jobs))(q, where, page)


if __name__ == "__main__":
    main()
