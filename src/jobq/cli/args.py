"""Argument types of the ``jobq`` command line: each turns one argument's text into a value, or
raises ``argparse.ArgumentTypeError``, which the parser prints as one ``jobq: error:`` line (exit 2).

Numbers are held to what both databases can store and the API accepts (``config.INT64_MAX`` for
ids, ``config.INT32_MAX`` for limits, offsets and PostgreSQL ``integer`` columns), and an error
never echoes a huge argument whole.
"""

from __future__ import annotations

import argparse

from jobq.config import (
    ASYNC_CONCURRENCY_MAX,
    CONCURRENCY_MAX,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    parse_duration,
    parse_range,
)
from jobq.errors import ConfigError
from jobq.job import JobStatus


def duration_arg(text: str) -> float:
    """argparse type: ``30``, ``1.5s``, ``250ms``, ``10m``, ``7d`` -> seconds."""
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def backoff_arg(text: str) -> list[float]:
    """argparse type: ``10s`` or per attempt ``1s,10s,1m`` (the last repeats) -> seconds."""
    try:
        return [parse_duration(part.strip()) for part in text.split(",")]
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def file_arg(text: str) -> str:
    """argparse type: a file name (not empty, not only spaces)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a file name is needed")
    return text


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

    The bounds are what the databases can store and the API accepts (``config.INT64_MAX`` for ids,
    ``config.INT32_MAX`` for limits, offsets and PostgreSQL ``integer`` columns): a value outside
    them would otherwise end in a traceback (apsw: "int too big to convert"; ``check_rows``).
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
    """argparse type: 1 to 2**31-1 (a limit the API accepts, ``queue.check_rows``: 2**63-1 passed
    here and ended in a ValueError traceback)."""
    return _int_arg(text, 1, INT32_MAX)


def non_negative_int_arg(text: str) -> int:
    """argparse type: 0 to 2**31-1 (an offset the API accepts, ``queue.check_rows``)."""
    return _int_arg(text, 0, INT32_MAX)


def priority_arg(text: str) -> int:
    """argparse type: a priority PostgreSQL's 32-bit ``integer`` column holds (SQLite's holds more)."""
    return _int_arg(text, INT32_MIN, INT32_MAX)


def attempts_arg(text: str) -> int:
    """argparse type: ``--max-attempts``, 1 to 2**31-1 (a PostgreSQL ``integer``)."""
    return _int_arg(text, 1, INT32_MAX)


def concurrency_arg(text: str) -> int:
    """argparse type: handler threads, 1 to ``CONCURRENCY_MAX``."""
    return _int_arg(text, 1, CONCURRENCY_MAX)


def async_concurrency_arg(text: str) -> int:
    """argparse type: coroutines of async handlers, 1 to ``ASYNC_CONCURRENCY_MAX``."""
    return _int_arg(text, 1, ASYNC_CONCURRENCY_MAX)


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
