"""The ``jobq`` command: enqueue, run workers, inspect and act on jobs.

Every command takes ``--db URL`` (env ``JOBQ_DATABASE_URL``, default ``sqlite:///data/queue.db``).
Settings are layered like everywhere in jobq: ``jobq.toml`` < ``JOBQ_*`` environment < flags, so
an option left unset never hides the environment or the file (its argparse default is None).

Output is a plain aligned table for people and JSON (``--json``) for scripts; in JSON, times are
UNIX seconds. Every error a user can cause prints one line, ``jobq: error: ...``, on stderr with no
traceback: exit 1 for a failed command, 2 for bad usage, 130 after Ctrl-C.

Heavy or optional parts (the worker runtime, the seed's producer/consumer, the web apps) are
imported inside their commands, so ``jobq list`` stays fast and works without the extras.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import inspect
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import jobq
from jobq.backends.base import SORT_FIELDS, ActionResult, JobFilter, Page, QueueStats, WorkerInfo
from jobq.config import (
    CONCURRENCY_MAX,
    DATABASE_URL_DEFAULT,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    env_name,
    load_settings,
    parse_duration,
    parse_range,
)
from jobq.errors import ConfigError, InvalidPayload, JobqError
from jobq.job import Event, Job, JobStatus
from jobq.queue import default_actor
from jobq.redact import redact_logs, redact_text

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `cmd | head` reports for a C tool

#: Table cells longer than this are cut (payloads and errors can be kilobytes).
CELL_MAX_CHARS = 40
LIST_LIMIT_DEFAULT = 50
#: A worker is shown alive while its last heartbeat is younger than this many heartbeat periods.
ALIVE_HEARTBEATS = 3

Command = Callable[[argparse.Namespace], int]


# -- argument types ---------------------------------------------------------------------------------
def duration_arg(text: str) -> float:
    """argparse type: ``30``, ``1.5s``, ``250ms``, ``10m``, ``7d`` -> seconds."""
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def range_arg(text: str) -> str:
    """argparse type: a ``7-15`` range of seconds, kept as text (the setting's own form)."""
    try:
        parse_range(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def status_arg(text: str) -> list[JobStatus]:
    """argparse type: one status or a comma list, any case (``failed,cancelled``)."""
    out: list[JobStatus] = []
    for part in text.split(","):
        try:
            out.append(JobStatus(part.strip().upper()))
        except ValueError:
            choices = ", ".join(s.value for s in JobStatus)
            raise argparse.ArgumentTypeError(f"unknown status {part.strip()!r} (choose from {choices})") from None
    return out


def _shown_number(text: str, *, quote: bool = True) -> str:
    """The argument as an error message may quote it: a 5,000-digit number is cut."""
    shown = text.strip() if len(text.strip()) <= 40 else text.strip()[:37] + "..."
    return repr(shown) if quote else shown


def _int_arg(text: str, minimum: int, maximum: int) -> int:
    """Parse an integer in ``[minimum, maximum]``, or raise ArgumentTypeError (one usage line).

    The bounds are what the databases can store (``config.INT64_MAX`` for ids, offsets and limits,
    ``config.INT32_MAX`` for PostgreSQL ``integer`` columns): a value outside them would otherwise
    reach the driver and end in a traceback (apsw: "int too big to convert").
    """
    shown = _shown_number(text, quote=False)
    try:
        value = int(text)
    except ValueError:
        if text.strip().lstrip("+-").isdigit():  # more than 4,300 digits: Python's int() limit
            bound = f"at least {minimum}" if text.strip().startswith("-") else f"at most {maximum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {shown}") from None
        raise argparse.ArgumentTypeError(f"not an integer: {_shown_number(text)}") from None
    if value < minimum:
        if minimum == 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {shown}")
        if minimum == 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, not {shown}")
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {shown}")
    if value > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum}, not {shown}")
    return value


def positive_int_arg(text: str) -> int:
    """argparse type: 1 to 2**63-1 (a LIMIT both backends accept)."""
    return _int_arg(text, 1, INT64_MAX)


def non_negative_int_arg(text: str) -> int:
    """argparse type: 0 to 2**63-1 (an OFFSET both backends accept)."""
    return _int_arg(text, 0, INT64_MAX)


def priority_arg(text: str) -> int:
    """argparse type: a priority PostgreSQL's 32-bit ``integer`` column holds (SQLite's holds more)."""
    return _int_arg(text, INT32_MIN, INT32_MAX)


def attempts_arg(text: str) -> int:
    """argparse type: ``--max-attempts``, 1 to 2**31-1 (a PostgreSQL ``integer``)."""
    return _int_arg(text, 1, INT32_MAX)


def concurrency_arg(text: str) -> int:
    """argparse type: handler threads, 1 to ``CONCURRENCY_MAX``."""
    return _int_arg(text, 1, CONCURRENCY_MAX)


def job_id_arg(text: str) -> int:
    """argparse type: a job id (``42`` or ``#42``), 1 to 2**63-1 (ids are 64-bit on both backends)."""
    digits = text.strip().lstrip("#")
    try:
        value = int(digits)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a job id: {_shown_number(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a job id: {_shown_number(text)}")
    if value > INT64_MAX:
        raise argparse.ArgumentTypeError(f"not a job id: {_shown_number(text)} (ids are at most {INT64_MAX})")
    return value


def port_arg(text: str) -> int:
    """argparse type: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {_shown_number(text)}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, not {_shown_number(text, quote=False)}")
    return value


def handler_arg(text: str) -> tuple[str, str]:
    """argparse type: ``NAME=package.module:function``, or ``package.module:function`` for the
    default handler (task name ``""``). Returns ``(name, spec)``."""
    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = "", text
    module, colon, attr = spec.partition(":")
    if not colon or not module.strip() or not attr.strip():
        raise argparse.ArgumentTypeError(f"handler {text!r} must look like [NAME=]package.module:function")
    return name.strip(), spec.strip()


# -- the parser -------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``jobq: error:`` line like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("jobq").strip()
        hint = f"jobq {command} --help" if command else "jobq --help"
        self.exit(EXIT_USAGE, f"jobq: error: {command + ': ' if command else ''}{message} (see '{hint}')\n")


def _env_help(text: str, field: str, default: object = None) -> str:
    """Help text that names the option's environment variable (and its default)."""
    shown = f"; default {default}" if default is not None else ""
    return f"{text} (env {env_name(field)}{shown})"


def _common(*, top: bool) -> _Parser:
    """Options every command takes, accepted before or after the command name.

    Below the command they default to SUPPRESS, so that an option given before the command
    (``jobq --db URL list``) is not overwritten by the subcommand's default.
    """
    parent = _Parser(add_help=False)
    default: Any = None if top else argparse.SUPPRESS
    parent.add_argument(
        "--db",
        metavar="URL",
        default=default,
        help=_env_help("database URL: sqlite:///path.db or postgresql://...", "database_url", DATABASE_URL_DEFAULT),
    )
    parent.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="TOML settings file (env JOBQ_CONFIG; default ./jobq.toml when it exists)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The whole ``jobq`` command line (pure: no I/O, no database)."""
    parser = _Parser(
        prog="jobq",
        description="jobq: a crash-safe persistent job queue. Settings: jobq.toml < JOBQ_* env < flags.",
        parents=[_common(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"jobq {jobq.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    common = _common(top=False)

    def command(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    # enqueue
    p = command("enqueue", cmd_enqueue, "submit a job and print its id")
    p.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="a file under the data directory: the seed's file job (stamped by consumers)",
    )
    p.add_argument("--json", dest="payload", metavar="JSON", help="the payload as JSON; '-' reads it from stdin")
    p.add_argument("--queue", "-q", metavar="NAME", help=_env_help("queue name", "queue", "default"))
    p.add_argument(
        "--task",
        "-t",
        metavar="NAME",
        default="",
        help="task name: which handler runs it (default: the default handler)",
    )
    p.add_argument("--priority", "-p", metavar="N", type=priority_arg, default=0, help="lower runs first (default 0)")
    p.add_argument(
        "--delay", metavar="DURATION", type=duration_arg, help="run no sooner than this from now: 30s, 10m, 2h"
    )
    p.add_argument("--key", metavar="KEY", help="idempotency key: the same key again returns the existing job")
    p.add_argument(
        "--max-attempts",
        metavar="N",
        type=attempts_arg,
        help=_env_help("attempts before FAILED", "max_attempts", 3),
    )
    p.add_argument("--timeout", metavar="DURATION", type=duration_arg, help="longest a run may take: 30s, 5m")

    # worker
    p = command("worker", cmd_worker, "run handlers for the jobs of one or more queues")
    p.add_argument(
        "--handler",
        "-H",
        dest="handlers",
        action="append",
        type=handler_arg,
        default=[],
        metavar="[NAME=]MODULE:FUNC",
        help="register a handler for task NAME (without NAME=: the default handler); repeatable",
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE so that its @jobq.worker.task handlers register; repeatable",
    )
    _worker_options(p, many_queues=True)
    p.add_argument("--exit-when-idle", action="store_true", help="exit once no job is due and none runs")

    # producer / consumer (the seed's processes)
    p = command("producer", cmd_producer, "the seed's producer: write a new file every interval and enqueue it")
    p.add_argument(
        "--interval",
        metavar="DURATION",
        type=duration_arg,
        help=_env_help("seconds between files", "producer_interval_seconds", "5s"),
    )
    p.add_argument("--data-dir", metavar="DIR", help=_env_help("where job files live", "data_dir", "data"))
    p.add_argument("--queue", "-q", metavar="NAME", help=_env_help("queue name", "queue", "default"))
    p = command("consumer", cmd_consumer, "the seed's consumer: stamp each job's file after a random delay")
    p.add_argument(
        "--delay",
        metavar="RANGE",
        dest="consumer_delay",
        type=range_arg,
        help=_env_help("seconds each job takes, a range", "consumer_delay", "7-15"),
    )
    p.add_argument("--data-dir", metavar="DIR", help=_env_help("where job files live", "data_dir", "data"))
    _worker_options(p, many_queues=False)

    # the web apps
    for app, port in (("manager", 8501), ("ops", 8502)):
        what = "resubmit, cancel and enqueue jobs" if app == "manager" else "watch the queue"
        p = command(app, cmd_web, f"serve the {app} web app ({what}) on 127.0.0.1")
        p.add_argument("--port", metavar="PORT", type=port_arg, default=port, help=f"port (default {port})")
        p.add_argument("extra", nargs="*", metavar="STREAMLIT_ARG", help="more streamlit options, after --")
        p.set_defaults(app=app)

    # list
    p = command("list", cmd_list, "list jobs, newest first")
    p.add_argument(
        "--status",
        "-s",
        metavar="STATUS",
        dest="statuses",
        action="append",
        type=status_arg,
        default=[],
        help="only these statuses (repeatable or comma-separated, any case)",
    )
    p.add_argument(
        "--queue", "-q", metavar="NAME", dest="queues", action="append", default=[], help="only this queue (repeatable)"
    )
    p.add_argument(
        "--task", "-t", metavar="NAME", dest="tasks", action="append", default=[], help="only this task (repeatable)"
    )
    p.add_argument("--search", metavar="TEXT", help="case-insensitive text the payload contains")
    p.add_argument(
        "--sort",
        choices=SORT_FIELDS,
        default="id",
        metavar="FIELD",
        help=f"sort by: {', '.join(SORT_FIELDS)} (default id)",
    )
    p.add_argument("--asc", action="store_true", help="ascending (default: descending)")
    p.add_argument(
        "--limit",
        "-n",
        metavar="N",
        type=positive_int_arg,
        default=LIST_LIMIT_DEFAULT,
        help=f"at most N jobs (default {LIST_LIMIT_DEFAULT})",
    )
    p.add_argument("--offset", metavar="N", type=non_negative_int_arg, default=0, help="skip the first N jobs")
    _json_options(p, lines=True)

    # show
    p = command("show", cmd_show, "show a job and its event history")
    p.add_argument("job_id", type=job_id_arg, metavar="ID")
    _json_options(p)

    # retry / cancel
    p = command("retry", cmd_retry, "resubmit FAILED, CANCELLED or COMPLETED jobs (back to PENDING)")
    p.add_argument("job_ids", type=job_id_arg, nargs="*", metavar="ID")
    p.add_argument("--all-failed", action="store_true", help="resubmit every FAILED job")
    _actor_option(p)
    p = command("cancel", cmd_cancel, "cancel PENDING or FAILED jobs; a PROCESSING job is asked to stop")
    p.add_argument("job_ids", type=job_id_arg, nargs="+", metavar="ID")
    _actor_option(p)

    # stats / workers
    p = command("stats", cmd_stats, "counts by status and queue, oldest pending, throughput, expired leases")
    _json_options(p)
    p = command("workers", cmd_workers, "registered worker processes and whether they are alive")
    p.add_argument("--all", action="store_true", help="include stopped and lost workers (default: alive only)")
    _json_options(p)

    # maintenance
    p = command("purge", cmd_purge, "delete finished jobs (and their events) older than a duration")
    p.add_argument("--older-than", type=duration_arg, required=True, metavar="DURATION", help="e.g. 7d, 12h")
    p.add_argument(
        "--status",
        "-s",
        metavar="STATUS",
        dest="statuses",
        action="append",
        type=status_arg,
        default=[],
        help="statuses to purge (repeatable or comma-separated; default COMPLETED)",
    )
    p = command("rescue", cmd_rescue, "run one rescue pass: jobs whose lease expired go back to PENDING")
    command("version", cmd_version, "print the jobq and SQLite versions")
    return parser


def _worker_options(p: argparse.ArgumentParser, *, many_queues: bool) -> None:
    if many_queues:
        p.add_argument(
            "--queue",
            "-q",
            metavar="NAME",
            dest="queues",
            action="append",
            default=[],
            help=_env_help("queue to work on (repeatable)", "queue", "default"),
        )
    else:
        p.add_argument("--queue", "-q", metavar="NAME", help=_env_help("queue to work on", "queue", "default"))
    p.add_argument(
        "--concurrency", "-c", metavar="N", type=concurrency_arg, help=_env_help("handler threads", "concurrency", 1)
    )
    p.add_argument(
        "--lease", metavar="DURATION", type=duration_arg, help=_env_help("lease per claim", "lease_seconds", "30s")
    )
    p.add_argument(
        "--grace",
        metavar="DURATION",
        type=duration_arg,
        help=_env_help("drain time after SIGTERM", "shutdown_grace_seconds", "20s"),
    )
    p.add_argument(
        "--name", metavar="NAME", help="worker name shown in ops (default: supervisord program name or worker-PID)"
    )


def _json_options(p: argparse.ArgumentParser, *, lines: bool = False) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--json", dest="output", action="store_const", const="json", default="table", help="JSON for scripts"
    )
    if lines:
        group.add_argument(
            "--jsonl", dest="output", action="store_const", const="jsonl", help="one JSON object per line"
        )


def _actor_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--actor", metavar="NAME", help=_env_help("who is acting, recorded in the events", "operator", "login name")
    )


# -- settings ---------------------------------------------------------------------------------------
#: Flags (argparse dest) that set a Settings field of the same meaning. Their help names the env var.
FLAG_SETTINGS: dict[str, str] = {
    "db": "database_url",
    "lease": "lease_seconds",
    "grace": "shutdown_grace_seconds",
    "concurrency": "concurrency",
    "interval": "producer_interval_seconds",
    "data_dir": "data_dir",
    "consumer_delay": "consumer_delay",
    "actor": "operator",
}


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags set (unset flags are left out, so env and file still apply)."""
    out = {field: getattr(args, dest) for dest, field in FLAG_SETTINGS.items() if getattr(args, dest, None) is not None}
    queue = getattr(args, "queue", None)
    queues = getattr(args, "queues", None)
    if isinstance(queue, str):
        out["queue"] = queue
    elif queues and args.command == "worker":
        out["queue"] = queues[0]
    return out


def make_settings(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> jobq.Settings:
    """Settings for this invocation: file < env < flags."""
    return load_settings(settings_overrides(args), env=env, config_file=getattr(args, "config", None))


def _open(args: argparse.Namespace) -> jobq.Queue:
    """The queue for commands that read or act on existing jobs: a database that does not exist
    is an error (a typo in --db must not silently create an empty queue and list nothing)."""
    return jobq.Queue(settings=make_settings(args), create=False)


# -- formatting (pure) ------------------------------------------------------------------------------
def clean(text: str, limit: int | None = CELL_MAX_CHARS) -> str:
    """One line of printable text: control characters become spaces (a payload must not move the
    operator's cursor or inject terminal escapes), cut to ``limit`` with ``...``."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text)
    if limit is not None and len(flat) > limit:
        return flat[: max(0, limit - 3)] + "..."
    return flat


def error_summary(text: str) -> str:
    """The line of an error that says what went wrong: for a stored traceback, its last line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def ago(ts: float | None, now: float) -> str:
    """``"12s ago"``, ``"3m ago"``, ``"5h ago"``, ``"2d ago"``, ``"in 10s"`` or ``"-"``."""
    if ts is None:
        return "-"
    delta = now - ts
    future = delta < 0
    seconds = abs(delta)
    if seconds < 1:
        return "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            text = f"{int(seconds // size)}{unit}"
            return f"in {text}" if future else f"{text} ago"
    return "now"  # unreachable: seconds >= 1 matched "s"


def local_iso(ts: float | None) -> str:
    """Local time, ISO 8601 to the second with its UTC offset, or ``"-"``."""
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def seconds_text(seconds: float | None) -> str:
    """A duration for people: ``"45s"``, ``"3m 20s"``, ``"2h 5m"``, ``"-"``."""
    if seconds is None:
        return "-"
    s = round(seconds)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (unit, size) in enumerate(units):
        if s >= size or unit == "s":
            text = f"{s // size}{unit}"
            if i + 1 < len(units):
                next_unit, next_size = units[i + 1]
                rest = s % size // next_size
                if rest:  # "2h 5m", but "2h" rather than "2h 0m"
                    text += f" {rest}{next_unit}"
            return text
    return "0s"  # unreachable: the "s" unit always matches


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Plain left-aligned columns separated by two spaces, no trailing blanks."""
    cells = [[str(h) for h in headers], *[[clean(str(c), None) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def job_dict(job: Job) -> dict[str, Any]:
    """A job for JSON output. The lease token is left out: it is the fencing secret of the worker
    holding the job, and nobody reading a listing has a use for it."""
    out = dataclasses.asdict(job)
    out.pop("lease_token", None)
    out["status"] = job.status.value
    return out


def event_dict(event: Event) -> dict[str, Any]:
    out = dataclasses.asdict(event)
    out["kind"] = str(event.kind)
    return out


def jobs_table(jobs: Sequence[Job], now: float) -> str:
    rows = [
        (
            j.id,
            j.status.value,
            j.queue,
            j.task or "-",
            f"{j.attempts}/{j.max_attempts}",
            ago(j.created_at, now),
            clean(compact_json(j.payload)),
            clean(error_summary(j.last_error)) if j.last_error else "",
        )
        for j in jobs
    ]
    return format_table(("ID", "STATUS", "QUEUE", "TASK", "ATTEMPTS", "CREATED", "PAYLOAD", "LAST ERROR"), rows)


def job_text(job: Job, events: Sequence[Event], now: float) -> str:
    """``jobq show``: the job's fields, its payload and result, then its history."""

    def when(ts: float | None) -> str:
        return "-" if ts is None else f"{local_iso(ts)} ({ago(ts, now)})"

    fields: list[tuple[str, str]] = [
        ("id", str(job.id)),
        ("status", job.status.value + ("  (cancellation requested)" if job.cancel_requested else "")),
        ("queue", job.queue),
        ("task", job.task or "- (default handler)"),
        ("priority", str(job.priority)),
        ("attempts", f"{job.attempts} of {job.max_attempts} (run {job.run})"),
        ("created", when(job.created_at)),
        ("run at", when(job.run_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
        ("updated", when(job.updated_at)),
    ]
    if job.timeout is not None:
        fields.append(("timeout", seconds_text(job.timeout)))
    if job.idempotency_key is not None:
        fields.append(("key", clean(job.idempotency_key, None)))
    if job.lease_owner is not None and job.status == JobStatus.PROCESSING:
        fields.append(("lease", f"held by {job.lease_owner}, expires {when(job.lease_expires_at)}"))
    if job.last_error:
        fields.append(("last error", clean(error_summary(job.last_error), 2000)))
    if job.defect:
        fields.append(("cannot run", clean(job.defect, 2000)))
    fields.append(("payload", clean(compact_json(job.payload), 2000)))
    if job.result is not None:
        fields.append(("result", clean(compact_json(job.result), 2000)))
    width = max(len(k) for k, _ in fields)
    lines = [f"{k.ljust(width)}  {v}" for k, v in fields]
    lines.append("")
    lines.append(f"events ({len(events)}):")
    rows = [
        (
            local_iso(e.at),
            str(e.kind),
            e.actor or "-",
            "-" if e.attempt is None else e.attempt,
            clean(compact_json(e.detail), 80) if e.detail else "",
        )
        for e in events
    ]
    lines.append(format_table(("AT", "EVENT", "ACTOR", "ATTEMPT", "DETAIL"), rows))
    return "\n".join(lines)


def stats_dict(stats: QueueStats, now: float) -> dict[str, Any]:
    oldest = stats.oldest_pending_at
    return {
        "counts": stats.counts,
        "by_queue": stats.by_queue,
        "oldest_pending_at": oldest,
        "oldest_pending_age_seconds": None if oldest is None else max(0.0, now - oldest),
        "completed_last_minute": stats.completed_last_minute,
        "failed_last_minute": stats.failed_last_minute,
        "expired_leases": stats.expired_leases,
    }


def stats_text(stats: QueueStats, now: float) -> str:
    statuses = [s.value for s in JobStatus]
    total = sum(stats.counts.values())
    lines = [format_table(("STATUS", "JOBS"), [*[(s, stats.counts.get(s, 0)) for s in statuses], ("total", total)])]
    lines.append("")
    rows = [(q, *[c.get(s, 0) for s in statuses]) for q, c in sorted(stats.by_queue.items())]
    lines.append(format_table(("QUEUE", *statuses), rows) if rows else "no queues yet")
    lines.append("")
    oldest = stats.oldest_pending_at
    waiting = "-" if oldest is None else f"{seconds_text(max(0.0, now - oldest))} (due {local_iso(oldest)})"
    lines.append(f"oldest pending:      {waiting}")
    lines.append(f"completed last min:  {stats.completed_last_minute}")
    lines.append(f"failed last min:     {stats.failed_last_minute}")
    lines.append(f"expired leases:      {stats.expired_leases}")
    return "\n".join(lines)


def worker_state(worker: WorkerInfo, now: float, heartbeat_seconds: float) -> str:
    """``"stopped"`` (said goodbye), ``"alive"`` (heartbeat within 3 periods) or ``"lost"``."""
    if worker.stopped_at is not None:
        return "stopped"
    return "alive" if now - worker.last_seen_at <= ALIVE_HEARTBEATS * heartbeat_seconds else "lost"


def worker_dict(worker: WorkerInfo, now: float, heartbeat_seconds: float) -> dict[str, Any]:
    out = dataclasses.asdict(worker)
    state = worker_state(worker, now, heartbeat_seconds)
    out.update(state=state, alive=state == "alive")
    return out


def workers_table(workers: Sequence[WorkerInfo], now: float, heartbeat_seconds: float) -> str:
    rows = [
        (
            w.name,
            worker_state(w, now, heartbeat_seconds),
            w.host,
            w.pid,
            ",".join(w.queues),
            ago(w.started_at, now),
            ago(w.last_seen_at, now),
            ",".join(map(str, w.current_jobs)) or "-",
            w.jobs_done,
            w.jobs_failed,
            w.id,
        )
        for w in workers
    ]
    headers = ("NAME", "STATE", "HOST", "PID", "QUEUES", "STARTED", "LAST SEEN", "JOBS", "DONE", "FAILED", "ID")
    return format_table(headers, rows)


def parse_payload(text: str) -> Any:
    """The ``--json`` payload, or InvalidPayload with the position of the mistake."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"malformed JSON payload: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


# -- commands ---------------------------------------------------------------------------------------
def _out(text: str) -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(f"jobq: error: {text}", file=sys.stderr, flush=True)


def _optional(module: str, attr: str, command: str) -> Any:
    """Import ``module.attr`` for ``command``, or ConfigError saying the command is not available."""
    try:
        mod = __import__(module, fromlist=[attr])
        return getattr(mod, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"'jobq {command}' is not available: {exc}") from None


def cmd_enqueue(args: argparse.Namespace) -> int:
    if (args.path is None) == (args.payload is None):
        raise InvalidPayload("give either a PATH or --json PAYLOAD (see 'jobq enqueue --help')")
    settings = make_settings(args)
    if args.path is not None:
        submit_file = _optional("jobq.producer", "submit_file", "enqueue PATH")
        with jobq.Queue(settings=settings) as q:
            job_id = submit_file(q, settings, args.path)
        _out(str(job_id))
        return EXIT_OK
    text = sys.stdin.read() if args.payload == "-" else args.payload
    payload = parse_payload(text)
    with jobq.Queue(settings=settings) as q:
        job_id = q.enqueue(
            payload,
            queue=args.queue,
            task=args.task,
            priority=args.priority,
            delay=args.delay,
            key=args.key,
            max_attempts=args.max_attempts,
            timeout=args.timeout,
        )
    _out(str(job_id))
    return EXIT_OK


def _import_path() -> None:
    # A console script does not put the working directory on sys.path (python -m does): add it, so
    # `--handler mytasks:run` finds ./mytasks.py as users expect (celery and rq do the same).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def _logging(settings: jobq.Settings) -> None:
    """Log to stderr; the database password is masked in every line (supervisord keeps these logs)."""
    import logging

    level = os.environ.get("JOBQ_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_logs(settings.database_url, os.environ.get(env_name("database_url")))


def collect_handlers(
    specs: Sequence[tuple[str, str]], imports: Sequence[str], registry: Mapping[str, Any], load: Callable[[str], Any]
) -> dict[str, Any]:
    """Handlers for ``jobq worker``: ``@task`` registrations (after importing ``imports``), then
    the explicit ``--handler`` ones, which win on a name clash."""
    import importlib

    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import {module!r}: {exc}") from None
    handlers = dict(registry)
    for name, spec in specs:
        handlers[name] = load(spec)
    if not handlers:
        raise ConfigError("no handlers: give --handler [NAME=]module:function or --import MODULE")
    return handlers


def cmd_worker(args: argparse.Namespace) -> int:
    settings = make_settings(args)
    _import_path()
    worker_mod = _optional("jobq.worker", "Worker", "worker")
    from jobq.worker import REGISTRY, load_handler

    handlers = collect_handlers(args.handlers, args.imports, REGISTRY, load_handler)
    _logging(settings)
    with jobq.Queue(settings=settings) as q:
        worker = worker_mod(
            q,
            handlers,
            queues=args.queues or None,
            concurrency=settings.concurrency,
            name=args.name,
            exit_when_idle=args.exit_when_idle,
        )
        worker.run()
    return EXIT_OK


def _call_with_name(func: Callable[..., Any], settings: jobq.Settings, name: str | None) -> int:
    """Call ``run_producer``/``run_consumer(settings)``, passing ``name=`` when given."""
    if name is not None:
        if "name" not in inspect.signature(func).parameters:
            raise ConfigError(f"--name is not supported by {func.__module__}.{func.__name__}")
        result = func(settings, name=name)
    else:
        result = func(settings)
    return result if isinstance(result, int) else EXIT_OK


def cmd_producer(args: argparse.Namespace) -> int:
    settings = make_settings(args)
    run = _optional("jobq.producer", "run_producer", "producer")
    _logging(settings)
    return _call_with_name(run, settings, None)


def cmd_consumer(args: argparse.Namespace) -> int:
    settings = make_settings(args)
    run = _optional("jobq.consumer", "run_consumer", "consumer")
    _logging(settings)
    return _call_with_name(run, settings, args.name)


def cmd_web(args: argparse.Namespace) -> int:
    settings = make_settings(args)
    launch = _optional("jobq.web", "launch", args.app)
    # Streamlit runs the app in a new process: hand it the resolved settings through the
    # environment it inherits (flags given here would otherwise be lost).
    os.environ[env_name("database_url")] = settings.database_url
    if settings.operator:
        os.environ[env_name("operator")] = settings.operator
    if args.config:
        os.environ["JOBQ_CONFIG"] = args.config
    launch(args.app, args.port, list(args.extra))
    return EXIT_OK  # launch() normally replaces this process


def cmd_list(args: argparse.Namespace) -> int:
    where = JobFilter(
        statuses=tuple(dict.fromkeys(s for group in args.statuses for s in group)),
        queues=tuple(args.queues),
        tasks=tuple(args.tasks),
        search=args.search or None,
    )
    page = Page(sort=args.sort, descending=not args.asc, limit=args.limit, offset=args.offset)
    with _open(args) as q:
        jobs = q.list(where, page)
        if args.output == "json":
            _out(json.dumps([job_dict(j) for j in jobs], ensure_ascii=False, indent=2))
        elif args.output == "jsonl":
            for j in jobs:
                _out(compact_json(job_dict(j)))
        else:
            total = q.count(where)
            if jobs:
                _out(jobs_table(jobs, time.time()))
                _out(f"{args.offset + 1}-{args.offset + len(jobs)} of {total} jobs")
            else:
                _out(f"no jobs (of {total} matching)" if total else "no jobs")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as q:
        job = q.get(args.job_id)
        events = q.events(args.job_id)
    if args.output == "json":
        _out(
            json.dumps({"job": job_dict(job), "events": [event_dict(e) for e in events]}, ensure_ascii=False, indent=2)
        )
    else:
        _out(job_text(job, events, time.time()))
    return EXIT_OK


def report_actions(results: Sequence[ActionResult]) -> int:
    """One line per job: done ones on stdout, refused or unknown ones as errors on stderr.
    Returns the exit code: 1 when any was refused or not found."""
    code = EXIT_OK
    for r in results:
        if r.ok:
            _out(f"job {r.job_id}: {r.message or 'done'}" + (f" ({r.status.value})" if r.status else ""))
        else:
            _err(r.message or (f"job {r.job_id} not found" if r.status is None else f"job {r.job_id}: refused"))
            code = EXIT_ERROR
    return code


def cmd_retry(args: argparse.Namespace) -> int:
    if args.all_failed and args.job_ids:
        raise ConfigError("give job ids or --all-failed, not both")
    if not args.all_failed and not args.job_ids:
        raise ConfigError("give the ids of the jobs to resubmit, or --all-failed")
    with _open(args) as q:
        if args.all_failed:
            results = q.resubmit_many(where=JobFilter(statuses=(JobStatus.FAILED,)))
            if not results:
                _out("no FAILED jobs")
        else:
            results = q.resubmit_many(ids=list(dict.fromkeys(args.job_ids)))
    return report_actions(results)


def cmd_cancel(args: argparse.Namespace) -> int:
    with _open(args) as q:
        results = q.cancel_many(ids=list(dict.fromkeys(args.job_ids)))
    return report_actions(results)


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as q:
        stats = q.stats()
    now = time.time()
    _out(json.dumps(stats_dict(stats, now), indent=2) if args.output == "json" else stats_text(stats, now))
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    with _open(args) as q:
        workers = q.workers()
        heartbeat = q.settings.heartbeat_seconds
    now = time.time()
    if not args.all:
        workers = [w for w in workers if worker_state(w, now, heartbeat) == "alive"]
    if args.output == "json":
        _out(json.dumps([worker_dict(w, now, heartbeat) for w in workers], indent=2))
    elif workers:
        _out(workers_table(workers, now, heartbeat))
    else:
        _out("no workers registered" if args.all else "no live workers (--all shows stopped and lost ones)")
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    statuses = tuple(dict.fromkeys(s for group in args.statuses for s in group)) or (JobStatus.COMPLETED,)
    with _open(args) as q:
        count = q.purge(older_than=args.older_than, statuses=statuses)
    _out(f"purged {count} job{'' if count == 1 else 's'} ({', '.join(s.value for s in statuses)}, "
         f"finished more than {seconds_text(args.older_than)} ago)")  # fmt: skip
    return EXIT_OK


def cmd_rescue(args: argparse.Namespace) -> int:
    with _open(args) as q:
        results = q.rescue_expired(actor=f"{default_actor(q.settings)} (jobq rescue)")
    for r in results:
        owner = f", was held by {r.previous_owner}" if r.previous_owner else ""
        _out(f"job {r.job_id}: {r.outcome}{owner}")
    if not results:
        _out("no expired leases")
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    try:
        import apsw

        sqlite = f", SQLite {apsw.sqlite_lib_version()} (apsw {apsw.apsw_version()})"
    except ImportError:
        sqlite = ""
    _out(f"jobq {jobq.__version__} (Python {sys.version.split()[0]}{sqlite})")
    return EXIT_OK


# -- entry point ------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jobq`` command line; returns the exit code (argparse exits 2 itself on bad usage)."""
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except JobqError as exc:
        _err(redact_text(clean(str(exc), None), *database_urls(args)))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `jobq list | head`: the reader left. Point stdout at /dev/null so that the interpreter's
        # final flush does not raise again, and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception:  # noqa: BLE001 - a bug: keep its traceback for the report, minus the password
        sys.stderr.write(redact_text(traceback.format_exc(), *database_urls(args)))
        return EXIT_ERROR


def database_urls(args: argparse.Namespace) -> list[str]:
    """Every database URL this invocation may have used, for masking their passwords in errors:
    the ``--db`` flag, ``JOBQ_DATABASE_URL`` and the one the settings resolve to (config file)."""
    urls = [u for u in (getattr(args, "db", None), os.environ.get(env_name("database_url"))) if u]
    # The error being reported may be the settings' own; the flag and the environment are covered.
    with contextlib.suppress(JobqError):
        urls.append(make_settings(args).database_url)
    return urls


if __name__ == "__main__":
    sys.exit(main())
