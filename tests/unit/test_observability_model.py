"""Observability without I/O: progress throttling, JSON log lines, settings, histogram buckets."""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path
from typing import Any

import pytest

import jobq
from jobq.backends.base import Progress
from jobq.job import Job, JobStatus
from jobq.observability import logs
from jobq.observability.metrics import _Histogram
from jobq.present import progress_text
from jobq.worker import context

EMPTY_CONFIG = Path(__file__).parent / "empty-config.toml"
"""A config file that sets nothing (a named one must exist; ./jobq.toml must not be read)."""


class StubQueue:
    """Records progress writes (a unit test: no store)."""

    store_generation = 0  # its file never replaced

    def __init__(self) -> None:
        self.writes: list[tuple[float | None, str | None]] = []
        self.cancel = False

    def progress(self, job: Job, fraction: float | None, message: str | None) -> bool:
        self.writes.append((fraction, message))
        return self.cancel


def test_progress_is_throttled_and_a_short_run_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(context.time, "monotonic", lambda: now[0])
    q = StubQueue()
    job = Job(1, "default", "", None, JobStatus.PROCESSING, 0, 0.0, 1, 3, 0.0, 0.0, lease_token="t")
    ctx = context.JobContext(job, q, "w")  # type: ignore[arg-type]
    assert ctx.progress(0.1, "early") is False  # the run has not lasted an interval yet
    now[0] += context.PROGRESS_INTERVAL_SECONDS
    assert ctx.progress(0.2) is True
    assert ctx.progress(0.3) is False  # within the interval: dropped
    assert ctx.progress(0.4, force=True) is True
    now[0] += context.PROGRESS_INTERVAL_SECONDS
    q.cancel = True
    with pytest.raises(jobq.JobCancelled):
        ctx.progress(0.5)  # the write said an operator cancelled: the handler stops
    assert q.writes == [(0.2, None), (0.4, None), (0.5, None)]
    assert ctx.cancel_requested


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("jobq.worker", logging.WARNING, __file__, 1, "job %s failed\nsecond line", (7,), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_the_run_fields_set_around_a_run() -> None:
    formatter, run_filter = logs.JsonFormatter(), logs.RunFieldsFilter()
    plain = _record()
    run_filter.filter(plain)
    line = json.loads(formatter.format(plain))
    assert line["message"] == "job 7 failed\nsecond line" and line["level"] == "WARNING"
    assert line["time"].endswith("+00:00") and "job_id" not in line
    with logs.run_fields(logs.fields_of(7, "mail", "send", 2, "w-1")):
        inside = _record()
        given = _record(job_id=8)  # a field given as extra wins
        run_filter.filter(inside)
        run_filter.filter(given)
    text = formatter.format(inside)
    assert "\n" not in text
    assert {k: json.loads(text)[k] for k in logs.RUN_FIELDS} == {
        "job_id": 7, "queue": "mail", "task": "send", "attempt": 2, "worker": "w-1",
    }  # fmt: skip
    assert json.loads(formatter.format(given))["job_id"] == 8
    after = _record()
    run_filter.filter(after)
    assert "job_id" not in json.loads(formatter.format(after))


def test_log_format_and_metrics_port_settings_are_checked_in_one_line() -> None:
    env = {"JOBQ_LOG_FORMAT": "json", "JOBQ_METRICS_PORT": "9500"}
    settings = jobq.load_settings(env=env, config_file=EMPTY_CONFIG)
    assert (settings.log_format, settings.metrics_port, settings.metrics_host) == ("json", 9500, "127.0.0.1")
    assert jobq.load_settings({"log_format": "text"}, env=env, config_file=EMPTY_CONFIG).log_format == "text"
    with pytest.raises(jobq.ConfigError, match="log_format must be one of text, json"):
        jobq.load_settings(env={"JOBQ_LOG_FORMAT": "xml"}, config_file=EMPTY_CONFIG)
    with pytest.raises(jobq.ConfigError, match="metrics_port must be between 1 and 65535"):
        jobq.load_settings(env={"JOBQ_METRICS_PORT": "70000"}, config_file=EMPTY_CONFIG)


def test_histogram_buckets_are_cumulative() -> None:
    h = _Histogram((1.0, 5.0))
    for v in (0.5, 1.0, 3.0, 10.0, -2.0):
        h.observe(v)
    assert h.buckets() == [("1.0", 3.0), ("5.0", 4.0), ("+Inf", 5.0)]
    assert h.total == 14.5


class _Float(float):
    pass


class _Text(str):
    __slots__ = ()


@pytest.mark.parametrize(
    ("fraction", "message", "stored"),
    [
        (0.5, "half", (0.5, "half")),  # the usual report: returned as it is
        (None, None, (None, None)),
        (1.0, "x" * 500, (1.0, "x" * 500)),  # at the message's limit
        (0.0, "", (0.0, "")),
        (1, None, (1.0, None)),  # an int: stored as a float
        (1.5, None, (1.0, None)),  # clamped
        (-0.5, None, (0.0, None)),
        (_Float(0.25), _Text("sub"), (0.25, "sub")),  # subclasses: taken as their values
        (0.5, "\udcff", (0.5, "\\udcff")),  # a lone surrogate, escaped so it can be stored
        (0.5, "déjà", (0.5, "déjà")),
        (0.5, 7, (0.5, "7")),  # not text: its str()
    ],
)
def test_a_progress_report_is_stored_as_checked(fraction: Any, message: Any, stored: Any) -> None:
    got = jobq.queue.check_progress(fraction, message)
    assert got == stored and [type(v) for v in got] == [type(v) for v in stored]


def test_a_progress_message_past_its_limit_is_cut() -> None:
    _, message = jobq.queue.check_progress(0.5, "x" * 501)
    assert message is not None and len(message) <= jobq.queue.PROGRESS_MESSAGE_MAX_CHARS and "cut" in message


@pytest.mark.parametrize("fraction", [float("nan"), True, "0.5", b"1"])
def test_a_progress_fraction_that_is_no_number_is_refused(fraction: Any) -> None:
    with pytest.raises(jobq.InvalidPayload, match="between 0 and 1"):
        jobq.queue.check_progress(fraction, None)


def test_progress_text() -> None:
    assert progress_text(None, 0.0) == "-"
    assert progress_text(Progress(1, None, "  step\\n two ", 90.0), 100.0) == "step\\n two (10s ago)"
    assert progress_text(Progress(1, None, None, 100.0), 100.0) == "reported (0s ago)"


def test_json_time_is_the_iso_utc_time_to_the_millisecond_whatever_the_cache() -> None:
    """The formatter makes the part up to the second once a second; every line must still read
    as ``datetime.isoformat(timespec="milliseconds")`` does, roundings included."""
    import datetime

    formatter = logs.JsonFormatter()
    second = 1_764_528_000
    for created in (second + 0.0, second + 0.1234995, second + 0.9999996, second + 0.999, second + 59.5, 1.5):
        record = _record()
        record.created = created
        expected = datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(record))["time"] == expected, created


def test_the_workers_run_tuple_gives_the_same_fields_without_a_dict() -> None:
    job = types.SimpleNamespace(id=7, queue="mail", task="send", attempts=2)
    token = logs.enter_run(job, "w-1")
    try:
        record = _record(attempt=5)  # given as extra: kept
        logs.RunFieldsFilter().filter(record)
    finally:
        logs.leave_run(token)
    assert [getattr(record, k) for k in logs.RUN_FIELDS] == [7, "mail", "send", 5, "w-1"]


@pytest.mark.parametrize(
    ("fraction", "message"),
    [
        (0.5, "half"),
        (None, None),
        (1.0, "x" * 500),
        (1.0, "x" * 501),
        (1, None),
        (1.5, None),
        (-0.5, "é"),
        (_Float(0.25), _Text("sub")),
        (0.5, 7),
        (float("nan"), None),
        (True, None),
        ("0.5", None),
        (b"1", "x"),
    ],
)
def test_the_context_refuses_and_stops_as_check_progress_and_check_do(fraction: Any, message: Any) -> None:
    """ctx.progress inlines check_progress's test of the usual report and check()'s test of a
    stopped run (a dropped report's cost, issue 17): a report is refused exactly when
    check_progress refuses it, and each reason to stop raises what check() raises."""
    job = Job(1, "default", "", None, JobStatus.PROCESSING, 0, 0.0, 1, 3, 0.0, 0.0, lease_token="t")
    ctx = context.JobContext(job, StubQueue(), "w")  # type: ignore[arg-type]
    try:
        jobq.queue.check_progress(fraction, message)
    except jobq.InvalidPayload:
        with pytest.raises(jobq.InvalidPayload):
            ctx.progress(fraction, message)
    else:
        assert ctx.progress(fraction, message) is False  # within the first interval: dropped
    for flag in ("lease_lost", "cancel_requested", "timed_out"):
        stopped = context.JobContext(job, StubQueue(), "w")  # type: ignore[arg-type]
        setattr(stopped, flag, True)
        with pytest.raises(jobq.JobqError) as checked:
            stopped.check()
        with pytest.raises(type(checked.value)):
            stopped.progress(0.5, "half")
