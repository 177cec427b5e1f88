"""The retry policy's precedence (enqueue > task > settings) and its stored form, without I/O."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

import pytest

from jobq import InvalidPayload
from jobq.job import Job, JobStatus
from jobq.retry import (
    POLICIES,
    JobPolicy,
    TaskPolicy,
    backoff_spec,
    on_failure,
    raised_is_named,
    retry_on_names,
    spec_delay,
    with_task_defaults,
)


class Flaky(ConnectionError):
    pass


def _job(task: str = "t", policy: JobPolicy | None = None, attempts: int = 1) -> Job:
    return Job(
        7, "default", task, {}, JobStatus.PROCESSING, 0, 0.0, attempts, 3, 0.0, 0.0,
        timeout=None, policy=None if policy is None else policy.to_json(),
    )  # fmt: skip


@pytest.fixture
def task_policy() -> Iterator[None]:
    POLICIES["t"] = TaskPolicy(max_attempts=6, backoff=40, retry_on=(TimeoutError,), timeout=9)
    yield
    del POLICIES["t"]


def test_backoff_specs() -> None:
    assert backoff_spec(10) == 10.0 and spec_delay(10.0, 4) == 10.0
    steps = backoff_spec((1, 10, 60))
    assert [spec_delay(steps, a) for a in (1, 2, 3, 4, 9)] == [1, 10, 60, 60, 60]
    exponential = backoff_spec({"base": 2, "cap": 5})
    random.seed(3)
    assert all(1.0 <= spec_delay(exponential, 1) <= 2.0 for _ in range(50))
    assert all(2.5 <= spec_delay(exponential, 9) <= 5.0 for _ in range(50))  # capped, with jitter
    for bad in (True, -1, float("nan"), float("inf"), [], [1, -1], {"base": 1}, {"base": 1, "cap": "x"}, "1s"):
        with pytest.raises(InvalidPayload, match=r"^backoff must be"):
            backoff_spec(bad)


def test_retry_on_is_matched_by_name_along_the_mro() -> None:
    names = retry_on_names([ConnectionError, "KeyError", "mymod.Other"])
    assert names == ("builtins.ConnectionError", "builtins.KeyError", "mymod.Other")
    assert raised_is_named(Flaky("x"), names)  # a subclass of a named class
    assert raised_is_named(KeyError("x"), names)
    assert not raised_is_named(ValueError("x"), names)
    assert retry_on_names(Flaky) == (f"{__name__}.Flaky",)
    assert retry_on_names(()) == ()  # nothing is retried


def test_a_stored_policy_round_trips_and_a_foreign_one_is_refused() -> None:
    policy = JobPolicy(max_attempts=2, timeout=1.5, backoff=[1.0, 2.0], retry_on=("builtins.OSError",))
    assert JobPolicy.from_json(policy.to_json()) == policy
    assert JobPolicy().to_json() is None and JobPolicy.from_json(None) is None
    for text in ("nope", "[]", '{"pickle": 1}', '{"max_attempts": 0}', '{"timeout": -1}', '{"retry_on": [1]}'):
        with pytest.raises(InvalidPayload):
            JobPolicy.from_json(text)


def test_without_any_policy_the_job_runs_as_stored() -> None:
    job = _job("unknown")
    assert with_task_defaults(job) is job
    assert on_failure(job, ValueError()) == (True, None)  # every exception, the queue's backoff


def test_the_task_defaults_apply_to_a_job_whose_enqueue_set_nothing(task_policy: None) -> None:
    job = with_task_defaults(_job())
    assert (job.max_attempts, job.timeout) == (6, 9)
    assert on_failure(job, TimeoutError()) == (True, 40.0)
    assert on_failure(job, ValueError()) == (False, None)


def test_the_enqueue_wins_field_by_field(task_policy: None) -> None:
    job = with_task_defaults(_job(policy=JobPolicy(max_attempts=2, retry_on=("builtins.ValueError",))))
    assert (job.max_attempts, job.timeout) == (2, 9)  # timeout: the task's
    assert on_failure(job, ValueError()) == (True, 40.0)  # backoff: the task's
    assert on_failure(job, TimeoutError()) == (False, None)
    later = dataclasses.replace(job, attempts=3, policy=JobPolicy(backoff=[5, 50], timeout=1).to_json())
    assert with_task_defaults(later).timeout == 1
    assert on_failure(later, TimeoutError()) == (True, 50.0)


def test_an_unreadable_stored_policy_falls_back_to_the_task(task_policy: None, caplog) -> None:
    job = dataclasses.replace(_job(), policy='{"retry_on": "not a list of names!"}')
    assert with_task_defaults(job).max_attempts == 6
    assert on_failure(job, TimeoutError()) == (True, 40.0)
    assert "using the task's and the queue's policy" in caplog.text
