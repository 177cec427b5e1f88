"""A task's retry policy (``@jobq.task(name, max_attempts=, backoff=, retry_on=, timeout=)``), run
by a real worker on each backend."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import jobq
from jobq import JobStatus, Worker
from jobq.config import DURATION_MAX_SECONDS
from jobq.retry import POLICIES
from jobq.worker import REGISTRY

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def tasks() -> Iterator[None]:
    """Tasks registered by a test are unregistered after it (the registry is per process)."""
    before = set(REGISTRY)
    yield
    for name in set(REGISTRY) - before:
        del REGISTRY[name]
        POLICIES.pop(name, None)


def test_retry_on_max_attempts_and_timeout_per_task(backend_url: str, tasks: None) -> None:
    @jobq.task("flaky", max_attempts=4, backoff=0, retry_on=(TimeoutError,), timeout=30)
    def flaky(ctx: jobq.JobContext) -> None:
        if ctx.payload == "slow upstream":
            raise TimeoutError(ctx.payload)
        raise ValueError("bad input")

    with jobq.Queue(backend_url) as q:
        retried = q.enqueue("slow upstream", task="flaky")
        at_once = q.enqueue("bad", task="flaky")
        overridden = q.enqueue("slow upstream", task="flaky", max_attempts=2, timeout=5)
        plain = q.enqueue("slow upstream", task="other")  # no policy: the settings' defaults
        assert (q.get(retried).max_attempts, q.get(retried).timeout) == (4, 30)
        assert (q.get(overridden).max_attempts, q.get(overridden).timeout) == (2, 5)
        assert (q.get(plain).max_attempts, q.get(plain).timeout) == (q.settings.max_attempts, None)
        q.cancel(plain)
        Worker(q, {"flaky": flaky}, exit_when_idle=True).run()
        done = {i: q.get(i) for i in (retried, at_once, overridden)}
    assert {i: (j.status, j.attempts) for i, j in done.items()} == {
        retried: (JobStatus.FAILED, 4),
        at_once: (JobStatus.FAILED, 1),  # ValueError is not in retry_on: failed at once
        overridden: (JobStatus.FAILED, 2),
    }
    assert "not retried: ValueError is not in the job's retry_on" in (done[at_once].last_error or "")
    assert "TimeoutError" in (done[retried].last_error or "")


@pytest.mark.parametrize(
    ("backoff", "delay"),
    [
        (lambda attempt: 1000.0 * attempt, 1000.0),
        # Past 100 years: refused where the retry is recorded, and the worker tried to record it
        # again and again (the job stayed PROCESSING); now it is recorded as 100 years.
        (lambda attempt: 1e300, DURATION_MAX_SECONDS),
    ],
    ids=["seconds", "centuries"],
)
def test_backoff_per_task(backend_url: str, tasks: None, backoff: Callable[[int], float], delay: float) -> None:
    @jobq.task("later", max_attempts=3, backoff=backoff)
    def later(ctx: jobq.JobContext) -> None:
        raise RuntimeError("not yet")

    with jobq.Queue(backend_url) as q:
        job_id = q.enqueue({}, task="later")
        Worker(q, {"later": later}, exit_when_idle=True).run()
        job = q.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.PENDING, 1)
    assert delay - 10 < job.run_at - time.time() <= delay  # the task's backoff, not the queue's


def test_a_job_with_over_a_thousand_attempts_fails_each_one_to_the_last(sqlite_url: str, tasks: None) -> None:
    """The backoff of attempt 1,025 raised OverflowError (``2.0 ** 1024``): that failure was never
    recorded, the job stayed PROCESSING and a worker told to exit when idle never did."""

    def boom(ctx: jobq.JobContext) -> None:
        raise RuntimeError("again")

    with jobq.Queue(sqlite_url) as q:
        job_id = q.enqueue({}, task="boom", max_attempts=1_030, backoff={"base": 0, "cap": 0})
        Worker(q, {"boom": boom}, exit_when_idle=True).run()
        job = q.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 1_030)


def test_bad_policies_are_refused_in_one_line() -> None:
    for kwargs, message in [
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"timeout": -1}, "timeout must be a number of seconds above 0 and at most 100 years"),
        ({"timeout": 1e300}, "timeout must be a number of seconds above 0 and at most 100 years"),
        ({"retry_on": ValueError}, "retry_on must be a tuple of exception classes"),
        ({"retry_on": ("ValueError",)}, "retry_on must be a tuple of exception classes"),
        (
            {"backoff": "10s"},
            r"backoff must be seconds from 0 to 100 years, a list of them, or \{'base': s, 'cap': s\}, "
            "or a function of the attempt number",
        ),
    ]:
        with pytest.raises(jobq.ConfigError, match=f"^{message}$"):
            jobq.task("bad", **kwargs)  # type: ignore[arg-type]
    assert "bad" not in REGISTRY


# -- a worker applies its task's defaults to jobs from producers that never imported the task ----
TASKS_MODULE = """
import jobq

class Flaky(Exception):
    pass

@jobq.task("policy.flaky", max_attempts=4, backoff=0, retry_on=(Flaky,))
def flaky(ctx):
    raise Flaky(str(ctx.payload))

@jobq.task("policy.picky", max_attempts=5, backoff=0, retry_on=(Flaky,))
def picky(ctx):
    raise ValueError("not in the task's retry_on")

@jobq.task("policy.slow", max_attempts=1, timeout=0.5)
def slow(ctx):
    ctx.sleep(60)
"""


def _cli(tmp_path: Path, url: str, *args: str) -> str:
    """The real ``jobq`` CLI in its own process; it never imports the task module unless told to."""
    env = {**os.environ, "JOBQ_DATABASE_URL": url, "PYTHONPATH": f"{tmp_path}{os.pathsep}{SRC}"}
    done = subprocess.run(
        [sys.executable, "-m", "jobq.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_worker_applies_its_task_defaults_unless_the_enqueue_set_them(backend_url: str, tmp_path: Path) -> None:
    (tmp_path / "policytasks.py").write_text(TASKS_MODULE)
    enqueues = {
        "task defaults": ["--task", "policy.flaky"],
        "explicit max_attempts": ["--task", "policy.flaky", "--max-attempts", "2"],
        "not in retry_on": ["--task", "policy.picky"],
        "explicit retry_on": ["--task", "policy.picky", "--retry-on", "ValueError", "--max-attempts", "3"],
        "task timeout": ["--task", "policy.slow"],
        "explicit backoff": ["--task", "policy.flaky", "--backoff", "1h"],
    }
    with jobq.Queue(backend_url) as q:  # this process never imports policytasks either
        ids = {name: q.enqueue({}, task=a[1]) for name, a in enqueues.items() if len(a) == 2}
        # The CLI's flags, the way a shell script or another service enqueues.
        ids |= {
            name: int(_cli(tmp_path, backend_url, "enqueue", "--json", "{}", *a))
            for name, a in enqueues.items()
            if len(a) > 2
        }
        # The producer did not import the tasks: the rows hold the settings' defaults until run.
        assert q.get(ids["task defaults"]).max_attempts == q.settings.max_attempts == 3
        assert q.get(ids["task timeout"]).timeout is None
    _cli(tmp_path, backend_url, "worker", "--import", "policytasks", "--exit-when-idle", "--concurrency", "2")
    with jobq.Queue(backend_url) as q:
        got = {name: q.get(i) for name, i in ids.items()}
    assert {name: (j.status, j.attempts) for name, j in got.items()} == {
        "task defaults": (JobStatus.FAILED, 4),  # the task's max_attempts, not the stored 3
        "explicit max_attempts": (JobStatus.FAILED, 2),  # the enqueue's wins over the task's
        "not in retry_on": (JobStatus.FAILED, 1),  # the task's retry_on
        "explicit retry_on": (JobStatus.FAILED, 3),  # the enqueue's retry_on wins
        "task timeout": (JobStatus.FAILED, 1),  # the task's timeout stopped it
        "explicit backoff": (JobStatus.PENDING, 1),  # the enqueue's 1 h, not the task's 0
    }
    assert "not retried: ValueError is not in the job's retry_on" in (got["not in retry_on"].last_error or "")
    assert "timed out" in (got["task timeout"].last_error or "")
    assert 3500 < got["explicit backoff"].run_at - time.time() <= 3600
    shown = _cli(tmp_path, backend_url, "show", str(ids["explicit retry_on"]))
    [line] = [line for line in shown.splitlines() if line.startswith("policy ")]
    assert '"retry_on":["builtins.ValueError"]' in line and line.endswith("(set at enqueue)")
