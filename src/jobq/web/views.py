"""What the manager and ops apps show, computed without Streamlit (so it is unit-testable).

Both apps are thin pages over these helpers and jobq's public API: turning Jobs, stats, history
and workers into pandas frames, formatting times and ages, building filters, summarising action
results, computing alerts and resolving the operator's name. Nothing here touches a database
directly: every read goes through ``jobq.Queue``.
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import threading
import time
import unicodedata
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from jobq import (
    TRANSITIONS,
    Action,
    ActionResult,
    Event,
    Job,
    JobFilter,
    JobqError,
    JobStatus,
    QueueStats,
    WorkerInfo,
)
from jobq.backends.base import Bucket
from jobq.redact import redact_url
from jobq.web import ALLOWED_HOSTS_DEFAULT

#: What an operator acts on: the manager's default status filter. A cancelled (or completed) job
#: leaves this view: cancelling a PENDING job makes it disappear from the list.
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
#: A worker is alive while it heartbeats; it counts as silent after this many missed periods.
SILENT_AFTER_HEARTBEATS = 3
HEARTBEAT_SECONDS_DEFAULT = 10.0
PENDING_ALERT_SECONDS_DEFAULT = 300.0
REFRESH_SECONDS_DEFAULT = 5
HISTORY_WINDOW_SECONDS_DEFAULT = 3600.0
HISTORY_BUCKET_SECONDS_DEFAULT = 60.0
PAYLOAD_PREVIEW_CHARS = 120
DASH = "\u2013"
"""Shown for a missing time or value."""
ERROR_PREVIEW_CHARS = 90

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
#: Text colours for status cells in dataframes (Streamlit's palette, readable on white).
STATUS_CSS: dict[str, str] = {
    "PENDING": "color: #1c6fd1",
    "PROCESSING": "color: #c96a00",
    "COMPLETED": "color: #16883e",
    "FAILED": "color: #d0262f; font-weight: 600",
    "CANCELLED": "color: #6b7280",
    "alive": "color: #16883e",
    "silent": "color: #d0262f; font-weight: 600",
    "stopped": "color: #6b7280",
    "restarted": "color: #6b7280",
}


# -- untrusted text ---------------------------------------------------------------------------
# Paths, payloads, errors, queue/task names, worker and operator names come from whoever enqueued
# a job, ran a worker or typed a name. Streamlit renders most text as Markdown (links, images that
# fetch from any host, KaTeX, colour directives), and Unicode bidi controls reorder what is shown
# (``invoice\u202etxt.exe`` reads as ``invoiceexe.txt``). Every such value goes through `plain`
# (then a non-Markdown element: st.text, st.code, a dataframe cell) or `md_literal` (where the
# surrounding element is Markdown: alerts, captions, labels).

SHOWN_LINE_CHARS = 200
"""Longest one-line untrusted value shown (a path, a queue/task/worker name, an error's last line)."""
SHOWN_MESSAGE_CHARS = 1_000
"""Longest message shown in an alert or toast (it may quote untrusted values)."""
SHOWN_BLOCK_CHARS = 20_000
"""Longest multi-line untrusted value shown in a code block (a traceback, a payload's JSON)."""
OPERATOR_NAME_CHARS = 64
"""Longest operator name stored as the actor of an action (longer names are cut)."""
ELLIPSIS = "\u2026"
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})  # control, format (bidi, zero-width), surrogate
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS


def _visible(ch: str) -> bool:
    return ch not in _LINE_BREAKS and unicodedata.category(ch) not in _HIDDEN_CATEGORIES


def plain(value: object, limit: int = SHOWN_LINE_CHARS, *, multiline: bool = False) -> str:
    r"""Untrusted text made safe to show as plain text: no control/format characters, cut to ``limit``.

    Removes Unicode format characters (category Cf: bidi overrides and isolates, zero-width
    characters), control characters and lone surrogates. Line breaks (and tabs) are kept when
    ``multiline``, else they become spaces. Text longer than ``limit`` ends with an ellipsis.

    >>> plain("invoice\u202etxt.exe")
    'invoicetxt.exe'
    >>> plain("a\nb" + "c" * 10, limit=5)
    'a bc…'
    """
    text = value if isinstance(value, str) else str(value)
    # Cut generously first, so a huge value costs little; the final cut comes after cleaning.
    text = text[: limit * 4 + 16].replace("\r\n", "\n")
    out: list[str] = []
    for ch in text:
        if ch in _LINE_BREAKS:
            out.append("\n" if multiline else " ")
        elif ch == "\t":
            out.append("\t" if multiline else " ")
        elif _visible(ch):
            out.append(ch)
    return _cut("".join(out), limit)


WORD_JOINER = "\u2060"
_AUTOLINK_START = re.compile(r"(?i)(?=https?:|www\.)")


def md_literal(value: object, limit: int = SHOWN_LINE_CHARS) -> str:
    r"""Untrusted text for a Markdown element: :func:`plain` on one line, nothing Markdown acts on.

    Every ASCII punctuation character is backslash-escaped, so nothing in it starts a link, an
    image, emphasis, code, a colour directive or LaTeX. GFM's autolinks (``http://...``,
    ``www....``, ``name@host.tld``) are found in the text after escapes are undone, so an
    invisible word joiner (U+2060) goes before ``http``/``www`` and after ``@``: an autolink
    must start after a space or punctuation, and its domain with a letter or digit.

    >>> md_literal("![x](http://h/i.png) $$\\huge$$")
    '\\!\\[x\\]\\(\u2060http\\:\\/\\/h\\/i\\.png\\) \\$\\$\\\\huge\\$\\$'
    """
    text = _AUTOLINK_START.sub(WORD_JOINER, plain(value, limit)).replace("@", "@" + WORD_JOINER)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def shown_json(value: Any, limit: int = SHOWN_BLOCK_CHARS, *, indent: int | None = 2) -> str:
    """``value`` as JSON for a code block: invisible characters written as ``\\uXXXX``, cut to ``limit``.

    Unlike :func:`plain` nothing is dropped: a bidi override in a payload shows as ``\\u202e``,
    so the operator sees that it is there. ``indent=None`` gives one compact line.
    """
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, default=str)
    # json.dumps already escaped the control characters inside strings: a raw newline here is
    # indentation. What it keeps raw are format characters and the Unicode line separators.
    text = "".join(ch if ch == "\n" or _visible(ch) else json.dumps(ch)[1:-1] for ch in text[: limit * 2 + 16])
    return _cut(text, limit)


# -- formatting -------------------------------------------------------------------------------
def fmt_time(ts: float | None) -> str:
    """A UNIX time as local ``YYYY-MM-DD HH:MM:SS`` ("" for None)."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fmt_short_time(ts: float | None, now: float | None = None) -> str:
    """``HH:MM:SS`` for today, ``Mon 28 14:05`` otherwise, ``DASH`` for None (for narrow columns)."""
    if ts is None:
        return DASH
    today = time.localtime(now if now is not None else time.time())[:3]
    local = time.localtime(ts)
    return time.strftime("%H:%M:%S" if local[:3] == today else "%b %d %H:%M", local)


def fmt_age(seconds: float | None) -> str:
    """A duration as a short human string: ``"42s"``, ``"3m 04s"``, ``"2h 05m"``, ``"3d 4h"``.

    >>> fmt_age(185)
    '3m 05s'
    """
    if seconds is None or math.isnan(seconds):
        return DASH
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def fmt_duration(seconds: float | None) -> str:
    """A short run or wait time: ``"0.25s"``, ``"12.3s"``, ``"4m 10s"``."""
    if seconds is None:
        return DASH
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return fmt_age(seconds)


def payload_path(payload: Any) -> str | None:
    """The file path of a file job (payload ``{"path": ...}``, as the demo submits), else None."""
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


def first_line(text: str | None, limit: int = ERROR_PREVIEW_CHARS) -> str:
    """The last meaningful line of an error (a traceback's last line is the exception), as :func:`plain` text."""
    if not text:
        return ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return plain(lines[-1] if lines else "", limit)


def status_badge(status: JobStatus | str) -> str:
    """Streamlit markdown for a coloured status badge, e.g. ``:red-badge[:material/error: FAILED]``."""
    st = JobStatus(status)
    return f":{STATUS_COLORS[st]}-badge[{STATUS_ICONS[st]} {st.value}]"


# -- jobs -------------------------------------------------------------------------------------
def can_resubmit(status: JobStatus | str) -> bool:
    """Whether Resubmit is legal for a job in ``status`` (per ``jobq.TRANSITIONS``)."""
    return JobStatus(status) in TRANSITIONS[Action.RESUBMIT].sources


def can_cancel(status: JobStatus | str) -> bool:
    """Whether Cancel is legal: cancel a waiting/failed job, or request it for a running one."""
    st = JobStatus(status)
    return st in TRANSITIONS[Action.CANCEL].sources or st in TRANSITIONS[Action.REQUEST_CANCEL].sources


def job_row(job: Job) -> dict[str, Any]:
    """One row of the jobs tables."""
    return {
        "id": job.id,
        "status": job.status.value,
        "path / payload": payload_summary(job.payload),
        "queue": plain(job.queue),
        "task": plain(job.task),
        "attempts": f"{job.attempts}/{job.max_attempts}",
        "run": job.run,
        "created": fmt_time(job.created_at),
        "started": fmt_time(job.started_at),
        "finished": fmt_time(job.finished_at),
        "last error": first_line(job.last_error),
        "cancel requested": job.cancel_requested,
    }


JOB_COLUMNS = list(job_row(Job(0, "", "", None, JobStatus.PENDING, 0, 0.0, 0, 1, 0.0, 0.0)).keys())


def jobs_frame(jobs: Iterable[Job]) -> pd.DataFrame:
    """The jobs as a frame with the columns of :func:`job_row` (empty frame keeps the columns)."""
    return pd.DataFrame([job_row(j) for j in jobs], columns=JOB_COLUMNS)


def build_filter(
    statuses: Iterable[JobStatus | str] = (), queues: Iterable[str] = (), search: str | None = None
) -> JobFilter:
    """A JobFilter from the sidebar's choices (blank search means no search)."""
    text = (search or "").strip()
    return JobFilter(
        statuses=tuple(JobStatus(s) for s in statuses),
        queues=tuple(q for q in queues if q),
        search=text or None,
    )


def describe_filter(where: JobFilter) -> str:
    """The filter in words (plain text), for confirmations: ``status PENDING or FAILED, queue default``."""
    parts = []
    if where.statuses:
        parts.append("status " + " or ".join(s.value for s in where.statuses))
    if where.queues:
        parts.append("queue " + " or ".join(plain(q) for q in where.queues))
    if where.search:
        parts.append(f"payload containing {plain(where.search)!r}")
    return ", ".join(parts) or "all jobs"


def page_count(total: int, size: int) -> int:
    """Number of pages (at least 1) for ``total`` rows at ``size`` per page."""
    return max(1, math.ceil(total / max(1, size)))


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """A readable summary of an operator action, for st.success / st.warning / st.error."""

    level: str
    """``"success"``, ``"warning"`` (partly done) or ``"error"`` (nothing done)."""
    message: str
    """Plain text: show it with :func:`md_literal`."""
    done: int
    refused: int


def summarize(results: Sequence[ActionResult], verb: str, max_listed: int = 3) -> Outcome:
    """Summarise ActionResults: ``"Resubmitted 3 jobs. 1 refused: job 7: cannot resubmit ..."``."""
    ok = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    if not results:
        return Outcome("warning", f"No job matched: nothing to {verb.lower()}.", 0, 0)
    past = {"Resubmit": "Resubmitted", "Cancel": "Cancelled"}.get(verb, verb + "ed")
    parts = []
    if ok:
        requested = sum(1 for r in ok if r.status == JobStatus.PROCESSING)
        parts.append(
            f"{past} {_jobs(len(ok))}" + (f" ({requested} running: cancellation requested)" if requested else "") + "."
        )
    if bad:
        reasons = "; ".join(_refusal(r) for r in bad[:max_listed])
        more = f"; and {len(bad) - max_listed} more" if len(bad) > max_listed else ""
        parts.append(f"{len(bad)} refused, nothing changed for {'it' if len(bad) == 1 else 'them'}: {reasons}{more}.")
    level = "success" if not bad else ("warning" if ok else "error")
    return Outcome(level, " ".join(parts), len(ok), len(bad))


def _jobs(n: int) -> str:
    return f"{n:,} job" + ("" if n == 1 else "s")


def _refusal(result: ActionResult) -> str:
    if result.status is None:
        return f"job {result.job_id} not found"
    return plain(result.message) if result.message else f"job {result.job_id} is {result.status.value}"


def events_frame(events: Iterable[Event]) -> pd.DataFrame:
    """A job's history as a table: when, what, who, attempt, and a one-line detail."""
    rows = []
    for e in events:
        detail = dict(e.detail)
        error = detail.pop("error", None)
        summary = first_line(str(error), 200) if error else plain(", ".join(f"{k}={v}" for k, v in detail.items()))
        rows.append(
            {
                "at": fmt_time(e.at),
                "event": str(e.kind),
                "actor": plain(e.actor or ""),
                "attempt": "" if e.attempt is None else str(e.attempt),
                "detail": summary,
            }
        )
    return pd.DataFrame(rows, columns=["at", "event", "actor", "attempt", "detail"])


def event_errors(events: Iterable[Event]) -> list[tuple[Event, str]]:
    """The events that carry an error text (full tracebacks), oldest first."""
    out = []
    for e in events:
        error = e.detail.get("error")
        if error:
            out.append((e, str(error)))
    return out


# -- operator, password, manual enqueue ---------------------------------------------------------
def login_name() -> str:
    """The login name of the user running the app (``uidN`` when it has none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def clean_operator(name: str | None) -> str:
    """An operator name as stored in the actor column: :func:`plain`, spaces collapsed, at most
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


#: The environment variable (and ``.streamlit/secrets.toml`` key, lower-cased) holding each app's
#: password. Ops falls back to the manager's password when it has none of its own.
PASSWORD_ENV: dict[str, str] = {"manager": "JOBQ_MANAGER_PASSWORD", "ops": "JOBQ_OPS_PASSWORD"}


def expected_password(
    env: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None, app: str = "manager"
) -> str | None:
    """The password that gates ``app`` (viewing and acting); None: no gate.

    The manager: ``JOBQ_MANAGER_PASSWORD``, else the secret ``manager_password``. Ops: first
    ``JOBQ_OPS_PASSWORD`` / ``ops_password``, then the manager's.
    """
    env = os.environ if env is None else env
    apps = ["ops", "manager"] if app == "ops" else ["manager"]
    for name in apps:
        variable = PASSWORD_ENV[name]
        if env.get(variable):
            return env[variable]
        if secrets is not None:
            value = secrets.get(f"{name}_password") or secrets.get(variable)
            if value:
                return str(value)
    return None


def password_ok(given: str | None, expected: str) -> bool:
    """Compare in constant time (no timing hints about the password)."""
    return hmac.compare_digest((given or "").encode(), expected.encode())


LOGIN_DELAY_SECONDS_FIRST = 1.0
"""Delay before answering the first wrong password; it doubles with each wrong one in a row."""
LOGIN_DELAY_SECONDS_MAX = 30.0
"""The longest delay before answering a wrong password."""

login_log = logging.getLogger("jobq.web.login")


class LoginGuard:
    """Slows down password guessing for one app process.

    Every wrong password is answered only after a delay that doubles with each wrong guess in a
    row (1, 2, 4, ... up to 30 s). The count is the process's, not the browser session's (a new
    tab does not start again at 1 s), and guesses are checked one at a time, so parallel sessions
    do not multiply the rate either. The price: while someone guesses, a real user waits behind
    them. A right password resets the count. Each wrong guess is logged with who made it (the
    session and client address), never with the text guessed.
    """

    def __init__(
        self,
        first_seconds: float = LOGIN_DELAY_SECONDS_FIRST,
        max_seconds: float = LOGIN_DELAY_SECONDS_MAX,
        sleep: Any = time.sleep,
    ) -> None:
        self.first_seconds = first_seconds
        self.max_seconds = max_seconds
        self._sleep = sleep
        self._lock = threading.Lock()
        self.wrong_in_a_row = 0

    def delay(self, wrong_in_a_row: int) -> float:
        """Seconds to wait before answering the ``wrong_in_a_row``-th wrong guess (1-based)."""
        if wrong_in_a_row < 1:
            return 0.0
        return float(min(self.first_seconds * 2 ** min(wrong_in_a_row - 1, 32), self.max_seconds))

    def check(self, given: str | None, expected: str, *, app: str, who: str) -> bool:
        """Whether ``given`` is the password; a wrong one is logged and answered after the delay."""
        with self._lock:
            if password_ok(given, expected):
                self.wrong_in_a_row = 0
                return True
            self.wrong_in_a_row += 1
            seconds = self.delay(self.wrong_in_a_row)
            login_log.warning(
                "%s: wrong password from %s (%d wrong in a row); answering after %.0f s",
                app,
                plain(who),
                self.wrong_in_a_row,
                seconds,
            )
            self._sleep(seconds)
            return False

    def reset(self) -> None:
        """Forget the wrong guesses (for tests)."""
        with self._lock:
            self.wrong_in_a_row = 0


LOGIN_GUARD = LoginGuard()
"""The process's guard (each app runs in its own Streamlit process)."""


# -- where the apps may serve --------------------------------------------------------------------
LOOPBACK_HOSTS: tuple[str, ...] = ALLOWED_HOSTS_DEFAULT
"""The names the apps answer to by default (Streamlit's ``server.allowedHosts``): a page served
under any other name (DNS rebinding: evil.example resolved to 127.0.0.1) gets no session."""


def is_loopback(address: str | None) -> bool:
    """Whether a server address (Streamlit's ``server.address``) is reachable from this host only."""
    if not address:
        return False  # unset: Streamlit listens on every interface
    if address.startswith("unix://") or address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def serving_refusal(address: str | None, password: str | None, app: str) -> str | None:
    """Why ``app`` must not show anything when Streamlit listens on ``address``; None: serve.

    Loopback (or a unix socket) serves. Any other address (unset: every interface) serves only
    when it was given explicitly and a password gates the app.
    """
    if is_loopback(address):
        return None
    if address and password:
        return None
    variables = " or ".join(PASSWORD_ENV[name] for name in (["ops", "manager"] if app == "ops" else ["manager"]))
    if not address:
        return (
            f"The jobq {app} refuses to serve: server.address is not set, so Streamlit listens on every "
            f"network interface. Start it with --server.address 127.0.0.1 (as jobq {app} and "
            f"supervisord.conf do), or expose it deliberately: an explicit --server.address and a "
            f"password ({variables})."
        )
    return (
        f"The jobq {app} refuses to serve: it listens on {address} without a password. Set "
        f"{variables}, or serve it on loopback (--server.address 127.0.0.1)."
    )


def host_allowed(host: str | None, allowed: Sequence[str]) -> bool:
    """Whether an HTTP ``Host`` header names an allowed host, as Streamlit's ``server.allowedHosts``
    judges it (port ignored, ``*.example.com`` wildcards, ``*`` for any). No header (no HTTP
    request at all, as in AppTest) passes; an empty ``allowed`` means :data:`LOOPBACK_HOSTS`.
    """
    if host is None:
        return True
    try:
        parsed = urllib.parse.urlsplit(f"//{host}")
        name = parsed.hostname
        _ = parsed.port  # a malformed port raises ValueError
    except ValueError:
        return False
    if not name or parsed.username is not None or parsed.path or parsed.query or parsed.fragment:
        return False
    name = name.lower().rstrip(".")
    for pattern in (p.strip().lower().rstrip(".") for p in (allowed or LOOPBACK_HOSTS)):
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def database_line(url: str) -> str:
    """How the apps name their database (plain text): the URL with its password masked."""
    return f"database {redact_url(url)}"


def ops_caption(url: str) -> str:
    """The tail of the ops console's caption (plain text), never with a password in it."""
    return f"{database_line(url)} · read-only"


def validate_path(text: str, data_dir: str | os.PathLike[str] = "data", database_url: str | None = None) -> str:
    """Check a manual job's path as the consumer would; return the payload's path or raise ValueError.

    Uses ``jobq.demo.paths.resolve_job_path`` (the consumer's own containment rules: inside the data
    folder, a regular file, no symlink out, not the queue's database). Falls back to a simpler
    local check when that module is not there.
    """
    try:
        from jobq.demo import paths
    except ImportError:
        return _validate_path_locally(text, data_dir)
    raw = (text or "").strip()
    if not raw:
        raise ValueError("enter a path, e.g. data/files/report.txt")
    try:
        real = paths.resolve_job_path(data_dir, raw, database_url=database_url)
    except JobqError as exc:
        raise ValueError(str(exc)) from None
    return paths.job_path_text(data_dir, real)


def _validate_path_locally(text: str, data_dir: str | os.PathLike[str]) -> str:
    raw = (text or "").strip()
    if not raw:
        raise ValueError("enter a path, e.g. data/files/report.txt")
    if any(ord(ch) < 32 for ch in raw) or len(raw) > 1000:
        raise ValueError("the path has control characters or is too long")
    root = (Path(data_dir) / "files").resolve()
    candidate = Path(raw)
    resolved = (candidate if candidate.is_absolute() else Path.cwd() / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"{raw}: not inside {root} (jobs may only name files under the data folder)")
    if not resolved.is_file():
        raise ValueError(f"{raw}: no such file")
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


# -- ops: stats, history, workers, alerts ------------------------------------------------------
def oldest_pending_age(stats: QueueStats, now: float) -> float | None:
    """Seconds the oldest due PENDING job has waited, or None when nothing waits."""
    if stats.oldest_pending_at is None:
        return None
    return max(0.0, now - stats.oldest_pending_at)


def failure_rate(buckets: Sequence[Bucket]) -> float | None:
    """Failed / (completed + failed) over the buckets, or None when nothing finished."""
    done = sum(b.completed for b in buckets)
    failed = sum(b.failed for b in buckets)
    return failed / (done + failed) if done + failed else None


def throughput_per_minute(buckets: Sequence[Bucket], bucket_seconds: float) -> float:
    """Average completed jobs per minute over the buckets."""
    if not buckets:
        return 0.0
    return sum(b.completed for b in buckets) * 60.0 / (len(buckets) * bucket_seconds)


def history_frame(buckets: Sequence[Bucket]) -> pd.DataFrame:
    """The history as a time-indexed frame (local time) for the charts."""
    columns = ["enqueued", "claimed", "completed", "failed", "depth", "wait p50", "wait p95", "run p50", "run p95"]
    rows = [
        {
            "time": datetime.datetime.fromtimestamp(b.start),  # naive local time: what the operator reads
            "enqueued": b.enqueued,
            "claimed": b.claimed,
            "completed": b.completed,
            "failed": b.failed,
            "depth": b.depth,
            "wait p50": b.wait_p50,
            "wait p95": b.wait_p95,
            "run p50": b.run_p50,
            "run p95": b.run_p95,
        }
        for b in buckets
    ]
    frame = pd.DataFrame(rows, columns=["time", *columns])
    return frame.set_index("time")


def worker_state(worker: WorkerInfo, now: float, heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT) -> str:
    """``"stopped"`` (said goodbye), ``"alive"`` (seen within 3 heartbeats) or ``"silent"``."""
    if worker.stopped_at is not None:
        return "stopped"
    if now - worker.last_seen_at <= SILENT_AFTER_HEARTBEATS * heartbeat_seconds:
        return "alive"
    return "silent"


def workers_frame(
    workers: Sequence[WorkerInfo], now: float, heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT
) -> pd.DataFrame:
    """Workers, newest first, with their state and how often supervisord restarted each program.

    Several rows with the same ``name`` (the supervisord program, e.g. consumer1) are successive
    process starts: ``restarts`` is how many starts that name has beyond the first one.
    """
    starts = Counter(w.name for w in workers)
    latest = {id(w) for w in _latest_per_name(workers)}
    rows = [
        {
            "name": plain(w.name),
            "state": _shown_state(w, now, heartbeat_seconds, id(w) in latest),
            "host": plain(w.host),
            "pid": w.pid,
            "started": fmt_time(w.started_at),
            "last heartbeat": fmt_age(now - w.last_seen_at) + " ago",
            "current jobs": ", ".join(str(j) for j in w.current_jobs),
            "jobs done": w.jobs_done,
            "jobs failed": w.jobs_failed,
            "restarts": starts[w.name] - 1,
            "queues": plain(", ".join(w.queues)),
            "id": plain(w.id),
        }
        for w in sorted(workers, key=lambda w: w.started_at, reverse=True)
    ]
    columns = [
        "name",
        "state",
        "host",
        "pid",
        "started",
        "last heartbeat",
        "current jobs",
        "jobs done",
        "jobs failed",
        "restarts",
        "queues",
        "id",
    ]
    return pd.DataFrame(rows, columns=columns)


def _shown_state(worker: WorkerInfo, now: float, heartbeat_seconds: float, is_latest: bool) -> str:
    state = worker_state(worker, now, heartbeat_seconds)
    # An older process of a program that started again was restarted (e.g. killed, then brought
    # back by supervisord): it is history, not a silent worker.
    return "restarted" if state == "silent" and not is_latest else state


def style_cell(value: Any) -> str:
    """CSS for a status or worker-state cell (for ``DataFrame.style.map``), "" for anything else."""
    return STATUS_CSS.get(str(value), "")


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    level: str
    """``"error"`` or ``"warning"``."""
    message: str
    """Plain text (names in it went through :func:`plain`): show it with :func:`md_literal`."""


def compute_alerts(
    stats: QueueStats,
    workers: Sequence[WorkerInfo],
    now: float,
    *,
    pending_alert_seconds: float = PENDING_ALERT_SECONDS_DEFAULT,
    heartbeat_seconds: float = HEARTBEAT_SECONDS_DEFAULT,
) -> list[Alert]:
    """What needs an operator: expired leases, jobs waiting too long, silent workers."""
    alerts: list[Alert] = []
    if stats.expired_leases:
        alerts.append(
            Alert(
                "error",
                f"{_jobs(stats.expired_leases)} PROCESSING with an expired lease: their worker died or froze; "
                "the rescuer will return them to PENDING.",
            )
        )
    age = oldest_pending_age(stats, now)
    if age is not None and age > pending_alert_seconds:
        alerts.append(
            Alert(
                "warning",
                f"The oldest pending job has waited {fmt_age(age)} (threshold {fmt_age(pending_alert_seconds)}): "
                "are enough consumers running?",
            )
        )
    silent = [w for w in _latest_per_name(workers) if worker_state(w, now, heartbeat_seconds) == "silent"]
    if silent:
        names = ", ".join(
            f"{plain(w.name)} (pid {w.pid}, last seen {fmt_age(now - w.last_seen_at)} ago)" for w in silent[:5]
        )
        alerts.append(Alert("warning", f"Silent worker{'s' if len(silent) > 1 else ''}: {names}."))
    return alerts


def _latest_per_name(workers: Sequence[WorkerInfo]) -> list[WorkerInfo]:
    """The newest process of each program name (older ones were restarted, not silent)."""
    latest: dict[str, WorkerInfo] = {}
    for w in workers:
        if w.name not in latest or w.started_at > latest[w.name].started_at:
            latest[w.name] = w
    return sorted(latest.values(), key=lambda w: w.name)
