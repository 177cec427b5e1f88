"""How the queue and its workers are doing: ``stats``, ``workers``, ``rescue``, ``version``.

``rescue`` is the one repair an operator may run by hand; every worker runs the same pass on its
own every few seconds. A worker is alive, lost, crashed or stopped as ``jobq.present.worker_state``
says, the same words the ops app shows.
"""

from __future__ import annotations

import argparse
import json
import sys

import jobq
from jobq.cli.output import clean, out, stats_dict, stats_text, worker_dict, workers_table
from jobq.cli.parser import EXIT_OK, AddCommand, json_options, open_queue
from jobq.present import WorkerState, worker_state
from jobq.queue import default_actor


# -- stats ------------------------------------------------------------------------------------------
def add_stats(command: AddCommand) -> None:
    p = command("stats", cmd_stats, "counts by status and queue, oldest pending, throughput, expired leases")
    json_options(p)


def cmd_stats(args: argparse.Namespace) -> int:
    with open_queue(args) as q:
        stats = q.stats()
        blockers = q.blockers()  # why jobs stand still, when something holds up the writes
    now = q.wall_time()  # the store's times are the server's (Queue.clock_offset)
    if args.output == "json":
        out(json.dumps({**stats_dict(stats, now), "blockers": blockers}, indent=2))
    else:
        out(stats_text(stats, now) + "".join(f"\nwrites held up by: {clean(b, None)}" for b in blockers))
    return EXIT_OK


# -- workers ----------------------------------------------------------------------------------------
def add_workers(command: AddCommand) -> None:
    p = command("workers", cmd_workers, "registered worker processes and whether they are alive")
    p.add_argument("--all", action="store_true", help="include stopped, crashed and lost workers (default: alive only)")
    json_options(p)


def cmd_workers(args: argparse.Namespace) -> int:
    with open_queue(args) as q:
        workers = q.workers()
        heartbeat = q.settings.heartbeat_seconds
    now = q.wall_time()  # the registry's times are the store's (Queue.clock_offset)
    if not args.all:
        workers = [w for w in workers if worker_state(w, now, heartbeat) == WorkerState.ALIVE]
    if args.output == "json":
        out(json.dumps([worker_dict(w, now, heartbeat) for w in workers], indent=2))
    elif workers:
        out(workers_table(workers, now, heartbeat))
    else:
        out("no workers registered" if args.all else "no live workers (--all shows stopped, crashed and lost ones)")
    return EXIT_OK


# -- rescue -----------------------------------------------------------------------------------------
def add_rescue(command: AddCommand) -> None:
    command("rescue", cmd_rescue, "run one rescue pass: jobs whose lease expired go back to PENDING")


def cmd_rescue(args: argparse.Namespace) -> int:
    with open_queue(args) as q:
        results = q.rescue_expired(actor=f"{default_actor(q.settings)} (jobq rescue)")
    for r in results:
        owner = f", was held by {r.previous_owner}" if r.previous_owner else ""
        out(f"job {r.job_id}: {r.outcome}{owner}")
    if not results:
        out("no expired leases")
    return EXIT_OK


# -- version ----------------------------------------------------------------------------------------
def add_version(command: AddCommand) -> None:
    command("version", cmd_version, "print the jobq and SQLite versions")


def cmd_version(args: argparse.Namespace) -> int:
    import apsw  # a core dependency; imported here so that other commands do not load it for PostgreSQL

    sqlite = f"SQLite {apsw.sqlite_lib_version()} (apsw {apsw.apsw_version()})"
    out(f"jobq {jobq.__version__} (Python {sys.version.split()[0]}, {sqlite})")
    return EXIT_OK
