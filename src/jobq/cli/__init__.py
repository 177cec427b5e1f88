"""The ``jobq`` command: enqueue, run workers, inspect and act on jobs.

Every command takes ``--db URL`` (env ``JOBQ_DATABASE_URL``, default ``sqlite:///data/queue.db``).
Settings are layered like everywhere in jobq: ``jobq.toml`` < ``JOBQ_*`` environment < flags, so
an option left unset never hides the environment or the file (its argparse default is None).

Output is a plain aligned table for people and JSON (``--json``) for scripts; in JSON, times are
UNIX seconds. Every error a user can cause prints one line, ``jobq: error: ...``, on stderr with no
traceback: exit 1 for a failed command, 2 for bad usage, 130 after Ctrl-C.

Where things are:

- ``parser.py``: exit codes, the top-level parser, the options every command takes, flags -> settings
- ``args.py``: argument types (integers in the databases' range, durations, statuses, job ids)
- ``output.py``: the text and JSON that ``list``, ``show``, ``stats`` and ``workers`` print
- ``jobs.py``: ``enqueue``, ``list``, ``show``, ``retry``, ``cancel``, ``move``, ``purge``
- ``monitor.py``: ``stats``, ``workers``, ``rescue``, ``version``
- ``schedules.py``: ``schedules`` (list, add, pause, resume, remove periodic jobs)
- ``flow.py``: ``pause``, ``resume``, ``limit``, ``limits`` (flow control of queues)
- ``copies.py``: ``backup``, ``restore`` (SQLite)
- ``processes.py``: ``worker``, ``producer``, ``consumer``, ``manager``, ``ops`` (they run until stopped)

Each command's options are added right before its handler, by an ``add_<command>`` function.
Heavy or optional parts (the worker runtime, the demo's producer/consumer, the web apps) are
imported inside their commands, so ``jobq list`` stays fast and works without the extras.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from jobq.cli import copies, flow, jobs, monitor, processes, schedules
from jobq.cli.output import clean, err
from jobq.cli.parser import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Command,
    make_settings,
    top_parser,
)
from jobq.config import env_name
from jobq.errors import JobqError
from jobq.payloads import is_unicode
from jobq.redact import redact_text


def build_parser() -> argparse.ArgumentParser:
    """The whole ``jobq`` command line (pure: no I/O, no database).

    Commands are added in the order ``jobq --help`` lists them: submit, run, inspect, act, maintain.
    """
    parser, command = top_parser()
    jobs.add_enqueue(command)
    processes.add_worker(command)
    processes.add_producer(command)
    processes.add_consumer(command)
    processes.add_web_apps(command)
    jobs.add_list(command)
    jobs.add_show(command)
    jobs.add_retry(command)
    jobs.add_cancel(command)
    jobs.add_move(command)
    monitor.add_stats(command)
    monitor.add_workers(command)
    processes.add_metrics(command)
    schedules.add_schedules(command)
    flow.add_pause(command)
    flow.add_limit(command)
    flow.add_limits(command)
    jobs.add_purge(command)
    copies.add_backup(command)
    copies.add_restore(command)
    monitor.add_rescue(command)
    monitor.add_version(command)
    return parser


class _WarningLines(logging.Handler):
    """jobq's own warnings while a short command runs (a write waiting for a lock someone holds)
    as ``jobq: warning: ...`` lines on stderr, as the CLI's other notes are; they were printed bare
    by Python's last-resort handler. A command that sets up logging (a worker, the producer) logs
    them in its own format instead: nothing is printed here once the root logger has a handler."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        err(clean(record.getMessage(), None), "error" if record.levelno >= logging.ERROR else "warning")


def _warning_lines() -> None:
    jobq_log = logging.getLogger("jobq")
    if not any(isinstance(h, _WarningLines) for h in jobq_log.handlers):
        jobq_log.addHandler(_WarningLines(logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jobq`` command line; returns the exit code (argparse exits 2 itself on bad usage)."""
    _warning_lines()
    undecodable = _not_utf8(sys.argv[1:] if argv is None else argv)
    if undecodable:
        err(f"{undecodable} is not UTF-8 text")
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except JobqError as exc:
        err(redact_text(clean(str(exc), None), *database_urls(args)))
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


def _not_utf8(argv: Sequence[str]) -> str | None:
    """The first argument or ``JOBQ_*`` variable holding bytes that are not UTF-8, named; None if
    none does. Python hands such bytes over as lone surrogates, which no name, payload or path of
    jobq's may hold: each reached a different place (SQLite, a socket, a file name) and ended in
    a UnicodeEncodeError traceback there, or a worker looping on it."""
    for i, arg in enumerate(argv, start=1):
        if not is_unicode(arg):
            return f"argument {i} ({os.fsencode(arg).decode(errors='backslashreplace')[:80]})"
    for name, value in sorted(os.environ.items()):
        if name.startswith("JOBQ_") and not is_unicode(value):
            return f"the environment variable {name}"
    return None


def database_urls(args: argparse.Namespace) -> list[str]:
    """Every database URL this invocation may have used, for masking their passwords in errors:
    the ``--db`` flag, ``JOBQ_DATABASE_URL`` and the one the settings resolve to (config file)."""
    urls = [u for u in (getattr(args, "db", None), os.environ.get(env_name("database_url"))) if u]
    # The error being reported may be the settings' own; the flag and the environment are covered.
    with contextlib.suppress(JobqError):
        urls.append(make_settings(args).database_url)
    return urls


__all__ = ["build_parser", "main"]
