"""Flow control (docs/flow-control.md): ``pause``, ``resume``, ``limit`` and ``limits``.

Every change is stored in the database (every worker on every host follows it at its next claim)
and recorded with who made it (``--actor``, env ``JOBQ_OPERATOR``) in the queue's history, which
``jobq limits`` shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from jobq.backends.base import ControlEvent, QueueControl
from jobq.cli.args import positive_int_arg
from jobq.cli.output import clean, err, format_table, local_iso, out
from jobq.cli.parser import EXIT_OK, AddCommand, actor_option, json_options, make_settings, open_queue
from jobq.errors import ConfigError
from jobq.flow import format_rate, parse_rate
from jobq.present import ago
from jobq.queue import KEEP, Queue

#: How many history rows ``jobq limits`` shows.
HISTORY_ROWS_DEFAULT = 10


def _queue_name(args: argparse.Namespace, verb: str) -> str:
    if not args.queue_name:
        raise ConfigError(f"{verb}: give the queue's name, e.g. jobq {verb} mail")
    return str(args.queue_name)


def _unused_warning(q: Queue, queue: str) -> str | None:
    """A warning when nothing uses ``queue``: no job waits or runs in it, no running worker
    serves it and no schedule makes its jobs. The change holds (a queue may be paused or limited
    before its first job), but a mistyped name would leave the queue meant untouched while the
    operator believes it paused."""
    used = set(q.queue_gauges())
    used.update(name for w in q.workers() if w.stopped_at is None for name in w.queues)
    used.update(s.queue for s in q.schedules())
    if queue in used:
        return None
    others = ", ".join(repr(clean(name)) for name in sorted(used)) or "none"
    return (
        f"no job waits or runs in queue {clean(queue, None)}, and no running worker or schedule "
        f"uses it (queues in use: {others}); check its name"
    )


def _rate_arg(text: str) -> tuple[int, float]:
    try:
        return parse_rate(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def control_dict(c: QueueControl) -> dict[str, Any]:
    data = dataclasses.asdict(c)
    data["rate"] = None if c.rate_count is None or c.rate_window is None else format_rate(c.rate_count, c.rate_window)
    return data


def limits_text(c: QueueControl) -> str:
    """``concurrency 4, per key 1, rate 100/s`` (or ``-``)."""
    parts = []
    if c.concurrency is not None:
        parts.append(f"concurrency {c.concurrency}")
    if c.per_key is not None:
        parts.append(f"per key {c.per_key}")
    if c.rate_count is not None and c.rate_window is not None:
        parts.append(f"rate {format_rate(c.rate_count, c.rate_window)}")
    return ", ".join(parts) or "-"


def controls_table(controls: list[QueueControl], now: float) -> str:
    rows = [
        (
            c.queue,
            f"yes (by {c.paused_by}, {ago(c.paused_at, now)})" if c.paused and c.paused_at else "no",
            limits_text(c),
            "-" if c.updated_at is None else f"{c.updated_by or '-'}, {ago(c.updated_at, now)}",
        )
        for c in controls
    ]
    return format_table(("QUEUE", "PAUSED", "LIMITS", "LAST CHANGE"), rows)


def history_table(events: list[ControlEvent]) -> str:
    rows = [(local_iso(e.at), e.queue, e.action, e.actor or "-", e.detail or "-") for e in events]
    return format_table(("AT", "QUEUE", "ACTION", "BY", "AFTER"), rows)


# -- pause / resume ---------------------------------------------------------------------------------
def add_pause(command: AddCommand) -> None:
    for name, text in (
        ("pause", "stop every worker claiming from QUEUE (running jobs finish; its jobs wait, PENDING)"),
        ("resume", "let workers claim from QUEUE again (wakes idle workers at once)"),
    ):
        p = command(name, cmd_pause, text)
        p.add_argument("queue_name", metavar="QUEUE", nargs="?", help="the queue")
        actor_option(p)
        p.set_defaults(verb=name)


def cmd_pause(args: argparse.Namespace) -> int:
    queue = _queue_name(args, args.verb)
    # A queue may be paused before any job exists: the database is created like enqueue does.
    with Queue(settings=make_settings(args)) as q:
        control = q.pause(queue) if args.verb == "pause" else q.resume(queue)
        warning = _unused_warning(q, queue) if control.paused else None
    if control.paused_by is None:  # never paused: "resumed" would say that it had been
        out(f"queue {queue}: {'paused' if control.paused else 'not paused (it never was)'}")
    else:  # who last paused or resumed it (this call, or an earlier one: the state was already so)
        out(f"queue {queue}: {'paused' if control.paused else 'resumed'} (by {control.paused_by})")
    if warning is not None:  # after the command's own line
        err(warning, "warning")
    return EXIT_OK


# -- limit ------------------------------------------------------------------------------------------
def add_limit(command: AddCommand) -> None:
    p = command("limit", cmd_limit, "set or clear QUEUE's concurrency, per-key and rate limits (all hosts)")
    p.add_argument("queue_name", metavar="QUEUE", nargs="?", help="the queue")
    p.add_argument(
        "--concurrency",
        dest="limit_concurrency",
        type=positive_int_arg,
        metavar="N",
        help="at most N of its jobs PROCESSING at once, across every worker and host",
    )
    p.add_argument(
        "--per-key",
        dest="limit_per_key",
        type=positive_int_arg,
        metavar="N",
        help="at most N PROCESSING per concurrency key (jobq enqueue --concurrency-key)",
    )
    p.add_argument(
        "--rate",
        dest="limit_rate",
        type=_rate_arg,
        metavar="COUNT/UNIT",
        help="at most COUNT claims per window: 100/s, 10/min",
    )
    p.add_argument(
        "--clear",
        nargs="?",
        const="all",
        choices=["all", "concurrency", "per-key", "rate"],
        help="remove the queue's limits (all, or the one named); a pause stays",
    )
    actor_option(p)
    json_options(p)


def cmd_limit(args: argparse.Namespace) -> int:
    queue = _queue_name(args, "limit")
    given = {
        "concurrency": args.limit_concurrency,
        "per_key": args.limit_per_key,
        "rate": args.limit_rate,
    }
    options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if args.clear:
        cleared = ["concurrency", "per_key", "rate"] if args.clear == "all" else [args.clear.replace("-", "_")]
        both = [name for name in cleared if name in options]
        if both:
            raise ConfigError(f"limit: --{both[0].replace('_', '-')} and --clear {args.clear} contradict each other")
        options.update(dict.fromkeys(cleared))
    if not options:
        raise ConfigError("limit: give --concurrency N, --per-key N, --rate COUNT/UNIT or --clear")
    with Queue(settings=make_settings(args)) as q:
        control = q.set_limits(
            queue,
            concurrency=options.get("concurrency", KEEP),
            per_key=options.get("per_key", KEEP),
            rate=options.get("rate", KEEP),
        )
        warning = _unused_warning(q, queue) if limits_text(control) != "-" else None
    if args.output == "json":
        out(json.dumps(control_dict(control), indent=2))
    else:
        out(f"queue {queue}: {limits_text(control)}" + (" (paused)" if control.paused else ""))
    if warning is not None:  # after the command's own line
        err(warning, "warning")
    return EXIT_OK


# -- limits -----------------------------------------------------------------------------------------
def add_limits(command: AddCommand) -> None:
    p = command("limits", cmd_limits, "paused and limited queues, and who changed them when")
    p.add_argument("queue_name", metavar="QUEUE", nargs="?", help="only this queue")
    p.add_argument(
        "--history", type=positive_int_arg, default=HISTORY_ROWS_DEFAULT, metavar="N", help="changes shown (default 10)"
    )
    json_options(p)


def cmd_limits(args: argparse.Namespace) -> int:
    with open_queue(args) as q:
        controls = [c for c in q.controls() if args.queue_name in (None, c.queue)]
        history = q.control_history(args.queue_name, limit=args.history)
    if args.output == "json":
        data = {"queues": [control_dict(c) for c in controls], "history": [dataclasses.asdict(e) for e in history]}
        out(json.dumps(data, indent=2))
        return EXIT_OK
    if not controls:
        out("no paused or limited queues")
        return EXIT_OK
    out(controls_table(controls, q.wall_time()))
    if history:
        out("")
        out(history_table(history))
    return EXIT_OK
