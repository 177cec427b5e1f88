"""The manager's model, computed without Streamlit: its filters and pages, what an action did
(in words), a job's history as a table, who the operator is, and a manual job's path.

Which action is legal for a job is the model's: ``jobq.job.operator_actions`` (the manager shows
a button only where it is legal, and the store refuses anything else all the same).
"""

from __future__ import annotations

import dataclasses
import getpass
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from jobq import ActionResult, Event, Job, JobFilter, JobqError, JobStatus
from jobq.demo import producer
from jobq.present import error_summary, queue_text
from jobq.web.safety import plain
from jobq.web.views import DASH, count_jobs, fmt_short_time, fmt_time, payload_summary

#: What an operator acts on: the manager's default status filter. A cancelled (or completed) job
#: leaves this view, as docs/demo.md step 6 shows ("Cancel on PENDING -> disappears").
DEFAULT_STATUSES: tuple[JobStatus, ...] = (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.FAILED)
PAGE_SIZES = (10, 25, 50, 100)
PAGE_SIZE_DEFAULT = 25
SORTS: dict[str, str] = {
    "Newest first": "id",
    "Created": "created_at",
    "Last update": "updated_at",
    "Started": "started_at",
    "Finished": "finished_at",
    "Attempts": "attempts",
    "Priority": "priority",
    "Status": "status",
}
SORT_BY_COLUMN: dict[str, str] = {
    "id": "Newest first",
    "status": "Status",
    "tries": "Attempts",
    "created": "Created",
    "finished": "Finished",
}
"""The job list's headers that sort it when clicked, and the ``SORTS`` entry each one picks."""


def sort_after_click(column: object, sort: str | None, descending: bool) -> tuple[str, bool] | None:
    """The (sort, descending) after a click on the job list's ``column`` header while the page is
    sorted by ``sort``: that column, newest/largest first, or the other way round when it is the
    column sorted by already; None for a column that does not sort."""
    label = SORT_BY_COLUMN.get(column) if isinstance(column, str) else None
    if label is None:
        return None
    return label, (not descending) if label == sort else True


def sorted_column(sort: str | None) -> str | None:
    """The job list's header that shows the page's sort (None: a sort no header stands for)."""
    return next((column for column, label in SORT_BY_COLUMN.items() if label == sort), None)


OPERATOR_NAME_CHARS = 64
"""Longest operator name stored as the actor of an action (longer names are cut)."""


TIME_RANGES: dict[str, float | None] = {
    "Any time": None,
    "Last 15 minutes": 900.0,
    "Last hour": 3600.0,
    "Last 24 hours": 86400.0,
    "Last 7 days": 7 * 86400.0,
}
"""The time filter's choices: how far back from now (None: no bound)."""
TIME_FIELDS = ("finished", "created")
"""Which time the time filter bounds."""


def build_filter(
    statuses: Iterable[JobStatus | str] = (),
    queues: Iterable[str] = (),
    search: str | None = None,
    *,
    tasks: Iterable[str] = (),
    error: str | None = None,
    time_range: str = "Any time",
    time_field: str = "finished",
    now: float | None = None,
) -> JobFilter:
    """A JobFilter from the sidebar's choices (blank texts mean no condition).

    A time range becomes an absolute bound computed at ``now``: the confirmation of "Resubmit
    all matching" then applies exactly the filter the operator saw, not one that moved since.
    """
    text = (search or "").strip()
    error_text = (error or "").strip()
    seconds = TIME_RANGES.get(time_range)
    since = None if seconds is None else (time.time() if now is None else now) - seconds
    return JobFilter(
        statuses=tuple(JobStatus(s) for s in statuses),
        queues=tuple(q for q in queues if q),
        search=text or None,
        tasks=tuple(t.strip() for t in tasks if t.strip()),
        error=error_text or None,
        created_after=since if time_field == "created" else None,
        finished_after=since if time_field == "finished" else None,
    )


def describe_filter(where: JobFilter) -> str:
    """The filter in words (plain text), for confirmations: ``status PENDING or FAILED, queue default``."""
    parts = []
    if where.statuses:
        parts.append("status " + " or ".join(s.value for s in where.statuses))
    if where.queues:
        parts.append("queue " + " or ".join(plain(queue_text(q)) for q in where.queues))
    if where.tasks:
        parts.append("task " + " or ".join(plain(t) for t in where.tasks))
    if where.search:
        parts.append(f"payload containing {plain(where.search)!r}")
    if where.error:
        parts.append(f"last error containing {plain(where.error)!r}")
    for label, bound in (
        ("created since", where.created_after),
        ("created until", where.created_before),
        ("finished since", where.finished_after),
        ("finished until", where.finished_before),
    ):
        if bound is not None:
            parts.append(f"{label} {fmt_time(bound)}")
    return ", ".join(parts) or "all jobs"


#: The manager's job list: its columns, in order (the first is the job id).
TABLE_COLUMNS = ["id", "status", "queue", "task", "path / payload", "tries", "created", "finished", "last error"]
CANCELLING = "cancelling"
"""Added to a running job's status cell once an operator asked to cancel it."""
TABLE_PAYLOAD_CHARS = 80
TABLE_NAME_CHARS = 24
TABLE_ERROR_CHARS = 60


def jobs_table(jobs: Iterable[Job], now: float | None = None) -> pd.DataFrame:
    """The manager's job list as one table (``TABLE_COLUMNS``): plain text cells (a table cell
    never renders Markdown), short times (the zone and full times are in the job's detail)."""
    rows = [
        {
            "id": job.id,
            "status": job.status.value + (f" {CANCELLING}" if job.cancel_requested else ""),
            "queue": plain(queue_text(job.queue), TABLE_NAME_CHARS),
            "task": plain(job.task, TABLE_NAME_CHARS) if job.task else DASH,
            "path / payload": payload_summary(job.payload, TABLE_PAYLOAD_CHARS),
            "tries": f"{job.attempts}/{job.max_attempts}",
            "created": fmt_short_time(job.created_at, now),
            "finished": fmt_short_time(job.finished_at, now),
            "last error": plain(error_summary(job.last_error), TABLE_ERROR_CHARS) if job.last_error else "",
        }
        for job in jobs
    ]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def merge_selection(selected: Iterable[int], page_ids: Sequence[int], rows: Iterable[int]) -> set[int]:
    """The selection after the table reported ``rows`` (positions on the page) as selected: the
    page's jobs are exactly those rows, jobs selected on other pages stay selected."""
    on_page = [page_ids[r] for r in rows if 0 <= r < len(page_ids)]
    return (set(selected) - set(page_ids)) | set(on_page)


def selected_rows(selected: Iterable[int], page_ids: Sequence[int]) -> list[int]:
    """The positions on the page of the selected jobs (the table's default selection)."""
    chosen = set(selected)
    return [n for n, job_id in enumerate(page_ids) if job_id in chosen]


LIST_WINDOW = 50_000
"""The job list reads the newest this many matching jobs at most (``Page.window``): a list of all
10,000,000 stored jobs sorted by another column than id took 3-4 s a refresh on SQLite, within it
30-110 ms. Past it, the list counts "50,000+" and its pages end there."""


def count_label(total: int, window: int | None) -> str:
    """A list's count as shown: the number, or "N+" past its window (``Page.window``: a windowed
    count stops at ``window + 1``)."""
    return f"{window:,}+" if window is not None and total > window else f"{total:,}"


def listed(total: int, window: int | None) -> int:
    """How many jobs the list can show (its pages): the count, at most the window."""
    return total if window is None else min(total, window)


def page_count(total: int, size: int) -> int:
    """Number of pages (at least 1) for ``total`` rows at ``size`` per page."""
    return max(1, math.ceil(total / max(1, size)))


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """A readable summary of an operator action, for st.success / st.warning / st.error."""

    level: str
    """``"success"``, ``"warning"`` (partly done) or ``"error"`` (nothing done)."""
    message: str
    """Plain text: show it with ``safety.md_literal``."""
    done: int
    refused: int


def summarize(results: Sequence[ActionResult], verb: str, max_listed: int = 3) -> Outcome:
    """Summarise ActionResults: ``"Resubmitted 3 jobs. 1 refused: job 7: cannot resubmit ..."``.
    Counted in one pass, keeping only the refusals it names: "Cancel all matching" may act on
    millions of jobs, whose results are compact until read (``jobq.ActionResults``)."""
    if not results:
        return Outcome("warning", f"No job matched: nothing to {verb.lower()}.", 0, 0)
    done = requested = refused = 0
    named: list[ActionResult] = []
    for r in results:
        if r.ok:
            done += 1
            requested += r.status == JobStatus.PROCESSING
        else:
            refused += 1
            if len(named) < max_listed:
                named.append(r)
    past = {"Resubmit": "Resubmitted", "Cancel": "Cancelled", "Move": "Moved"}.get(verb, verb + "ed")
    parts = []
    if done:
        parts.append(
            f"{past} {count_jobs(done)}"
            + (f" ({requested} running: cancellation requested)" if requested else "")
            + "."
        )
    if refused:
        reasons = "; ".join(_refusal(r) for r in named)
        more = f"; and {refused - max_listed} more" if refused > max_listed else ""
        parts.append(f"{refused} refused, nothing changed for {'it' if refused == 1 else 'them'}: {reasons}{more}.")
    level = "success" if not refused else ("warning" if done else "error")
    return Outcome(level, " ".join(parts), done, refused)


def _refusal(result: ActionResult) -> str:
    if result.status is None:
        return f"job {result.job_id} not found"
    return plain(result.message) if result.message else f"job {result.job_id} is {result.status.value}"


def events_frame(events: Iterable[Event], worker_names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A job's history as a table: when, what, who, attempt, and a one-line detail.

    ``worker_names`` (worker id -> name, from ``Queue.workers()``) shows a worker as
    ``consumer1 (host-123-ab12)`` rather than by its id alone; times in the detail
    (``retry_at``, ...) read as dates, not UNIX seconds.
    """
    names = worker_names or {}
    rows = []
    for e in events:
        detail = dict(e.detail)
        error = detail.pop("error", None)
        summary = (
            plain(error_summary(str(error)))
            if error
            else plain(", ".join(f"{k}={_detail_value(k, v)}" for k, v in detail.items()))
        )
        actor = e.actor or ""
        name = names.get(actor)
        rows.append(
            {
                "at": fmt_time(e.at),
                "event": str(e.kind),
                "actor": plain(f"{name} ({actor})" if name and name != actor else actor),
                "attempt": "" if e.attempt is None else str(e.attempt),
                "detail": summary,
            }
        )
    return pd.DataFrame(rows, columns=["at", "event", "actor", "attempt", "detail"])


def _detail_value(key: str, value: object) -> object:
    # Event details keep UNIX seconds (machine-readable); people read dates.
    if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
        return fmt_time(float(value))
    return value


def event_errors(events: Iterable[Event]) -> list[tuple[Event, str]]:
    """The events that carry an error text (full tracebacks), oldest first."""
    out = []
    for e in events:
        error = e.detail.get("error")
        if error:
            out.append((e, str(error)))
    return out


# -- the operator, a manual job ------------------------------------------------------------------
def login_name() -> str:
    """The login name of the user running the app (``uidN`` when it has none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def clean_operator(name: str | None) -> str:
    """An operator name as stored in the actor column: ``safety.plain``, spaces collapsed, at most
    ``OPERATOR_NAME_CHARS`` characters ("" when nothing visible is left)."""
    return " ".join(plain(name or "", OPERATOR_NAME_CHARS * 4).split())[:OPERATOR_NAME_CHARS]


def resolve_operator(typed: str | None, env: Mapping[str, str] | None = None) -> str:
    """The operator recorded as ``actor``: what was typed, else ``JOBQ_OPERATOR``, else the login.

    Cleaned by :func:`clean_operator`: an actor is shown in both apps and in ``jobq show``.
    """
    env = os.environ if env is None else env
    for candidate in (typed, env.get("JOBQ_OPERATOR")):
        cleaned = clean_operator(candidate)
        if cleaned:
            return cleaned
    return clean_operator(login_name()) or f"uid{os.getuid()}"


def validate_path(text: str, data_dir: str | os.PathLike[str] = "data", database_url: str | None = None) -> str:
    """Check a manual job's path as the consumer would; return the payload's path or raise ValueError.

    Uses ``jobq.demo.paths.resolve_job_path`` (the consumer's own containment rules: inside the data
    folder, a regular file, no symlink out, not the queue's database).
    """
    return file_job(text, data_dir, database_url)[0]


def file_job(text: str, data_dir: str | os.PathLike[str] = "data", database_url: str | None = None) -> tuple[str, str]:
    """``validate_path``'s payload path, and the file's idempotency key as the producer and
    ``jobq enqueue PATH`` give it (``jobq.demo.producer.file_job``): a file is enqueued once."""
    raw = (text or "").strip()
    if not raw:
        raise ValueError("enter a path, e.g. data/files/report.txt")
    try:
        return producer.file_job(data_dir, raw, database_url)
    except JobqError as exc:
        raise ValueError(str(exc)) from None


# -- deep links: the filter and the open job in the URL --------------------------------------------
#: Query parameter -> the sidebar widget (session state key) it sets.
LINK_TEXT_KEYS = {"task": "tasks", "search": "search", "error": "error"}


def link_params(state: Mapping[str, object]) -> dict[str, str]:
    """The query parameters that reproduce the manager's filter and open job (defaults left out),
    so that a copied URL opens the same view."""
    params: dict[str, str] = {}
    statuses = list(state.get("statuses") or [])  # type: ignore[call-overload]
    if statuses != [s.value for s in DEFAULT_STATUSES]:
        params["status"] = ",".join(str(s) for s in statuses) or "none"
    queues = list(state.get("queues") or [])  # type: ignore[call-overload]
    if queues:
        params["queue"] = ",".join(str(q) for q in queues)
    for param, key in LINK_TEXT_KEYS.items():
        text = str(state.get(key) or "").strip()
        if text:
            params[param] = text
    time_range = str(state.get("time_range") or "Any time")
    if time_range != "Any time":
        params["time"] = time_range
        params["time_of"] = str(state.get("time_field") or "finished")
    if state.get("detail") is not None:
        params["job"] = str(state.get("detail"))
    return params


def state_from_link(params: Mapping[str, str], queues: Sequence[str]) -> dict[str, object]:
    """The session state a link's query parameters ask for; unknown values are left out (a link
    never breaks the page)."""
    state: dict[str, object] = {}
    if "status" in params:
        known = {s.value for s in JobStatus}
        state["statuses"] = [s for s in params["status"].upper().split(",") if s in known]
    if "queue" in params:
        state["queues"] = [q for q in params["queue"].split(",") if q in queues]
    for param, key in LINK_TEXT_KEYS.items():
        if param in params:
            state[key] = params[param][:200]
    if params.get("time") in TIME_RANGES:
        state["time_range"] = params["time"]
        if params.get("time_of") in TIME_FIELDS:
            state["time_field"] = params["time_of"]
    job = params.get("job", "")
    if job.isdigit():
        state["detail"] = int(job)
    return state
