"""Unit tests of the ``jobq`` command line: argument handling and formatting, no database."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobq import cli
from jobq.backends.base import ActionResult, QueueStats, WorkerInfo
from jobq.cli import jobs, monitor, output, processes
from jobq.cli import parser as cli_parser
from jobq.cli.args import handler_arg
from jobq.config import DATABASE_URL_DEFAULT, env_name, load_settings
from jobq.errors import ConfigError, InvalidPayload
from jobq.job import Action, Job, JobStatus, operator_actions
from jobq.payloads import parse_json


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Parse ``argv`` expecting a usage error; return its single stderr line."""
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == cli_parser.EXIT_USAGE
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jobq: error: ")
    return lines[0]


EMPTY_CONFIG = str(Path(__file__).parent / "empty-config.toml")
"""A config file that sets nothing: a test names it so that no ./jobq.toml is read."""


# -- --db and settings layering ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ("--db", "sqlite:///x.db", "list"),
        ("list", "--db", "sqlite:///x.db"),
        ("--db=sqlite:///x.db", "stats"),
    ],
)
def test_db_is_accepted_before_or_after_the_command(argv: tuple[str, ...]) -> None:
    assert parse(*argv).db == "sqlite:///x.db"


def test_a_config_file_named_on_purpose_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in ``--config`` or ``JOBQ_CONFIG`` quietly ran on the defaults (another database);
    ./jobq.toml stays optional."""
    missing = str(tmp_path / "jobq-typo.toml")
    with pytest.raises(ConfigError, match=f"config file not found: {missing}"):
        load_settings({}, env={}, config_file=missing)
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings({}, env={"JOBQ_CONFIG": missing})
    monkeypatch.chdir(tmp_path)  # no ./jobq.toml here
    assert load_settings({}, env={}).database_url == DATABASE_URL_DEFAULT


def test_db_after_the_command_wins_over_before() -> None:
    assert parse("--db", "sqlite:///a.db", "list", "--db", "sqlite:///b.db").db == "sqlite:///b.db"


def test_db_unset_leaves_env_and_default_in_charge() -> None:
    args = parse("list", "--config", EMPTY_CONFIG)
    assert args.db is None
    assert cli_parser.make_settings(args, env={}).database_url == DATABASE_URL_DEFAULT
    env = {"JOBQ_DATABASE_URL": "sqlite:///from-env.db"}
    assert cli_parser.make_settings(args, env=env).database_url == "sqlite:///from-env.db"
    flagged = parse("list", "--config", EMPTY_CONFIG, "--db", "sqlite:///flag.db")
    assert cli_parser.make_settings(flagged, env=env).database_url == "sqlite:///flag.db"


def test_worker_flags_become_settings_and_unset_ones_do_not() -> None:
    args = parse("worker", "-H", "m:f", "--lease", "1m", "--grace", "5s", "-c", "4", "-q", "a", "-q", "b")
    assert cli_parser.settings_overrides(args) == {
        "lease_seconds": 60.0,
        "shutdown_grace_seconds": 5.0,
        "concurrency": 4,
        "queue": "a",
    }
    assert args.queues == ["a", "b"]
    bare = parse("worker", "-H", "m:f")
    assert cli_parser.settings_overrides(bare) == {}
    env = {"JOBQ_LEASE": "90", "JOBQ_CONCURRENCY": "3"}
    settings = load_settings(cli_parser.settings_overrides(bare), env=env, config_file=EMPTY_CONFIG)
    assert (settings.lease_seconds, settings.concurrency) == (90.0, 3)


def test_enqueue_delay_is_the_jobs_not_the_consumers() -> None:
    args = parse("enqueue", "--json", "{}", "--delay", "10s", "--max-attempts", "5", "--timeout", "2m", "-q", "mail")
    assert (args.delay, args.max_attempts, args.timeout) == (10.0, 5, 120.0)
    assert cli_parser.settings_overrides(args) == {"queue": "mail"}


def test_consumer_and_producer_flags() -> None:
    consumer = parse("consumer", "--delay", "0-0.05", "--data-dir", "d", "--name", "c1")
    assert cli_parser.settings_overrides(consumer) == {"consumer_delay": "0-0.05", "data_dir": "d"}
    producer = parse("producer", "--interval", "250ms")
    assert cli_parser.settings_overrides(producer) == {"producer_interval_seconds": 0.25}


def test_actor_sets_the_operator() -> None:
    assert cli_parser.settings_overrides(parse("cancel", "3", "--actor", "ann")) == {"operator": "ann"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_option_with_an_env_default_names_its_variable() -> None:
    checked = 0
    for name, sub in _subparsers().items():
        for action in sub._actions:
            field = cli_parser.FLAG_SETTINGS.get(action.dest)
            if action.dest == "queue":  # a single --queue sets the settings' queue
                field = "queue"
            if action.dest == "queues" and name == "worker":
                field = "queue"
            if field is None:
                continue
            checked += 1
            assert f"env {env_name(field)}" in (action.help or ""), f"jobq {name} {action.option_strings}"
    assert checked >= 25  # --db and --config on every command, plus the settings flags


def test_retry_and_cancel_help_names_the_statuses_the_model_allows() -> None:
    def named(text: str) -> set[JobStatus]:
        return {s for s in JobStatus if s.value in re.findall(r"[A-Z]+", text)}

    def legal(verb: str, action: Action) -> set[JobStatus]:
        return {s for s in JobStatus if operator_actions(s).get(verb) == action}

    retry, cancel = (_subparsers()[name].description or "" for name in ("retry", "cancel"))
    assert named(retry.split(" (")[0]) == legal("resubmit", Action.RESUBMIT), retry
    cancels, asks_to_stop = cancel.split("; ")
    assert named(cancels) == legal("cancel", Action.CANCEL), cancel
    assert named(asks_to_stop) == legal("cancel", Action.REQUEST_CANCEL), cancel


def test_every_command_listed_in_the_brief_exists() -> None:
    expected = {"enqueue", "worker", "producer", "consumer", "manager", "ops", "list", "show", "retry", "cancel"}
    expected |= {"stats", "workers", "purge", "rescue", "version"}
    assert expected <= set(_subparsers())


# -- argument types ---------------------------------------------------------------------------------
def test_bad_duration_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(capsys, "purge", "--older-than", "7x")
    assert "not a duration: '7x'" in line
    assert "jobq purge --help" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        *((("purge", "--older-than", v), f"not a duration: '{v}'") for v in ["-1d", "-1", "-0.5s", "-.5m", "-250ms"]),
        (("enqueue", "--json", "{}", "--priority", "-1e9"), "not an integer: '-1e9'"),
        (("limit", "default", "--rate", "-3/1s"), "not a rate: '-3/1s'"),
    ],
)
def test_a_negative_value_gets_its_types_message_not_a_missing_one(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    # argparse alone reads "-1d" as an option and says "expected one argument".
    assert message in usage_error(capsys, *argv)


def test_purge_requires_older_than(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--older-than" in usage_error(capsys, "purge")


def test_statuses_any_case_repeatable_and_comma_separated() -> None:
    args = parse("list", "-s", "failed,Cancelled", "--status", "PENDING")
    assert [s for group in args.statuses for s in group] == [JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PENDING]


def test_unknown_status_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown status 'DONE'" in usage_error(capsys, "list", "--status", "DONE")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("show", "abc"), "not a job id"),
        (("show", "0"), "not a job id"),
        (("list", "--limit", "0"), "must be at least 1"),
        (("list", "--sort", "payload"), "invalid choice"),
        (("consumer", "--delay", "15-7"), "bad range"),
        (("manager", "--port", "70000"), "between 1 and 65535"),
        (("worker", "--handler", "nocolon"), "must look like"),
        (("list", "--json", "--jsonl"), "not allowed with"),
        ((), "required"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], fragment: str) -> None:
    assert fragment in usage_error(capsys, *argv)


BIG = "99999999999999999999"  # 10**20 - 1: beyond any 64-bit integer
TOO_LONG = "9" * 5000  # beyond Python's int() limit of 4,300 digits


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("show", BIG), "ids are at most 9223372036854775807"),
        (("show", str(2**63)), "ids are at most 9223372036854775807"),
        (("retry", "1", BIG), "not a job id"),
        (("cancel", f"#{BIG}"), "not a job id"),
        (("show", TOO_LONG), "not a job id"),
        (("list", "--offset", BIG), "must be at most 2147483647"),
        (("list", "--offset", str(2**31)), "must be at most 2147483647"),
        (("list", "--limit", str(2**31)), "must be at most 2147483647"),
        (("list", "-n", TOO_LONG), "must be at most 2147483647"),
        (("list", "-n", "-" + TOO_LONG), "must be at least 1"),
        (("enqueue", "--json", "{}", "--priority", str(2**31)), "must be at most 2147483647"),
        (("enqueue", "--json", "{}", "-p", str(-(2**31) - 1)), "must be at least -2147483648"),
        (("enqueue", "--json", "{}", "--priority", BIG), "must be at most 2147483647"),
        (("enqueue", "--json", "{}", "--priority", "high"), "not an integer: 'high'"),
        (("enqueue", "--json", "{}", "--max-attempts", str(2**31)), "must be at most 2147483647"),
        (("worker", "-H", "m:f", "--concurrency", BIG), "must be at most 1024"),
        (("consumer", "-c", "1025"), "must be at most 1024"),
        (("manager", "--port", BIG), "between 1 and 65535"),
    ],
)
def test_integers_out_of_the_databases_range_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], fragment: str
) -> None:
    line = usage_error(capsys, *argv)
    assert fragment in line
    assert len(line) < 300  # a 5,000-digit argument is not echoed whole


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (("show", str(2**63 - 1)), "job_id", 2**63 - 1),
        (("list", "--offset", str(2**31 - 1)), "offset", 2**31 - 1),
        (("list", "--limit", str(2**31 - 1)), "limit", 2**31 - 1),
        (("enqueue", "--json", "{}", "--priority", str(2**31 - 1)), "priority", 2**31 - 1),
        (("enqueue", "--json", "{}", "--priority", str(-(2**31))), "priority", -(2**31)),
        (("enqueue", "--json", "{}", "--max-attempts", str(2**31 - 1)), "max_attempts", 2**31 - 1),
        (("worker", "-H", "m:f", "-c", "1024"), "concurrency", 1024),
    ],
)
def test_integers_at_the_edge_of_the_range_are_accepted(argv: tuple[str, ...], dest: str, value: int) -> None:
    assert getattr(parse(*argv), dest) == value


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"JOBQ_MAX_ATTEMPTS": str(2**31)}, "max_attempts must be between 1 and 2147483647"),
        ({"JOBQ_CONCURRENCY": "99999999999999999999"}, "concurrency must be between 1 and 1024"),
    ],
)
def test_settings_out_of_range_are_config_errors(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings({}, env=env, config_file=EMPTY_CONFIG)


@pytest.mark.parametrize(
    "argv",
    [
        ("enqueue", "--json", "{}", "--delay", "9" * 400),  # parsed as a float: infinity
        ("enqueue", "--json", "{}", "--timeout", "99999999999999999999w"),
        ("producer", "--interval", "101000000000"),
        ("worker", "-H", "m:f", "--lease", "99999999999w"),
        ("consumer", "--grace", "99999999999w"),
        ("consumer", "--delay", "0-1e400"),
        ("purge", "--older-than", "1e400"),
    ],
)
def test_durations_beyond_100_years_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    line = usage_error(capsys, *argv)
    assert "duration must be between 0 and 100 years" in line or "not a duration" in line
    assert len(line) < 300


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"JOBQ_PRODUCER_INTERVAL": "99999999999999999999"}, "producer_interval_seconds: duration must be between"),
        ({"JOBQ_LEASE": "9" * 400}, "lease_seconds: duration must be between"),
        ({"JOBQ_CONSUMER_DELAY": "1-99999999999999999999"}, "duration must be between"),
    ],
)
def test_durations_beyond_100_years_in_settings_are_config_errors(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings({}, env=env, config_file=EMPTY_CONFIG)


def test_durations_from_toml_numbers_are_checked_too(tmp_path: Any) -> None:
    toml = tmp_path / "jobq.toml"
    toml.write_text("poll_interval_seconds = 1e300\n")
    with pytest.raises(ConfigError, match="poll_interval_seconds: duration must be between"):
        load_settings({}, env={}, config_file=toml)
    toml.write_text("poll_interval_seconds = 0.5\n")
    assert load_settings({}, env={}, config_file=toml).poll_interval_seconds == 0.5


def test_job_ids_accept_a_hash_prefix() -> None:
    assert parse("retry", "#3", "4").job_ids == [3, 4]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pkg.mod:func", ("", "pkg.mod:func")),
        ("resize=pkg.mod:func", ("resize", "pkg.mod:func")),
        ("=pkg.mod:obj.method", ("", "pkg.mod:obj.method")),
    ],
)
def test_handler_forms(text: str, expected: tuple[str, str]) -> None:
    assert handler_arg(text) == expected


def test_web_apps_take_a_port_and_pass_extra_streamlit_args() -> None:
    args = parse("ops", "--port", "9000", "--", "--server.address", "0.0.0.0")
    assert (args.app, args.port, args.extra) == ("ops", 9000, ["--server.address", "0.0.0.0"])
    assert (parse("manager").port, parse("ops").port) == (8501, 8502)


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse("--version")
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("jobq ")


# -- errors from main() without a database ----------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["retry"], "give the ids"),
        (["retry", "1", "--all-failed"], "not both"),
        (["enqueue"], "either a PATH or --json"),
        (["enqueue", "x.txt", "--json", "{}"], "either a PATH or --json"),
    ],
)
def test_main_reports_one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    assert cli.main(argv) == cli_parser.EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("jobq: error: ")
    assert fragment in captured.err


def test_main_exits_130_quietly_on_ctrl_c(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(monitor, "cmd_version", interrupted)
    assert cli.main(["version"]) == cli_parser.EXIT_INTERRUPTED
    assert capsys.readouterr().err == ""


def test_parse_payload() -> None:
    assert parse_json('{"a": [1, 2]}') == {"a": [1, 2]}
    with pytest.raises(InvalidPayload, match=r"malformed JSON payload: .*line 1, column 2"):
        parse_json("{bad")
    with pytest.raises(InvalidPayload):
        parse_json("")
    # 60,000 levels raised RecursionError, 5,000 digits ValueError: each a traceback at the CLI.
    with pytest.raises(InvalidPayload, match="deeper than 64 levels"):
        parse_json("[" * 60_000 + "]" * 60_000)
    with pytest.raises(InvalidPayload, match=r"^payload cannot be read: Exceeds the limit \(4300 digits\)"):
        parse_json("1" + "0" * 5_000)


def test_collect_handlers_registry_then_explicit() -> None:
    def registered(ctx: Any) -> None: ...

    def explicit(ctx: Any) -> None: ...

    loaded: list[str] = []

    def load(spec: str) -> Callable[[Any], None]:
        loaded.append(spec)
        return explicit

    handlers = processes.collect_handlers([("a", "m:f"), ("", "m:g")], [], {"a": registered, "b": registered}, load)
    assert handlers == {"a": explicit, "b": registered, "": explicit}
    assert loaded == ["m:f", "m:g"]
    with pytest.raises(ConfigError, match="no handlers"):
        processes.collect_handlers([], [], {}, load)


def test_report_actions(capsys: pytest.CaptureFixture[str]) -> None:
    results = [
        ActionResult(1, True, JobStatus.PENDING, "resubmitted"),
        ActionResult(2, False, JobStatus.PENDING, "job 2: cannot resubmit a job that is PENDING"),
        ActionResult(3, False, None, "job 3 not found"),
    ]
    assert jobs.report_actions(results) == cli_parser.EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == "job 1: resubmitted (PENDING)\n"
    assert captured.err.splitlines() == [
        "jobq: error: job 2: cannot resubmit a job that is PENDING",
        "jobq: error: job 3 not found",
    ]
    assert jobs.report_actions(results[:1]) == cli_parser.EXIT_OK


def test_report_actions_sums_a_large_filtered_action(capsys: pytest.CaptureFixture[str]) -> None:
    many = jobs.ACTION_LINES_MAX + 5
    results = [ActionResult(i, True, JobStatus.CANCELLED, "cancelled") for i in range(many)]
    results += [ActionResult(1000 + i, False, JobStatus.COMPLETED, f"job {1000 + i}: refused") for i in range(many)]
    assert jobs.report_actions(results, filtered=True) == cli_parser.EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == f"{many} jobs: cancelled (CANCELLED)\n"
    assert captured.err.splitlines() == [
        *(f"jobq: error: job {1000 + i}: refused" for i in range(jobs.ACTION_LINES_MAX)),
        "jobq: error: ... and 5 more refused",
    ]
    # At most ACTION_LINES_MAX jobs, or ids named one by one: a line per job, as before.
    assert jobs.report_actions(results[: jobs.ACTION_LINES_MAX], filtered=True) == cli_parser.EXIT_OK
    assert len(capsys.readouterr().out.splitlines()) == jobs.ACTION_LINES_MAX
    jobs.report_actions(results[:many])
    assert len(capsys.readouterr().out.splitlines()) == many


# -- formatting -------------------------------------------------------------------------------------
def test_local_iso_has_an_offset() -> None:
    text = output.local_iso(0.0)
    assert text[:4] in ("1969", "1970")
    assert text[-6] in "+-"


def test_clean_flattens_control_characters_and_truncates() -> None:
    assert output.clean("a\nb\tc\x1b[31m") == "a b c [31m"
    assert output.clean("x" * 50, 10) == "xxxxxxx..."
    assert output.clean("short", 10) == "short"


def test_format_table_aligns_columns() -> None:
    table = output.format_table(("ID", "NAME"), [(1, "alpha"), (100, "b")])
    assert table.splitlines() == ["ID   NAME", "1    alpha", "100  b"]


def _job(**changes: Any) -> Job:
    base: dict[str, Any] = dict(
        id=7, queue="default", task="", payload={"path": "data/files/a.txt"}, status=JobStatus.FAILED,
        priority=0, run_at=100.0, attempts=3, max_attempts=3, created_at=100.0, updated_at=160.0,
        last_error="Traceback (most recent call last):\nOSError: disk\n", lease_token="secret",
    )  # fmt: skip
    base.update(changes)
    return Job(**base)


def test_jobs_table_and_job_dict() -> None:
    text = output.jobs_table([_job()], now=400.0)
    header, row = text.splitlines()
    assert header.split() == ["ID", "STATUS", "QUEUE", "TASK", "ATTEMPTS", "CREATED", "PAYLOAD", "LAST", "ERROR"]
    assert row.split()[:6] == ["7", "FAILED", "default", "-", "3/3", "5m"]
    assert row.endswith("OSError: disk")
    data = output.job_dict(_job())
    assert data["status"] == "FAILED"
    assert "lease_token" not in data
    # A queue no worker can serve (stored by an older jobq, or by hand) was a blank cell, or
    # looked like the queue it is not.
    rows = output.jobs_table([_job(queue=""), _job(queue="mail ")], now=400.0).splitlines()[1:]
    assert [r.split()[2] for r in rows] == ["''", "'mail"]
    assert "\nqueue       'mail '\n" in output.job_text(_job(queue="mail "), [], now=400.0)
    stats = QueueStats({"PENDING": 1}, {"": {"PENDING": 1}}, 800.0, 0, 0, 0)
    assert output.stats_text(stats, now=1000.0).splitlines()[9].split() == ["''", "1", "0", "0", "0", "0"]


def test_job_text_shows_fields_and_events() -> None:
    from jobq.job import Event

    events = [Event(1, 7, 100.0, "enqueued", None, 0, {}), Event(2, 7, 160.0, "failed", "w1", 3, {"error": "x"})]
    text = output.job_text(_job(), events, now=400.0)
    fields = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in text.splitlines()[:14] if "  " in line}
    assert fields["status"] == "FAILED"
    assert fields["last error"] == "OSError: disk"
    assert fields["payload"] == '{"path":"data/files/a.txt"}'
    assert "events (2):" in text
    assert text.splitlines()[-1].split()[1:4] == ["failed", "w1", "3"]


def test_stats_text_and_dict() -> None:
    stats = QueueStats({"PENDING": 2, "COMPLETED": 1}, {"default": {"PENDING": 2, "COMPLETED": 1}}, 800.0, 4, 1, 0)
    lines = output.stats_text(stats, now=1000.0).splitlines()
    assert lines[1].split() == ["PENDING", "2"] and lines[6].split() == ["total", "3"]
    assert lines[9].split() == ["default", "2", "0", "1", "0", "0"]
    assert lines[11].startswith("oldest pending:      3m 20s (due ")
    assert lines[12:] == ["completed last min:  4", "failed last min:     1", "expired leases:      0"]
    assert output.stats_dict(stats, 1000.0)["oldest_pending_age_seconds"] == 200.0
    empty = QueueStats({}, {}, None, 0, 0, 0)
    assert "oldest pending:      -" in output.stats_text(empty, 1000.0).splitlines()
    assert output.stats_dict(empty, 1000.0)["oldest_pending_age_seconds"] is None


def test_worker_dict_and_table_say_alive_lost_or_stopped() -> None:
    w = WorkerInfo(id="w", name="n", host="h", pid=1, queues=("default",), started_at=0.0, last_seen_at=100.0)
    assert output.worker_dict(w, 105.0, 10.0)["alive"] is True
    lost = output.worker_dict(w, 131.0, 10.0)
    assert (lost["state"], lost["alive"]) == ("lost", False)
    assert '"state": "lost"' in json.dumps(lost)
    stopped = dataclasses.replace(w, stopped_at=120.0)
    assert output.worker_dict(stopped, 121.0, 10.0)["state"] == "stopped"
    assert output.workers_table([w], 131.0, 10.0).splitlines()[1].split()[:2] == ["n", "lost"]
    assert "CLOCK" not in output.workers_table([w], 105.0, 10.0)  # nothing measured: SQLite
    fast = dataclasses.replace(w, clock_skew=60.04)
    header, row = output.workers_table([fast, w], 105.0, 10.0).splitlines()[:2]
    assert header.split()[6:9] == ["LAST", "SEEN", "CLOCK"] and row[header.index("CLOCK") :].startswith("+60.0 s")
    assert output.worker_dict(fast, 105.0, 10.0)["clock_skew"] == 60.04


def test_web_command_hands_the_resolved_settings_to_streamlit(monkeypatch: pytest.MonkeyPatch) -> None:
    import jobq.web

    calls: list[tuple[str, int, list[str]]] = []
    monkeypatch.setattr(jobq.web, "launch", lambda app, port, extra: calls.append((app, port, extra)))
    monkeypatch.delenv("JOBQ_DATABASE_URL", raising=False)
    monkeypatch.delenv("JOBQ_CONFIG", raising=False)
    argv = [
        "manager",
        "--config",
        EMPTY_CONFIG,
        "--db",
        "sqlite:///m.db",
        "--port",
        "9100",
        "--",
        "--theme.base",
        "dark",
    ]
    assert cli.main(argv) == cli_parser.EXIT_OK
    assert calls == [("manager", 9100, ["--theme.base", "dark"])]
    # Streamlit runs the app in a child process: the URL travels through its environment.
    assert os.environ["JOBQ_DATABASE_URL"] == "sqlite:///m.db"
    assert os.environ["JOBQ_CONFIG"] == EMPTY_CONFIG


def test_producer_and_consumer_get_name_only_when_they_accept_it() -> None:
    settings = load_settings({}, env={}, config_file=EMPTY_CONFIG)
    seen: list[tuple[Any, ...]] = []

    def with_name(s: Any, *, name: str | None = None) -> None:
        seen.append((s, name))

    def without_name(s: Any) -> int:
        seen.append((s,))
        return 3

    assert processes._call_with_name(with_name, settings, "c1") == cli_parser.EXIT_OK
    assert processes._call_with_name(without_name, settings, None) == 3
    assert seen == [(settings, "c1"), (settings,)]
    with pytest.raises(ConfigError, match="--name is not supported"):
        processes._call_with_name(without_name, settings, "c1")


@pytest.mark.parametrize("app", ["manager", "ops"])
def test_a_web_app_on_a_port_in_use_is_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, app: str
) -> None:
    # Streamlit said only "Port N is not available" after its start-up, with no jobq: line.
    started: list[str] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: started.append(path))
    for name in ("database_url", "operator"):  # cmd_web hands the settings on in the environment
        monkeypatch.delenv(env_name(name), raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["--db", "unused.db", app, "--port", str(port)]) == cli_parser.EXIT_ERROR
        captured = capsys.readouterr()
        assert captured.err == (
            f"jobq: error: port {port} on 127.0.0.1 is in use (another jobq app, or another program): "
            "choose another with --port\n"
        )
        # A later --server.port among Streamlit's own options wins, as it does for Streamlit.
        argv = ["--db", "unused.db", app, "--port", "1", "--", f"--server.port={port}"]
        assert cli.main(argv) == cli_parser.EXIT_ERROR
        assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
    assert started == []
    # Free again: the app starts (here, the stand-in for exec).
    assert cli.main(["--db", "unused.db", app, "--port", str(port)]) == cli_parser.EXIT_OK
    assert started == [sys.executable]


def test_jobqs_warnings_during_a_short_command_are_jobq_warning_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write waiting for a held lock says so on the "jobq.sqlite" logger; a short command has set
    # up no logging, and Python's last-resort handler printed the message bare.
    cli._warning_lines()
    cli._warning_lines()  # once, however often main() runs in a process
    handlers = [h for h in logging.getLogger("jobq").handlers if isinstance(h, cli._WarningLines)]
    assert len(handlers) == 1
    record = logging.LogRecord("jobq.sqlite", logging.WARNING, __file__, 1, "q.db: still %s\x1b[2J", ("waiting",), None)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in `jobq retry` (pytest adds its own)
    handlers[0].handle(record)
    assert capsys.readouterr().err == "jobq: warning: q.db: still waiting [2J\n"
    # A worker or the producer configures logging: the line is theirs to write, in their format.
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.NullHandler()])
    handlers[0].handle(record)
    assert capsys.readouterr().err == ""
