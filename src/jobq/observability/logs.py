"""Structured logs: ``JOBQ_LOG_FORMAT=json`` makes every log line one JSON object.

Each object has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, and where they
apply ``job_id``, ``queue``, ``task``, ``attempt`` and ``worker``: the worker sets them in a
context variable around each run (``run_fields``), and ``RunFieldsFilter`` copies them onto
every record logged meanwhile, by jobq or by the handler's own code, in that thread. Lines the
worker logs about a run from another thread pass them as ``extra`` (``fields_of``). An
exception adds ``exception`` (the traceback text). Text stays the default format.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
from collections.abc import Iterator
from typing import Any

#: The record attributes a run carries, in the order JSON lines show them.
RUN_FIELDS = ("job_id", "queue", "task", "attempt", "worker")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The run whose fields records get: a dict of them, or (job, worker id) as the worker sets it on
# every run (a tuple costs nothing to make; the fields are built only when a line is logged).
_RUN: contextvars.ContextVar[Any] = contextvars.ContextVar("jobq_run", default=None)


def fields_of(job_id: int, queue: str, task: str, attempt: int, worker: str) -> dict[str, Any]:
    """A run's fields, for ``run_fields`` or a log call's ``extra``."""
    return {"job_id": job_id, "queue": queue, "task": task, "attempt": attempt, "worker": worker}


def enter_run(job: Any, worker: str) -> contextvars.Token[Any]:
    """The worker's hot path: records logged until ``leave_run`` carry ``job``'s fields."""
    return _RUN.set((job, worker))


def leave_run(token: contextvars.Token[Any]) -> None:
    _RUN.reset(token)


@contextlib.contextmanager
def run_fields(fields: dict[str, Any]) -> Iterator[None]:
    """Every record logged in this context (this thread, or tasks it starts) carries ``fields``."""
    token = _RUN.set(fields)
    try:
        yield
    finally:
        _RUN.reset(token)


class RunFieldsFilter(logging.Filter):
    """Copies the current run's fields onto each record (never over ones given as ``extra``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        run = _RUN.get()
        if run is None:
            return True
        if isinstance(run, tuple):  # the worker's (job, worker id): no dict made per record
            job, worker = run
            values: Any = (job.id, job.queue, job.task, job.attempts, worker)
            items = zip(RUN_FIELDS, values, strict=True)
        else:
            items = iter(run.items())
        fields = record.__dict__
        for key, value in items:
            if key not in fields:
                fields[key] = value
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped by JSON)."""

    # json.dumps with any option builds a new encoder on every call; one made once is reused.
    _encode = json.JSONEncoder(default=str, ensure_ascii=False).encode

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds; the part up to the second is made once a second."""
        second = int(created)
        micros = round((created - second) * 1e6)  # as datetime rounds, then truncated to ms
        if micros >= 1_000_000:  # rounds up into the next second: rare, the slow way
            return datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat(timespec="milliseconds")
        if second != self._second:
            stamp = datetime.datetime.fromtimestamp(second, datetime.UTC).isoformat()
            self._second, self._second_text = second, stamp[:-6]  # without "+00:00"
        return f"{self._second_text}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for key in RUN_FIELDS:
            value = fields.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        return self._encode(out)


def configure(log_format: str, level: str | int = "INFO") -> None:
    """Log to stderr in ``log_format`` (``text`` or ``json``), the run fields on every record.

    Like ``logging.basicConfig``, it leaves logging alone when the application configured it."""
    root = logging.getLogger()
    if root.handlers:
        for handler in root.handlers:
            _add_run_filter(handler)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    _add_run_filter(handler)
    root.addHandler(handler)
    root.setLevel(level)


def _add_run_filter(handler: logging.Handler) -> None:
    if not any(isinstance(f, RunFieldsFilter) for f in handler.filters):
        handler.addFilter(RunFieldsFilter())
