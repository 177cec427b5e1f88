"""``jobq schedules``: list, show, add, pause, resume and remove periodic jobs (``jobq.schedules``)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import jobq
from jobq.backends.base import ScheduleAction, ScheduleInfo
from jobq.cli.output import format_table, local_iso, out
from jobq.cli.parser import EXIT_OK, AddCommand, actor_option, json_options, make_settings, open_queue
from jobq.errors import ConfigError, ScheduleNotFound
from jobq.payloads import loads, parse_json
from jobq.present import ago
from jobq.schedules import CATCHUP_CHOICES, expression_of


def add_schedules(command: AddCommand) -> None:
    p = command("schedules", cmd_schedules, "periodic jobs: list them, or show, add, pause, resume, remove one")
    p.add_argument("action", nargs="?", default="list", choices=["list", "show", "add", "pause", "resume", "remove"])
    p.add_argument("name", nargs="?", help="the schedule (show, pause, resume, remove, add)")
    p.add_argument("--task", help="add: the task its jobs run")
    p.add_argument("--cron", help="add: a cron expression, e.g. '*/5 * * * *'")
    p.add_argument("--every", help="add: an interval instead, e.g. 30s, 5m, 1h")
    p.add_argument("--zone", default="UTC", help="add: IANA time zone of the cron expression (default UTC)")
    p.add_argument("--queue", dest="job_queue", help="add: the queue of its jobs (default: the settings' queue)")
    p.add_argument("--payload", metavar="JSON", help="add: the payload of its jobs (default: the schedule and slot)")
    p.add_argument("--catchup", choices=CATCHUP_CHOICES, default="latest", help="add: after downtime (default latest)")
    p.add_argument("--no-overlap", action="store_true", help="add: skip a slot while the previous job is active")
    actor_option(p)
    json_options(p)


def schedule_dict(s: ScheduleInfo) -> dict[str, object]:
    data = dataclasses.asdict(s)
    data["payload"] = loads(s.payload_json)  # never raises: a row written by hand is shown as text
    del data["payload_json"]
    data["expression"] = expression_of(s.cron, s.every)
    return data


def schedules_table(schedules: list[ScheduleInfo], now: float) -> str:
    rows = [
        (
            s.name,
            expression_of(s.cron, s.every),
            s.zone,
            s.task,
            "-" if s.paused else local_iso(s.next_run_at),
            "-" if s.last_run_at is None else f"{local_iso(s.last_run_at)} ({ago(s.last_run_at, now)})",
            f"yes (by {s.paused_by})" if s.paused else "no",
        )
        for s in schedules
    ]
    return format_table(("NAME", "EXPRESSION", "ZONE", "TASK", "NEXT RUN", "LAST RUN", "PAUSED"), rows)


def action_dict(a: ScheduleAction) -> dict[str, object]:
    return {"action": a.action, "actor": a.actor, "at": a.at}


def show_text(s: ScheduleInfo, history: list[ScheduleAction], now: float) -> str:
    """One schedule, then its pause/resume history (newest first): who, when, what."""
    fields = [
        ("name", s.name),
        ("expression", expression_of(s.cron, s.every)),
        ("zone", s.zone),
        ("task", s.task),
        ("queue", s.queue),
        ("next run", "-" if s.paused else local_iso(s.next_run_at)),
        ("last run", "-" if s.last_run_at is None else f"{local_iso(s.last_run_at)} ({ago(s.last_run_at, now)})"),
        ("paused", f"yes (by {s.paused_by})" if s.paused else "no"),
    ]
    lines = [f"{k + ':':<12}{v}" for k, v in fields]
    if not history:
        return "\n".join([*lines, "", "never paused or resumed"])
    rows = [(local_iso(a.at), a.action, a.actor) for a in history]
    return "\n".join([*lines, "", format_table(("WHEN", "ACTION", "BY"), rows)])


#: The options only ``add`` takes, and their defaults (given to another action, they were ignored).
_ADD_ONLY = {
    "task": None, "cron": None, "every": None, "zone": "UTC", "job_queue": None, "payload": None,
    "catchup": "latest", "no_overlap": False,
}  # fmt: skip


def cmd_schedules(args: argparse.Namespace) -> int:
    if args.action == "list" and args.name:
        raise ConfigError(f"schedules list takes no name (did you mean 'schedules show {args.name}'?)")
    if args.action != "list" and not args.name:
        raise ConfigError(f"schedules {args.action}: give the schedule's name")
    if args.action != "add":
        given = [k for k, default in _ADD_ONLY.items() if getattr(args, k) != default]
        if given:
            option = "--queue" if given[0] == "job_queue" else "--" + given[0].replace("_", "-")
            raise ConfigError(f"schedules {args.action}: {option} applies to 'schedules add' only")
    # add creates the queue's database like enqueue does; the others need one that exists.
    with jobq.Queue(settings=make_settings(args)) if args.action == "add" else open_queue(args) as q:
        if args.action == "add":
            if not args.task:
                raise ConfigError("schedules add: give --task")
            payload = None if args.payload is None else parse_json(args.payload)
            before = next((s for s in q.schedules() if s.name == args.name), None)
            info = q.add_schedule(
                args.name,
                task=args.task,
                cron=args.cron,
                every=args.every,
                zone=args.zone,
                queue=args.job_queue,
                payload=payload,
                catchup=args.catchup,
                overlap=not args.no_overlap,
            )
            # Saying which: a schedule of that name is replaced, its old timing gone without a word.
            was = "added" if before is None else f"replaced ({expression_of(before.cron, before.every)} before)"
            out(f"schedule {info.name}: {was}, next run {local_iso(info.next_run_at)}")
        elif args.action == "pause":
            q.pause_schedule(args.name)
            out(f"schedule {args.name}: paused")
        elif args.action == "resume":
            q.resume_schedule(args.name)
            out(f"schedule {args.name}: resumed")
        elif args.action == "show":
            found = [s for s in q.schedules() if s.name == args.name]
            if not found:
                raise ScheduleNotFound(args.name)
            history = q.schedule_history(args.name)
            if args.output == "json":
                out(json.dumps({**schedule_dict(found[0]), "history": [action_dict(a) for a in history]}, indent=2))
            else:
                out(show_text(found[0], history, q.wall_time()))
        elif args.action == "remove":
            q.remove_schedule(args.name)
            out(f"schedule {args.name}: removed")
        else:
            schedules = q.schedules()
            if args.output == "json":
                out(json.dumps([schedule_dict(s) for s in schedules], indent=2))
            else:
                out(schedules_table(schedules, q.wall_time()) if schedules else "no schedules")
    return EXIT_OK
