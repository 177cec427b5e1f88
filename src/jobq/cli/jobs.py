"""Commands on jobs: ``enqueue``, ``list``, ``show``, ``retry``, ``cancel``, ``move``, ``purge``.

Each command's options come right before its handler. Commands that read or act on existing jobs
open the queue with ``create=False``: a mistyped ``--db`` is an error, not a new empty queue.
Whether an operator action is legal is decided by the store (``jobq.job.operator_actions``);
a refusal is reported per job on stderr and makes the exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence

import jobq
from jobq.backends.base import SORT_FIELDS, ActionResult, ActionResults, JobFilter, Page
from jobq.cli.args import (
    attempts_arg,
    backoff_arg,
    duration_arg,
    job_id_arg,
    non_negative_int_arg,
    positive_int_arg,
    priority_arg,
    status_arg,
)
from jobq.cli.output import clean, compact_json, err, event_dict, job_dict, job_text, jobs_table, out
from jobq.cli.parser import (
    EXIT_ERROR,
    EXIT_OK,
    AddCommand,
    actor_option,
    env_help,
    json_options,
    make_settings,
    open_queue,
)
from jobq.errors import ConfigError, InvalidPayload
from jobq.job import JobStatus
from jobq.payloads import parse_json
from jobq.present import duration_text
from jobq.queue import purged_statuses

LIST_LIMIT_DEFAULT = 50
LIST_COUNT_UP_TO = 100_000
"""Most matching jobs ``jobq list``'s footer counts exactly ("1-50 of 100,000+ jobs" past it)."""


# -- enqueue ----------------------------------------------------------------------------------------
def add_enqueue(command: AddCommand) -> None:
    p = command("enqueue", cmd_enqueue, "submit a job and print its id")
    p.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="a file under the data directory: the demo's file job (stamped by consumers)",
    )
    p.add_argument("--json", dest="payload", metavar="JSON", help="the payload as JSON; '-' reads it from stdin")
    p.add_argument("--queue", "-q", metavar="NAME", help=env_help("queue name", "queue", "default"))
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
        help=env_help("attempts before FAILED", "max_attempts", 3),
    )
    p.add_argument(
        "--timeout", metavar="DURATION", type=duration_arg, help="longest a run may take: 30s, 5m (default: the task's)"
    )
    p.add_argument(
        "--backoff",
        metavar="DURATIONS",
        type=backoff_arg,
        help="delay before each retry: 10s, or per attempt 1s,10s,1m (default: the task's, then exponential)",
    )
    p.add_argument(
        "--retry-on",
        metavar="EXCEPTION",
        action="append",
        help="retry only these exceptions, by qualified name (repeat it; a bare name is a built-in): "
        "mymod.Flaky, TimeoutError (default: the task's, then every exception)",
    )
    p.add_argument(
        "--concurrency-key",
        metavar="KEY",
        help="jobs of one key share the queue's per-key limit (jobq limit QUEUE --per-key N)",
    )


_JSON_ONLY_OPTIONS = (
    ("task", "--task"),
    ("priority", "--priority"),
    ("delay", "--delay"),
    ("key", "--key"),
    ("max_attempts", "--max-attempts"),
    ("timeout", "--timeout"),
    ("backoff", "--backoff"),
    ("retry_on", "--retry-on"),
    ("concurrency_key", "--concurrency-key"),
)
"""(argparse dest, option) of what ``jobq enqueue --json`` takes and ``jobq enqueue PATH`` does not."""


def _stdin_payload(limit: int) -> str:
    """The payload piped in (``--json -``), read no further than past ``limit`` bytes (a stream
    without end, ``< /dev/zero``, was read whole: 7 GB of memory in 10 s)."""
    if sys.stdin is None:  # started with stdin closed (<&-)
        raise InvalidPayload("--json -: there is no standard input to read the payload from")
    text = sys.stdin.read(limit + 1)  # characters: each at least one byte
    if len(text) > limit:
        raise InvalidPayload(f"payload is over the limit of {limit} bytes (read from standard input)")
    return text


def cmd_enqueue(args: argparse.Namespace) -> int:
    if (args.path is None) == (args.payload is None):
        raise InvalidPayload("give either a PATH or --json PAYLOAD (see 'jobq enqueue --help')")
    settings = make_settings(args)
    if args.path is not None:
        from jobq.demo.producer import submit_file

        # A file job is the producer's: its task, key and policy are the demo's. Options that
        # would not apply were silently dropped (--priority 5 --delay 1h ran at once, priority 0).
        ignored = [option for dest, option in _JSON_ONLY_OPTIONS if getattr(args, dest) not in (None, "", 0)]
        if ignored:
            raise ConfigError(f"jobq enqueue PATH takes --queue only, not {', '.join(ignored)} (use --json for those)")
        with jobq.Queue(settings=settings) as q:
            try:
                job_id = submit_file(q, settings, args.path, on_conflict="raise")
            except jobq.DuplicateJob as exc:  # the id still goes to stdout: scripts read it
                job_id = _held(exc, f"{clean(args.path, None)} is job {exc.job_id} already")
        out(str(job_id))
        return EXIT_OK
    text = _stdin_payload(settings.payload_limit_bytes) if args.payload == "-" else args.payload
    payload = parse_json(text)
    with jobq.Queue(settings=settings) as q:
        try:
            job_id = q.enqueue(
                payload,
                queue=args.queue,
                task=args.task,
                priority=args.priority,
                delay=args.delay,
                key=args.key,
                max_attempts=args.max_attempts,
                timeout=args.timeout,
                concurrency_key=args.concurrency_key,
                backoff=None if args.backoff is None else (args.backoff[0] if len(args.backoff) == 1 else args.backoff),
                retry_on=args.retry_on,
                on_conflict="raise",
            )
        except jobq.DuplicateJob as exc:
            job_id = _held(exc, f"key {clean(exc.key, None)!r} is held by job {exc.job_id}")
    out(str(job_id))
    return EXIT_OK


def _held(exc: jobq.DuplicateJob, what: str) -> int:
    """The id of the job that holds the key (printed: a script reads it as before), with a note on
    stderr that nothing new was enqueued: a payload that differs from the holder's was dropped."""
    again = f"a finished job runs again with jobq retry {exc.job_id}"
    err(f"{what}, nothing new was enqueued ({again})", "note")
    return exc.job_id


def _add_status_option(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument(
        "--status",
        "-s",
        metavar="STATUS",
        dest="statuses",
        action="append",
        type=status_arg,
        default=[],
        help=help_text,
    )


def _add_filter_options(p: argparse.ArgumentParser, status_help: str) -> None:
    """The job filter ``list``, ``retry`` and ``cancel`` share (the manager's filters, too)."""
    _add_status_option(p, status_help)
    p.add_argument(
        "--queue", "-q", metavar="NAME", dest="queues", action="append", default=[], help="only this queue (repeatable)"
    )
    p.add_argument(
        "--task", "-t", metavar="NAME", dest="tasks", action="append", default=[], help="only this task (repeatable)"
    )
    p.add_argument("--search", metavar="TEXT", help="case-insensitive text the payload contains")
    p.add_argument("--error", metavar="TEXT", help="case-insensitive text the last error contains")
    p.add_argument(
        "--created-within", metavar="DURATION", type=duration_arg, help="created in the last DURATION: 1h, 30m, 7d"
    )
    p.add_argument(
        "--finished-within", metavar="DURATION", type=duration_arg, help="finished in the last DURATION: 1h, 30m, 7d"
    )


def _filter(args: argparse.Namespace, now: float, default_statuses: tuple[JobStatus, ...] = ()) -> JobFilter:
    return JobFilter(
        statuses=_statuses(args) or default_statuses,
        queues=tuple(args.queues),
        tasks=tuple(args.tasks),
        search=args.search or None,
        error=args.error or None,
        created_after=now - args.created_within if args.created_within is not None else None,
        finished_after=now - args.finished_within if args.finished_within is not None else None,
    )


def _filtered(args: argparse.Namespace) -> bool:
    """Whether any filter option was given (retry and cancel then act on the matching jobs)."""
    return bool(
        args.statuses or args.queues or args.tasks or args.search or args.error
        or args.created_within is not None or args.finished_within is not None
    )  # fmt: skip


# -- list -------------------------------------------------------------------------------------------
def add_list(command: AddCommand) -> None:
    p = command("list", cmd_list, "list jobs, newest first")
    _add_filter_options(p, "only these statuses (repeatable or comma-separated, any case)")
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
    json_options(p, lines=True)


def _statuses(args: argparse.Namespace) -> tuple[JobStatus, ...]:
    """The ``--status`` options of ``list`` and ``purge``, flattened, each once, in order."""
    return tuple(dict.fromkeys(s for group in args.statuses for s in group))


def cmd_list(args: argparse.Namespace) -> int:
    where = _filter(args, time.time())  # checked before the database is opened
    page = Page(sort=args.sort, descending=not args.asc, limit=args.limit, offset=args.offset)
    with open_queue(args) as q:
        if q.clock_offset:  # --created-within counts back from the store's now, as its times are
            where = _filter(args, q.wall_time())
        jobs = q.list(where, page)
        if args.output == "json":
            out(json.dumps([job_dict(j) for j in jobs], ensure_ascii=False, indent=2))
        elif args.output == "jsonl":
            for j in jobs:
                out(compact_json(job_dict(j)))
        else:
            # The footer's count stops past LIST_COUNT_UP_TO: counting every match read all of
            # them (0.9 s for 10,000,000 COMPLETED jobs), for a figure nobody needs exactly.
            shown = args.offset + len(jobs) if jobs else 0
            total = max(q.count(where, up_to=LIST_COUNT_UP_TO + 1), shown)  # jobs may go in between
            matching = f"{max(LIST_COUNT_UP_TO, shown):,}+" if total > LIST_COUNT_UP_TO else f"{total:,}"
            if jobs:
                out(jobs_table(jobs, q.wall_time()))
                out(f"{args.offset + 1:,}-{shown:,} of {matching} jobs")
            else:
                out(f"no jobs (of {matching} matching)" if total else "no jobs")
    return EXIT_OK


# -- show -------------------------------------------------------------------------------------------
def add_show(command: AddCommand) -> None:
    p = command("show", cmd_show, "show a job and its event history")
    p.add_argument("job_id", type=job_id_arg, metavar="ID")
    json_options(p)


def cmd_show(args: argparse.Namespace) -> int:
    with open_queue(args) as q:
        job = q.get(args.job_id)
        events = q.events(args.job_id)
        progress = q.progress_of([job.id]).get(job.id)
    if args.output == "json":
        data = {
            "job": job_dict(job),
            "progress": None if progress is None else dataclasses.asdict(progress),
            "events": [event_dict(e) for e in events],
        }
        out(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        out(job_text(job, events, q.wall_time(), progress))
    return EXIT_OK


# -- retry / cancel ---------------------------------------------------------------------------------
ACTION_LINES_MAX = 20
"""A filtered action on more jobs than this reports a line per outcome with its count, and at most
this many of its refusals (a cancel of 1,000,000 PENDING jobs printed 1,000,000 lines)."""


def report_actions(results: Sequence[ActionResult], *, filtered: bool = False) -> int:
    """One line per job: done ones on stdout, refused or unknown ones as errors on stderr; a
    ``filtered`` action on more than ``ACTION_LINES_MAX`` jobs: one line per outcome, with how
    many jobs had it (the ids named on the command line are each reported). Returns the exit
    code: 1 when any was refused or not found."""
    summed = filtered and len(results) > ACTION_LINES_MAX
    done: dict[str, int] = {}
    refused = 0
    for r in results:
        if r.ok:
            line = (r.message or "done") + (f" ({r.status.value})" if r.status else "")
            if summed:
                done[line] = done.get(line, 0) + 1
            else:
                out(f"job {r.job_id}: {line}")
        else:
            refused += 1
            if not summed or refused <= ACTION_LINES_MAX:
                err(r.message or (f"job {r.job_id} not found" if r.status is None else f"job {r.job_id}: refused"))
    for line, n in done.items():
        out(f"{n:,} job{'' if n == 1 else 's'}: {line}")
    if summed and refused > ACTION_LINES_MAX:
        err(f"... and {refused - ACTION_LINES_MAX:,} more refused")
    return EXIT_ERROR if refused else EXIT_OK


def add_retry(command: AddCommand) -> None:
    # The help of retry and cancel names the statuses jobq.job.operator_actions allows (a unit test checks).
    p = command("retry", cmd_retry, "resubmit FAILED, CANCELLED or COMPLETED jobs (back to PENDING)")
    p.add_argument("job_ids", type=job_id_arg, nargs="*", metavar="ID")
    p.add_argument("--all-failed", action="store_true", help="resubmit every FAILED job")
    _add_filter_options(p, "with filters: these statuses (default FAILED)")
    actor_option(p)


def cmd_retry(args: argparse.Namespace) -> int:
    filtered = args.all_failed or _filtered(args)
    if filtered and args.job_ids:
        raise ConfigError("give job ids or filters (--all-failed, --queue, --error, ...), not both")
    if not filtered and not args.job_ids:
        raise ConfigError("give the ids of the jobs to resubmit, --all-failed, or filters (--queue, --error, ...)")
    with open_queue(args) as q:
        if filtered:
            results = q.resubmit_many(where=_filter(args, q.wall_time(), (JobStatus.FAILED,)))
            if not results:
                out("no FAILED jobs" if args.all_failed and not _filtered(args) else "no matching jobs")
        else:
            results = q.resubmit_many(ids=list(dict.fromkeys(args.job_ids)))
    return report_actions(results, filtered=filtered)


def add_cancel(command: AddCommand) -> None:
    p = command("cancel", cmd_cancel, "cancel PENDING or FAILED jobs; a PROCESSING job is asked to stop")
    p.add_argument("job_ids", type=job_id_arg, nargs="*", metavar="ID")
    _add_filter_options(p, "with filters: these statuses (default PENDING)")
    actor_option(p)


def cmd_cancel(args: argparse.Namespace) -> int:
    return _by_ids_or_filter(args, "cancel", lambda q, **target: q.cancel_many(**target))


def _by_ids_or_filter(args: argparse.Namespace, verb: str, act: Callable[..., ActionResults]) -> int:
    """``cancel`` and ``move``: ``act(q, ids=...)`` or ``act(q, where=...)`` (the filters,
    PENDING unless ``--status`` says otherwise), never both; the report of each job."""
    filtered = _filtered(args)
    if filtered and args.job_ids:
        raise ConfigError("give job ids or filters (--queue, --error, ...), not both")
    if not filtered and not args.job_ids:
        raise ConfigError(f"give the ids of the jobs to {verb}, or filters (--queue, --status, ...)")
    with open_queue(args) as q:
        if filtered:
            results = act(q, where=_filter(args, q.wall_time(), (JobStatus.PENDING,)))
            if not results:
                out("no matching jobs")
        else:
            results = act(q, ids=list(dict.fromkeys(args.job_ids)))
    return report_actions(results, filtered=filtered)


def add_move(command: AddCommand) -> None:
    p = command("move", cmd_move, "move PENDING, FAILED or CANCELLED jobs to another queue (out of a mistyped one)")
    p.add_argument("job_ids", type=job_id_arg, nargs="*", metavar="ID")
    p.add_argument("--to", required=True, metavar="QUEUE", help="the queue to move them to")
    _add_filter_options(p, "with filters: these statuses (default PENDING)")
    actor_option(p)


def cmd_move(args: argparse.Namespace) -> int:
    return _by_ids_or_filter(args, "move", lambda q, **target: q.move_many(args.to, **target))


# -- purge ------------------------------------------------------------------------------------------
def add_purge(command: AddCommand) -> None:
    p = command("purge", cmd_purge, "delete finished jobs (and their events) older than a duration")
    p.add_argument("--older-than", type=duration_arg, required=True, metavar="DURATION", help="e.g. 7d, 12h")
    _add_status_option(p, "statuses to purge (repeatable or comma-separated; default COMPLETED)")
    p.add_argument(
        "--limit",
        metavar="N",
        type=positive_int_arg,
        help="at most N jobs, those that finished first (default: every match; a purge runs in "
        "chunks, and one stopped keeps the chunks it committed)",
    )


def cmd_purge(args: argparse.Namespace) -> int:
    statuses = _statuses(args) or (JobStatus.COMPLETED,)
    try:
        purged_statuses(statuses)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with open_queue(args) as q:
        count = q.purge(older_than=args.older_than, statuses=statuses, limit=args.limit)
    more = "; the limit: more may be left" if count == args.limit else ""
    out(f"purged {count:,} job{'' if count == 1 else 's'} ({', '.join(s.value for s in statuses)}, "
        f"finished more than {duration_text(args.older_than)} ago{more})")  # fmt: skip
    return EXIT_OK
