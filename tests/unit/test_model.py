"""Unit tests: the transition table, its drawing, backoff, and config layering (no I/O but tmp files)."""

from __future__ import annotations

import dataclasses
import doctest
import random
from pathlib import Path

import pytest

import jobq
from jobq import job as job_module
from jobq.backends import common
from jobq.backends.common import plan_operator_action
from jobq.config import (
    LEASE_SECONDS_DEFAULT,
    Settings,
    env_name,
    load_settings,
    parse_duration,
    parse_range,
)
from jobq.errors import ConfigError
from jobq.job import TRANSITIONS, Action, JobStatus, allowed, mermaid_state_diagram, operator_actions
from jobq.retry import backoff_seconds

REPO = Path(__file__).resolve().parents[2]


def test_every_action_has_one_transition() -> None:
    assert set(TRANSITIONS) == set(Action)


@pytest.mark.parametrize(
    ("action", "status", "ok"),
    [
        (Action.CLAIM, JobStatus.PENDING, True),
        (Action.CLAIM, JobStatus.FAILED, False),
        (Action.COMPLETE, JobStatus.PROCESSING, True),
        (Action.COMPLETE, JobStatus.PENDING, False),
        (Action.RESUBMIT, JobStatus.FAILED, True),
        (Action.RESUBMIT, JobStatus.CANCELLED, True),
        (Action.RESUBMIT, JobStatus.COMPLETED, True),
        (Action.RESUBMIT, JobStatus.PENDING, False),
        (Action.RESUBMIT, JobStatus.PROCESSING, False),
        (Action.CANCEL, JobStatus.PENDING, True),
        (Action.CANCEL, JobStatus.FAILED, True),
        (Action.CANCEL, JobStatus.COMPLETED, False),
        (Action.REQUEST_CANCEL, JobStatus.PROCESSING, True),
    ],
)
def test_allowed(action: Action, status: JobStatus, ok: bool) -> None:
    assert allowed(action, status) is ok


@pytest.mark.parametrize(
    ("status", "legal"),
    [
        (JobStatus.PENDING, {"cancel": Action.CANCEL}),
        (JobStatus.PROCESSING, {"cancel": Action.REQUEST_CANCEL}),
        (JobStatus.COMPLETED, {"resubmit": Action.RESUBMIT}),
        (JobStatus.FAILED, {"resubmit": Action.RESUBMIT, "cancel": Action.CANCEL}),
        (JobStatus.CANCELLED, {"resubmit": Action.RESUBMIT}),
    ],
)
def test_operator_actions(status: JobStatus, legal: dict[str, Action]) -> None:
    assert operator_actions(status) == legal
    assert operator_actions(status.value) == legal
    for action in legal.values():
        assert allowed(action, status) and TRANSITIONS[action].who == "operator"


def test_the_examples_in_the_model_docstrings_hold() -> None:
    result = doctest.testmod(job_module)
    assert result.attempted >= 2 and result.failed == 0


def test_backends_plan_operator_actions_as_the_model_does() -> None:
    for status in JobStatus:
        for verb in ("resubmit", "cancel"):
            action, result = plan_operator_action(verb, 1, status.value)
            assert action == operator_actions(status).get(verb), (verb, status)
            assert result.ok is (action is not None)


def test_terminal_states_only_leave_by_operator_action() -> None:
    for t in TRANSITIONS.values():
        if t.sources & {JobStatus.COMPLETED, JobStatus.CANCELLED}:
            assert t.who == "operator", t


def test_docs_draw_the_same_table() -> None:
    doc = (REPO / "docs" / "state_machine.md").read_text()
    assert mermaid_state_diagram() in doc
    for t in TRANSITIONS.values():
        assert f"| `{t.action.value}` |" in doc


def test_backoff_grows_with_jitter_and_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_seconds(a, base=1, cap=60, rng=rng) for a in range(1, 10)]
    for attempt, delay in enumerate(delays, start=1):
        nominal = min(60, 2 ** (attempt - 1))
        assert nominal / 2 <= delay <= nominal
    assert max(delays) <= 60
    spread = {round(backoff_seconds(3, rng=rng), 6) for _ in range(20)}
    assert len(spread) > 1  # jittered


@pytest.mark.parametrize("attempt", [1_024, 1_025, 1_100, 2**31 - 1])
def test_backoff_of_a_very_late_attempt_is_the_cap(attempt: int) -> None:
    """2.0 ** 1024 raised OverflowError: the failure of attempt 1,025 and later was never recorded."""
    assert 30 <= backoff_seconds(attempt, base=1, cap=60) <= 60
    assert backoff_seconds(attempt, base=0, cap=60) == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("1.5s", 1.5), ("250ms", 0.25), ("10m", 600), ("2h", 7200), ("7d", 604800), (3, 3.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "soon", "-1", "5 parsecs", "1e3"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(bad)


def test_parse_range() -> None:
    assert parse_range("7-15") == (7, 15)
    assert parse_range("0-0.05") == (0, 0.05)
    assert parse_range("3") == (3, 3)
    for bad in ("15-7", "a-b", "1-2-3", "-1"):
        with pytest.raises(ConfigError):
            parse_range(bad)


def test_config_layers_file_env_overrides(tmp_path: Path) -> None:
    config = tmp_path / "jobq.toml"
    config.write_text('[jobq]\nlease_seconds = 12\nqueue = "from-file"\nmax_attempts = 4\n')
    env = {"JOBQ_LEASE": "20", "JOBQ_MAX_ATTEMPTS": "6", "JOBQ_DATABASE_URL": "sqlite:///x.db"}
    s = load_settings({"max_attempts": 9, "queue": None}, env=env, config_file=config)
    assert s.lease_seconds == 20  # env beats file
    assert s.queue == "from-file"  # file beats default; a None flag changes nothing
    assert s.max_attempts == 9  # flag beats env
    assert s.database_url == "sqlite:///x.db"
    assert s.heartbeat_seconds == pytest.approx(20 / 3)


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    s = load_settings(env={}, config_file=empty)
    assert s == Settings() and s.lease_seconds == LEASE_SECONDS_DEFAULT
    assert env_name("producer_interval_seconds") == "JOBQ_PRODUCER_INTERVAL"
    assert env_name("data_dir") == "JOBQ_DATA_DIR"
    with pytest.raises(ConfigError, match="max_attempts"):
        load_settings(env={"JOBQ_MAX_ATTEMPTS": "many"}, config_file=empty)
    bad = tmp_path / "bad.toml"
    bad.write_text("lease_seconds = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={}, config_file=bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown settings: colour"):
        load_settings(env={}, config_file=unknown)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("jobq = 5", r"\[jobq\] must be a table of settings"),
        ("consumer_delay = 5", "consumer_delay must be text, not 5"),
        ("consumer_delay = [1, 2]", r"consumer_delay must be text, not \[1, 2\]"),
        ("database_url = 5", "database_url must be text, not 5"),
        ("data_dir = []", r"data_dir must be text, not \[\]"),
        ("concurrency = 2.5", "concurrency must be a whole number, not 2.5"),
        ("metrics_port = 1.5", "metrics_port must be a whole number, not 1.5"),
        ("lease_seconds = true", "lease_seconds must be a duration, not True"),
        ("max_attempts = false", "max_attempts must be a whole number, not False"),
        ("lease_seconds = [30]", r"lease_seconds must be a duration, not \[30\]"),
        ("payload_limit_bytes = -1", "payload_limit_bytes must be between 1 and"),
        ("poll_interval_seconds = 0", "poll_interval_seconds must be at least 0.001 s"),
        ("producer_interval_seconds = 0", "producer_interval_seconds must be at least 0.001 s"),
        ("[jobq]\nmax_attempts = '١٢'", "max_attempts must be a whole number"),
    ],
)
def test_a_setting_of_the_wrong_type_is_one_line(tmp_path: Path, toml: str, message: str) -> None:
    """Each of these was accepted and failed later with a traceback, or ran wrongly (a 1 s lease
    from `true`, a worker spinning at 100 % CPU from a poll interval of 0, a producer writing files
    as fast as the disk took them from an interval of 0)."""
    config = tmp_path / "jobq.toml"
    config.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings(env={}, config_file=config)
    assert "\n" not in str(raised.value)


# -- job_from_row: the fast path for well-typed rows and the checking path agree -------------
def _good_row(status: str = "PROCESSING") -> tuple[object, ...]:
    return (
        12, "default", "task", '{"n": 1}', status, 0, 100.5, 1, 3, 100.0, 101.0,
        101.0, None, 30.0, None, "worker-1", "nonce-12", 400.0, "key", '{"ok": true}', 0, 2,
        '{"max_attempts":5}',
    )  # fmt: skip


def test_job_from_row_fast_path_matches_the_checked_path() -> None:

    for status in ("PENDING", "PROCESSING", "COMPLETED"):
        row = _good_row(status)
        assert common._well_typed(row)
        fast = common.job_from_row(row)
        # An int time is valid but not a float: it takes the checking path, column by column.
        checked = common.job_from_row((*row[:6], 100, *row[7:]))
        assert common._well_typed((*row[:6], 100, *row[7:])) is False
        assert dataclasses.replace(checked, run_at=100.5) == fast
        assert fast.defect is None and fast.payload == {"n": 1} and fast.result == {"ok": True}
        assert fast.lease_token == ("nonce-12" if status == "PROCESSING" else None)
        assert fast.policy == '{"max_attempts":5}'


def test_the_fast_job_builder_makes_the_same_frozen_job_as_the_dataclass() -> None:
    # job_from_row builds a well-typed row's Job through slot descriptors (common._build_job),
    # not through Job.__init__: the result must be indistinguishable from Job(...).
    values = [getattr(common.job_from_row(_good_row()), f.name) for f in dataclasses.fields(job_module.Job)]
    fast, plain = common._build_job(*values), job_module.Job(*values)
    assert type(fast) is job_module.Job
    assert fast == plain and repr(fast) == repr(plain)
    assert dataclasses.astuple(fast) == dataclasses.astuple(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.attempts = 5  # type: ignore[misc]
    assert dataclasses.replace(fast, attempts=5).attempts == 5
    with pytest.raises(TypeError):  # every field is required by position: none is left unset
        common._build_job(*values[:-1])


def test_the_fast_lease_completion_and_new_job_builders_make_the_dataclasses_own_instances() -> None:
    from jobq.backends.base import Completion, Lease

    lease = common.build_lease(7, "nonce-7", "w")
    completion = common.build_completion(lease, '{"ok":true}', None)
    assert type(lease) is Lease and type(completion) is Completion
    assert lease == Lease(7, "nonce-7", "w") and hash(lease) == hash(Lease(7, "nonce-7", "w"))
    assert completion == Completion(Lease(7, "nonce-7", "w"), '{"ok":true}')
    assert repr(completion) == repr(Completion(Lease(7, "nonce-7", "w"), '{"ok":true}'))
    with pytest.raises(dataclasses.FrozenInstanceError):
        lease.token = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        common.build_completion(lease, None)
    from jobq.backends.base import NewJob

    values = ['"p"', "q", "t", 2, 1.5, 3, 9.0, "k", "active", 4.5, "raise", "c", '{"max_attempts":3}']
    new_job = common.build_new_job(*values)
    assert type(new_job) is NewJob and new_job == NewJob(*values)
    assert dataclasses.astuple(new_job) == tuple(values)


@pytest.mark.parametrize(
    ("index", "value", "defect"),
    [
        (5, "high", "priority"),
        (6, float("inf"), "run_at"),
        (9, float("nan"), "created_at"),
        (11, "soon", "started_at"),
        (7, True, "attempts"),
        (4, "DONE", "status"),
        (3, "{not json", "payload"),
    ],
)
def test_job_from_row_names_each_bad_column(index: int, value: object, defect: str) -> None:

    row = list(_good_row())
    row[index] = value
    assert not common._well_typed(row) or index in (3, 4)  # payload and status are checked apart
    job = common.job_from_row(row)
    assert job.defect is not None and defect in job.defect


@pytest.mark.parametrize("url", ["", "  ", 5, b"sqlite:///q.db"])
def test_a_database_url_that_is_no_text_is_refused(
    url: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Queue("")`` opened the default database (data/queue.db, created); ``Queue(5)`` raised TypeError."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="a database URL is text"):
        jobq.Queue(url)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
