"""Copies of a SQLite queue: ``backup`` (while it runs) and ``restore`` (with every process
stopped). ``jobq.backends.sqlite.copies`` says what each does and why."""

from __future__ import annotations

import argparse
import dataclasses
import json

import jobq
from jobq.cli.args import file_arg
from jobq.cli.output import clean, err, out
from jobq.cli.parser import EXIT_OK, AddCommand, json_options, make_settings


def add_backup(command: AddCommand) -> None:
    p = command(
        "backup",
        cmd_backup,
        "copy a SQLite queue to a new file while producers and workers run (the copy holds every payload)",
    )
    p.add_argument("dest", type=file_arg, metavar="FILE", help="the new file (never overwritten)")
    p.add_argument(
        "--compact",
        action="store_true",
        help="leave out the space purged jobs left (slower; restore the copy to shrink the queue's file)",
    )
    json_options(p)


def cmd_backup(args: argparse.Namespace) -> int:
    copy = jobq.backup(args.dest, settings=make_settings(args), compact=args.compact)
    if args.output == "json":
        out(json.dumps(dataclasses.asdict(copy), indent=2))
        return EXIT_OK
    out(f"backed up {_jobs(copy)} to {clean(copy.path, None)} ({_size(copy.size_bytes)}), as the queue "
        "stood at one commit; it holds every payload: keep it private")  # fmt: skip
    return EXIT_OK


def add_restore(command: AddCommand) -> None:
    p = command(
        "restore",
        cmd_restore,
        "put a backup in place of a SQLite queue (stop every process using it first; the replaced file is kept)",
    )
    p.add_argument("source", type=file_arg, metavar="FILE", help="a backup made by jobq backup")
    json_options(p)


def cmd_restore(args: argparse.Namespace) -> int:
    copy = jobq.restore(args.source, settings=make_settings(args))
    if args.output == "json":
        out(json.dumps(dataclasses.asdict(copy), indent=2))
        return EXIT_OK
    lines = [f"restored {clean(copy.path, None)} from {clean(args.source, None)}: {_jobs(copy)}"]
    if copy.replaced is None:
        lines.append("no queue was there before")
    else:
        lines.append(f"the replaced queue is kept as {clean(copy.replaced, None)}")
    if copy.ids_above:
        lines.append(f"new jobs get ids above {copy.ids_above:,}, the newest the replaced queue handed out")
    out("\n".join(lines))
    if copy.replaced is not None and copy.ids_above is None:
        err(
            "the replaced queue could not be read: ids of jobs made after the backup may be handed out again",
            "warning",
        )
    return EXIT_OK


def _jobs(copy: jobq.QueueCopy) -> str:
    newest = f" (newest id {copy.newest_id:,})" if copy.jobs else ""
    return f"{copy.jobs:,} job{'' if copy.jobs == 1 else 's'}{newest}"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"
