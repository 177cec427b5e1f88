"""What every ``jobq`` command shares: exit codes, the top-level parser, the options every
command takes, and the flags that set a setting.

Settings are layered like everywhere in jobq: ``jobq.toml`` < ``JOBQ_*`` environment < flags, so
an option left unset never hides the environment or the file (its argparse default is None). The
convention: an option that sets a setting names its environment variable in its help
(:func:`env_help`), and appears in :data:`FLAG_SETTINGS` (a unit test checks both).

Each command's own options are added next to its handler (``jobs.py``, ``monitor.py``,
``processes.py``); ``jobq.cli.build_parser`` puts the commands together.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import jobq
from jobq.config import DATABASE_URL_DEFAULT, env_name, load_settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `cmd | head` reports for a C tool

Command = Callable[[argparse.Namespace], int]
"""A command's handler: the parsed arguments in, the exit code out."""
AddCommand = Callable[[str, Command, str], argparse.ArgumentParser]
"""Adds a command (name, handler, help) to ``jobq`` and returns its parser, for its own options."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``jobq: error:`` line like every other error (exit 2)."""

    #: What argparse takes for a value, not an option: ``-1``, ``-0.5`` as it does, and also
    #: anything else after a minus sign and a digit (``-1d``, ``-1e9``, ``-3/1s``). argparse read
    #: ``--older-than -1d`` as an option with its value missing ("expected one argument"); a value,
    #: it gets the type's own message ("not a duration"). No jobq option starts with a digit.
    NEGATIVE_VALUE = re.compile(r"^-\.?\d")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A private attribute (checked on Python 3.11-3.13), set only where it exists.
        if hasattr(self, "_negative_number_matcher"):
            self._negative_number_matcher = self.NEGATIVE_VALUE

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("jobq").strip()
        hint = f"jobq {command} --help" if command else "jobq --help"
        self.exit(EXIT_USAGE, f"jobq: error: {command + ': ' if command else ''}{message} (see '{hint}')\n")


def env_help(text: str, field: str, default: object = None) -> str:
    """Help text that names the option's environment variable (and its default)."""
    shown = f"; default {default}" if default is not None else ""
    return f"{text} (env {env_name(field)}{shown})"


def common_options(*, top: bool) -> Parser:
    """Options every command takes, accepted before or after the command name.

    Below the command they default to SUPPRESS, so that an option given before the command
    (``jobq --db URL list``) is not overwritten by the subcommand's default.
    """
    parent = Parser(add_help=False)
    default: Any = None if top else argparse.SUPPRESS
    parent.add_argument(
        "--db",
        metavar="URL",
        default=default,
        help=env_help("database URL: sqlite:///path.db or postgresql://...", "database_url", DATABASE_URL_DEFAULT),
    )
    parent.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="TOML settings file (env JOBQ_CONFIG; default ./jobq.toml when it exists)",
    )
    return parent


def top_parser() -> tuple[argparse.ArgumentParser, AddCommand]:
    """The ``jobq`` parser without commands, and the function that adds one (pure: no I/O)."""
    parser = Parser(
        prog="jobq",
        description="jobq: a crash-safe persistent job queue. Settings: jobq.toml < JOBQ_* env < flags.",
        parents=[common_options(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"jobq {jobq.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    common = common_options(top=False)

    def command(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    return parser, command


def json_options(p: argparse.ArgumentParser, *, lines: bool = False) -> None:
    """``--json`` (and with ``lines``, ``--jsonl``): sets ``args.output``, ``"table"`` by default."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--json", dest="output", action="store_const", const="json", default="table", help="JSON for scripts"
    )
    if lines:
        group.add_argument(
            "--jsonl", dest="output", action="store_const", const="jsonl", help="one JSON object per line"
        )


def actor_option(p: argparse.ArgumentParser) -> None:
    """``--actor``: the operator recorded in the events of what a command does."""
    p.add_argument(
        "--actor", metavar="NAME", help=env_help("who is acting, recorded in the events", "operator", "login name")
    )


# -- settings from flags ----------------------------------------------------------------------------
#: Flags (argparse dest) that set a Settings field of the same meaning. Their help names the env var.
FLAG_SETTINGS: dict[str, str] = {
    "db": "database_url",
    "lease": "lease_seconds",
    "grace": "shutdown_grace_seconds",
    "concurrency": "concurrency",
    "async_concurrency": "async_concurrency",
    "interval": "producer_interval_seconds",
    "data_dir": "data_dir",
    "consumer_delay": "consumer_delay",
    "actor": "operator",
    "log_format": "log_format",
    "metrics_port": "metrics_port",
    "metrics_host": "metrics_host",
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


def open_queue(args: argparse.Namespace) -> jobq.Queue:
    """The queue for commands that read or act on existing jobs: a database that does not exist
    is an error (a typo in --db must not silently create an empty queue and list nothing)."""
    return jobq.Queue(settings=make_settings(args), create=False)
