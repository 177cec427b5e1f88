"""What both apps show, computed without Streamlit (so it is unit-testable): how a status looks,
times, a payload in one cell, a job as a table row, and the database's name.

Each app's own model is next to it (``manager_model.py``, ``ops_model.py``); text a job or a
worker brought goes through ``safety.plain`` / ``md_literal`` before it is shown. Words,
durations and ages shared with the CLI come from ``jobq.present``. Nothing here touches a
database directly: every read goes through ``jobq.Queue``.
"""

from __future__ import annotations

import dataclasses
import html
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from jobq import Job, JobqError, JobStatus
from jobq.backends.base import Progress
from jobq.present import WorkerState, ago, error_summary, queue_text
from jobq.redact import redact_url
from jobq.web.safety import SHOWN_BLOCK_CHARS, plain, shown_json

PAYLOAD_PREVIEW_CHARS = 120
"""Longest payload shown in a jobs table cell."""
ERROR_PREVIEW_CHARS = 90
"""Longest error line shown in a jobs table cell."""
DASH = "\u2013"
"""Shown for a missing time or value."""

STATUS_COLORS: dict[JobStatus, str] = {
    JobStatus.PENDING: "blue",
    JobStatus.PROCESSING: "orange",
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "gray",
}
#: Material Symbols (bundled with Streamlit, so they render in every browser, unlike emoji).
STATUS_ICONS: dict[JobStatus, str] = {
    JobStatus.PENDING: ":material/schedule:",
    JobStatus.PROCESSING: ":material/autorenew:",
    JobStatus.COMPLETED: ":material/check_circle:",
    JobStatus.FAILED: ":material/error:",
    JobStatus.CANCELLED: ":material/block:",
}
RESTARTED = "restarted"
"""Ops shows an older lost process of a program that started again as restarted: it is history."""
THEMES = ("light", "dark")
"""The apps' two themes (``.streamlit/config.toml``: ``[theme.light]`` and ``[theme.dark]``)."""
#: Per theme: the page background, and each badge colour's text and background. The same values
#: are in ``.streamlit/config.toml`` (Streamlit draws the badges from there; tables take their
#: status text colours from here): tests/web/test_contrast.py checks that both agree and that every
#: text reaches 4.5:1 (WCAG AA) on its badge and on the page, and the browser test that the badges
#: are drawn in these colours.
STATUS_PALETTES: dict[str, dict[str, tuple[str, str]]] = {
    "light": {
        "page": ("#1f2430", "#ffffff"),
        "blue": ("#1b5bb8", "#e6efff"),
        "orange": ("#9a4700", "#fff0e0"),
        "green": ("#12703a", "#e2f5e9"),
        "red": ("#b01f29", "#fde8ea"),
        "gray": ("#4b5563", "#eceff3"),
    },
    "dark": {
        "page": ("#fafafa", "#0e1117"),
        "blue": ("#9cc2ff", "#16284a"),
        "orange": ("#ffb86b", "#3a2410"),
        "green": ("#7ee2a2", "#0f3320"),
        "red": ("#ff9ba1", "#44161b"),
        "gray": ("#c3c8d0", "#2a2e36"),
    },
}
#: The colour of each status and worker state in table cells (bold: needs an operator).
CELL_COLORS: dict[str, tuple[str, bool]] = {
    **{status.value: (color, status == JobStatus.FAILED) for status, color in STATUS_COLORS.items()},
    WorkerState.ALIVE: ("green", False),
    WorkerState.LOST: ("red", True),
    WorkerState.CRASHED: ("red", True),
    WorkerState.STOPPED: ("gray", False),
    RESTARTED: ("gray", False),
}


def status_badge(status: JobStatus | str) -> str:
    """Streamlit markdown for a coloured status badge, e.g. ``:red-badge[:material/error: FAILED]``."""
    st = JobStatus(status)
    return f":{STATUS_COLORS[st]}-badge[{STATUS_ICONS[st]} {st.value}]"


def style_cell(value: Any, theme: str = "light") -> str:
    """CSS for a status or worker-state cell in ``theme`` (for ``DataFrame.style.map``), "" for
    anything else."""
    found = CELL_COLORS.get(str(value))
    if found is None:
        return ""
    color, bold = found
    palette = STATUS_PALETTES.get(theme, STATUS_PALETTES["light"])
    return f"color: {palette[color][0]}" + ("; font-weight: 600" if bold else "")


NOT_A_DATE = "not a date"
"""How a time no calendar holds is shown (a row written by hand: ``run_at = 1e300``): before,
the manager's list failed on it with OverflowError."""


def fmt_time(ts: float | None) -> str:
    """A UNIX time as local ``YYYY-MM-DD HH:MM:SS ZONE`` ("" for None): the zone says which clock,
    since the server's zone need not be the reader's."""
    if ts is None:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))
    except (OverflowError, ValueError, OSError):  # a time written by hand, out of any calendar
        return NOT_A_DATE


def zone_name(ts: float | None = None) -> str:
    """The server's time zone abbreviation at ``ts`` (now by default), e.g. ``UTC``, ``CET``."""
    return time.strftime("%Z", time.localtime(ts))


def fmt_short_time(ts: float | None, now: float | None = None) -> str:
    """``HH:MM:SS`` for today, ``Mon 28 14:05`` otherwise, ``DASH`` for None (for narrow columns)."""
    if ts is None:
        return DASH
    today = time.localtime(now if now is not None else time.time())[:3]
    try:
        local = time.localtime(ts)
    except (OverflowError, ValueError, OSError):  # a time written by hand, out of any calendar
        return NOT_A_DATE
    return time.strftime("%H:%M:%S" if local[:3] == today else "%b %d %H:%M", local)


def payload_path(payload: Any) -> str | None:
    """The file path of a demo file job (payload ``{"path": ...}``), else None."""
    if isinstance(payload, Mapping):
        path = payload.get("path")
        if isinstance(path, str):
            return path
    return None


def payload_text(payload: Any, limit: int = SHOWN_BLOCK_CHARS) -> str:
    """The payload as compact one-line JSON (see :func:`shown_json`), shortened to ``limit`` characters."""
    return shown_json(payload, limit, indent=None)


def payload_summary(payload: Any, limit: int = PAYLOAD_PREVIEW_CHARS) -> str:
    """What the jobs table shows, safe as plain text: the path for file jobs, the shortened JSON otherwise."""
    path = payload_path(payload)
    return plain(path, limit) if path is not None else payload_text(payload, limit)


def job_row(job: Job) -> dict[str, Any]:
    """One row of the jobs tables."""
    return {
        "id": job.id,
        "status": job.status.value,
        "path / payload": payload_summary(job.payload),
        "queue": plain(queue_text(job.queue)),
        "task": plain(job.task),
        "attempts": f"{job.attempts}/{job.max_attempts}",
        "run": job.run,
        "created": fmt_time(job.created_at),
        "started": fmt_time(job.started_at),
        "finished": fmt_time(job.finished_at),
        "last error": plain(error_summary(job.last_error), ERROR_PREVIEW_CHARS),
        "cancel requested": job.cancel_requested,
    }


JOB_COLUMNS = list(job_row(Job(0, "", "", None, JobStatus.PENDING, 0, 0.0, 0, 1, 0.0, 0.0)).keys())


def jobs_frame(jobs: Iterable[Job]) -> pd.DataFrame:
    """The jobs as a frame with the columns of :func:`job_row` (empty frame keeps the columns)."""
    return pd.DataFrame([job_row(j) for j in jobs], columns=JOB_COLUMNS)


RUNNING_COLUMNS = ["id", "queue", "task", "worker", "started", "progress", "message", "reported"]


def running_frame(jobs: Iterable[Job], progress: Mapping[int, Progress], now: float) -> pd.DataFrame:
    """The ops running-jobs table: each PROCESSING job with its last reported progress
    (``progress`` is a fraction 0-1 or None; ``message`` plain text)."""
    rows = []
    for job in jobs:
        p = progress.get(job.id)
        rows.append(
            {
                "id": job.id,
                "queue": plain(queue_text(job.queue)),
                "task": plain(job.task),
                "worker": plain(job.lease_owner or ""),
                "started": fmt_short_time(job.started_at, now),
                "progress": p.fraction if p else None,
                "message": plain(p.message or "", ERROR_PREVIEW_CHARS) if p else "",
                "reported": ago(p.at, now) if p else DASH,
            }
        )
    return pd.DataFrame(rows, columns=RUNNING_COLUMNS)


def count_jobs(n: int) -> str:
    """``"1 job"``, ``"1,234 jobs"``."""
    return f"{n:,} job" + ("" if n == 1 else "s")


def database_line(url: str) -> str:
    """How the apps name their database (plain text): the URL with its password masked."""
    return f"database {redact_url(url)}"


def pause_or_resume(
    what: str,
    pause: bool,
    act: Callable[[], object],
    *,
    allowed: bool,
    flash: Callable[[str, str], None],
    paused: str = "paused",
) -> None:
    """An operator's pause or resume button (a queue's or a schedule's): refused while actions are
    locked, run, and said in one flash line (``what``: "Queue q", "Schedule s")."""
    if not allowed:
        flash("error", "Actions are locked: enter the manager password.")
        return
    try:
        act()
    except JobqError as exc:
        flash("error", f"{'Pause' if pause else 'Resume'} failed: {exc}")
        return
    flash("success", f"{what} {paused if pause else 'resumed'}.")


#: How ``html_table`` looks: the theme's text colour and font (inherited), hairlines that read on
#: a light and a dark background, numbers right-aligned, at most ``HTML_TABLE_HEIGHT_PX`` tall.
HTML_TABLE_HEIGHT_PX = 420
HTML_TABLE_CSS = f"""<style>
.jobq-table {{ max-height: {HTML_TABLE_HEIGHT_PX}px; overflow: auto; }}
.jobq-table table {{ border-collapse: collapse; width: 100%; font-size: 0.875rem; }}
.jobq-table th, .jobq-table td {{ padding: 0.3rem 0.6rem; border-bottom: 1px solid rgba(128, 128, 128, 0.25);
  text-align: left; white-space: nowrap; }}
.jobq-table th {{ font-weight: 600; position: sticky; top: 0; background: inherit; }}
.jobq-table th[title] {{ text-decoration: underline dotted rgba(128, 128, 128, 0.6); cursor: help; }}
.jobq-table .num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.jobq-table td.wrap {{ white-space: normal; overflow-wrap: break-word; min-width: 5rem; }}
</style>"""


def finished_window_note(window: int | None) -> str | None:
    """What a page says under counts from ``Queue.stats`` when the finished ones are of a window
    (``QueueStats.finished_window``); None when every count is a total."""
    if window is None:
        return None
    return f"Completed, failed and cancelled: counted among the newest {window:,} finished jobs."


def html_table(frame: pd.DataFrame, helps: Mapping[str, str] | None = None, wrap: Iterable[str] = ()) -> str:
    """``frame`` as a plain HTML table, every header and cell escaped; ``helps`` are the headers'
    tooltips; the cells of the ``wrap`` columns (free text) wrap instead of widening the table.
    For small tables: Streamlit's data grid costs the browser about half a second the first time
    a page draws one (``docs/benchmarks.md``, the apps)."""
    helps = helps or {}
    wrapped = set(wrap)

    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame]
    kinds = ["num" if n else "wrap" if str(c) in wrapped else "" for c, n in zip(frame.columns, numeric, strict=True)]

    def cell(tag: str, text: str, kind: str, title: str | None = None) -> str:
        attrs = (f' class="{kind}"' if kind else "") + (f' title="{html.escape(title)}"' if title else "")
        shown = html.escape(text) if tag == "td" else f"<span>{html.escape(text)}</span>"  # a header's own box
        return f"<{tag}{attrs}>{shown}</{tag}>"

    def shown(value: Any) -> str:
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)

    head = "".join(
        cell("th", str(c), "num" if k == "num" else "", helps.get(str(c)))
        for c, k in zip(frame.columns, kinds, strict=True)
    )
    rows = "".join(
        "<tr>" + "".join(cell("td", shown(v), k) for v, k in zip(row, kinds, strict=True)) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    return f'{HTML_TABLE_CSS}<div class="jobq-table">{table}</div>'


@dataclasses.dataclass(frozen=True, slots=True)
class Metric:
    """One figure of a page's top row: its label, value, a note under it, and a tooltip."""

    label: str
    value: str
    note: str | None = None
    help: str | None = None
    color: str | None = None
    """A ``STATUS_PALETTES`` colour name: the label is drawn in it, after a dot of it."""


METRIC_CARDS_CSS = """<style>
.jobq-metrics { display: grid; grid-template-columns: repeat(5, minmax(0, 1fr)); grid-auto-rows: 1fr;
  gap: 1rem; }
@media (max-width: 640px) { .jobq-metrics { grid-template-columns: repeat(2, minmax(0, 1fr)); } }
.jobq-metric { border: 1px solid rgba(128, 128, 128, 0.3); border-radius: 0.5rem; padding: 0.8rem 1rem;
  min-width: 0; }
.jobq-metric .label { font-size: 0.875rem; white-space: nowrap; }
.jobq-metric .label span[title] { text-decoration: underline dotted rgba(128, 128, 128, 0.6); cursor: help; }
.jobq-metric .dot { display: inline-block; width: 0.6rem; height: 0.6rem; border-radius: 50%;
  margin-right: 0.4rem; }
.jobq-metric .value { font-size: 2.25rem; line-height: 1.25; padding-top: 0.25rem; white-space: nowrap;
  font-variant-numeric: tabular-nums; }
.jobq-metric .note { font-size: 0.8rem; opacity: 0.75; white-space: nowrap; }
</style>"""


def metric_cards(metrics: Sequence[Metric], theme: str = "light") -> str:
    """``metrics`` as one HTML grid of cards (five a row), every text escaped. One element for the
    whole row: ten ``st.metric`` cost the browser about 0.18 s of the ops page's first render
    (``docs/benchmarks.md``, the apps), this costs a few milliseconds."""
    palette = STATUS_PALETTES.get(theme, STATUS_PALETTES["light"])
    cards = []
    for m in metrics:
        color = palette[m.color][0] if m.color else None
        dot = f'<span class="dot" style="background: {color}"></span>' if color else ""
        style = f' style="color: {color}"' if color else ""
        title = f' title="{html.escape(m.help)}"' if m.help else ""
        note = f'<div class="note">{html.escape(m.note)}</div>' if m.note else ""
        cards.append(
            f'<div class="jobq-metric" data-label="{html.escape(m.label)}">'
            f'<div class="label"{style}>{dot}<span{title}>{html.escape(m.label)}</span></div>'
            f'<div class="value">{html.escape(m.value)}</div>{note}</div>'
        )
    return f'{METRIC_CARDS_CSS}<div class="jobq-metrics">{"".join(cards)}</div>'
