"""Commands that run until stopped: ``worker``, ``producer``, ``consumer``, and the web apps
``manager`` and ``ops``.

What they run (the worker runtime, the demo's producer and consumer in jobq.demo, Streamlit) is imported
inside each command, so ``jobq list`` stays fast and works without the extras. Logs go to stderr
with the database password masked in every line (supervisord keeps these logs).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jobq
from jobq.cli.args import async_concurrency_arg, concurrency_arg, duration_arg, handler_arg, port_arg, range_arg
from jobq.cli.parser import EXIT_OK, AddCommand, env_help, make_settings
from jobq.config import LOG_FORMAT_DEFAULT, LOG_FORMATS, METRICS_HOST_DEFAULT, METRICS_PORT_DEFAULT, env_name
from jobq.errors import ConfigError
from jobq.redact import redact_logs
from jobq.web import DEFAULT_PORTS


def log_options(p: argparse.ArgumentParser) -> None:
    """``--log-format``: of every command that runs until stopped and logs."""
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help=env_help("log lines as text, or one JSON object each", "log_format", LOG_FORMAT_DEFAULT),
    )


def metrics_options(p: argparse.ArgumentParser, *, flag: str) -> None:
    """Where Prometheus metrics are served (``jobq metrics --port``, ``jobq worker --metrics-port``)."""
    p.add_argument(
        flag,
        dest="metrics_port",
        metavar="PORT",
        type=port_arg,
        help=env_help("serve Prometheus metrics on this port", "metrics_port",
                      METRICS_PORT_DEFAULT if flag == "--port" else "off"),
    )  # fmt: skip
    p.add_argument(
        "--metrics-host",
        metavar="ADDRESS",
        help=env_help("address the metrics listen on", "metrics_host", METRICS_HOST_DEFAULT),
    )


def worker_options(p: argparse.ArgumentParser, *, many_queues: bool) -> None:
    """Options of every process that runs handlers (``worker``, ``consumer``)."""
    log_options(p)
    if many_queues:
        p.add_argument(
            "--queue",
            "-q",
            metavar="NAME",
            dest="queues",
            action="append",
            default=[],
            help=env_help("queue to work on (repeatable)", "queue", "default"),
        )
    else:
        p.add_argument("--queue", "-q", metavar="NAME", help=env_help("queue to work on", "queue", "default"))
    p.add_argument(
        "--concurrency", "-c", metavar="N", type=concurrency_arg, help=env_help("handler threads", "concurrency", 1)
    )
    p.add_argument(
        "--async-concurrency",
        metavar="N",
        type=async_concurrency_arg,
        help=env_help("coroutines of async def handlers run at once", "async_concurrency", 100),
    )
    p.add_argument(
        "--lease", metavar="DURATION", type=duration_arg, help=env_help("lease per claim", "lease_seconds", "30s")
    )
    p.add_argument(
        "--grace",
        metavar="DURATION",
        type=duration_arg,
        help=env_help("drain time after SIGTERM", "shutdown_grace_seconds", "20s"),
    )
    p.add_argument(
        "--name", metavar="NAME", help="worker name shown in ops (default: supervisord program name or worker-PID)"
    )


def _logging(settings: jobq.Settings) -> None:
    """Log to stderr; the database password is masked in every line (supervisord keeps these logs)."""
    from jobq.observability.logs import configure

    level = os.environ.get("JOBQ_LOG_LEVEL", "INFO").upper()
    configure(settings.log_format, level)  # text, or one JSON object per line (JOBQ_LOG_FORMAT)
    redact_logs(settings.database_url, os.environ.get(env_name("database_url")))


# -- worker -----------------------------------------------------------------------------------------
def add_worker(command: AddCommand) -> None:
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
    worker_options(p, many_queues=True)
    metrics_options(p, flag="--metrics-port")
    p.add_argument("--exit-when-idle", action="store_true", help="exit once no job is due and none runs")


def _import_path() -> None:
    # A console script does not put the working directory on sys.path (python -m does): add it, so
    # `--handler mytasks:run` finds ./mytasks.py as users expect (celery and rq do the same).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def collect_handlers(
    specs: Sequence[tuple[str, str]], imports: Sequence[str], registry: Mapping[str, Any], load: Callable[[str], Any]
) -> dict[str, Any]:
    """Handlers for ``jobq worker``: ``@task`` registrations (after importing ``imports``), then
    the explicit ``--handler`` ones, which win on a name clash."""
    for module in imports:
        try:
            importlib.import_module(module)
        except (ImportError, ValueError, TypeError) as exc:  # ValueError: '', TypeError: '..mod'
            raise ConfigError(f"cannot import {module!r}: {exc}") from None
    handlers = dict(registry)
    for name, spec in specs:
        handlers[name] = load(spec)
    if not handlers:
        raise ConfigError("no handlers: give --handler [NAME=]module:function or --import MODULE")
    return handlers


def cmd_worker(args: argparse.Namespace) -> int:
    from jobq.worker import REGISTRY, Worker, load_handler

    settings = make_settings(args)
    _import_path()
    handlers = collect_handlers(args.handlers, args.imports, REGISTRY, load_handler)
    _logging(settings)
    with jobq.Queue(settings=settings) as q, _metrics_server(settings, settings.metrics_port):
        worker = Worker(
            q,
            handlers,
            queues=args.queues or None,
            concurrency=settings.concurrency,
            async_concurrency=settings.async_concurrency,
            name=args.name,
            exit_when_idle=args.exit_when_idle,
        )
        worker.run()
    return EXIT_OK


@contextlib.contextmanager
def _metrics_server(settings: jobq.Settings, port: int | None) -> Iterator[None]:
    """Serve Prometheus metrics on ``port`` (none when None) from a handle of its own, until the
    block ends. A port that cannot be bound is a one-line ConfigError."""
    if port is None:
        yield
        return
    from jobq.observability.metrics import serve

    with jobq.Queue(settings=settings, create=False) as reader:
        try:
            exporter = serve(reader, port, settings.metrics_host)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a host name IDNA cannot encode
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(f"cannot serve metrics on {settings.metrics_host:.80}:{port}: {reason}") from None
        logging.getLogger("jobq.metrics").info(
            "serving Prometheus metrics on http://%s:%d/metrics", settings.metrics_host, port
        )
        try:
            yield
        finally:
            exporter.close()


def add_metrics(command: AddCommand) -> None:
    p = command("metrics", cmd_metrics, "serve Prometheus metrics of the queue (127.0.0.1 by default)")
    metrics_options(p, flag="--port")
    log_options(p)


def cmd_metrics(args: argparse.Namespace) -> int:
    settings = make_settings(args)
    _logging(settings)
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    with _metrics_server(settings, settings.metrics_port or METRICS_PORT_DEFAULT):
        stop.wait()
    return EXIT_OK


# -- producer / consumer (the demo's processes, jobq.demo) -------------------------------------------------
def _call_with_name(func: Callable[..., Any], settings: jobq.Settings, name: str | None) -> int:
    """Call ``run_producer``/``run_consumer(settings)``, passing ``name=`` when given."""
    if name is not None:
        if "name" not in inspect.signature(func).parameters:
            raise ConfigError(f"--name is not supported by {func.__module__}.{func.__name__}")
        result = func(settings, name=name)
    else:
        result = func(settings)
    return result if isinstance(result, int) else EXIT_OK


def add_producer(command: AddCommand) -> None:
    p = command("producer", cmd_producer, "the demo's producer: write a new file every interval and enqueue it")
    p.add_argument(
        "--interval",
        metavar="DURATION",
        type=duration_arg,
        help=env_help("seconds between files", "producer_interval_seconds", "5s"),
    )
    p.add_argument("--data-dir", metavar="DIR", help=env_help("where job files live", "data_dir", "data"))
    p.add_argument("--queue", "-q", metavar="NAME", help=env_help("queue name", "queue", "default"))
    log_options(p)


def cmd_producer(args: argparse.Namespace) -> int:
    from jobq.demo.producer import run_producer

    settings = make_settings(args)
    _logging(settings)
    return _call_with_name(run_producer, settings, None)


def add_consumer(command: AddCommand) -> None:
    p = command("consumer", cmd_consumer, "the demo's consumer: stamp each job's file after a random delay")
    p.add_argument(
        "--delay",
        metavar="RANGE",
        dest="consumer_delay",
        type=range_arg,
        help=env_help("seconds each job takes, a range", "consumer_delay", "7-15"),
    )
    p.add_argument("--data-dir", metavar="DIR", help=env_help("where job files live", "data_dir", "data"))
    worker_options(p, many_queues=False)


def cmd_consumer(args: argparse.Namespace) -> int:
    from jobq.demo.consumer import run_consumer

    settings = make_settings(args)
    _logging(settings)
    return _call_with_name(run_consumer, settings, args.name)


# -- the web apps -----------------------------------------------------------------------------------
def add_web_apps(command: AddCommand) -> None:
    for app, port in DEFAULT_PORTS.items():
        what = "resubmit, cancel and enqueue jobs" if app == "manager" else "watch the queue"
        p = command(app, cmd_web, f"serve the {app} web app ({what}) on 127.0.0.1")
        p.add_argument("--port", metavar="PORT", type=port_arg, default=port, help=f"port (default {port})")
        p.add_argument("extra", nargs="*", metavar="STREAMLIT_ARG", help="more streamlit options, after --")
        p.set_defaults(app=app)


def cmd_web(args: argparse.Namespace) -> int:
    from jobq.web import launch

    settings = make_settings(args)
    # Streamlit runs the app in a new process: hand it the resolved settings through the
    # environment it inherits (flags given here would otherwise be lost).
    os.environ[env_name("database_url")] = settings.database_url
    if settings.operator:
        os.environ[env_name("operator")] = settings.operator
    if args.config:
        os.environ["JOBQ_CONFIG"] = args.config
    launch(args.app, args.port, list(args.extra))
    return EXIT_OK  # launch() normally replaces this process
