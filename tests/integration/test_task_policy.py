"""A task's retry policy (``@jobq.task(name, max_attempts=, backoff=, retry_on=, timeout=)``), run
by a real worker on each backend."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import jobq
from jobq import JobStatus, Worker
from jobq.retry import POLICIES
from jobq.worker import REGISTRY


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


def test_backoff_per_task(backend_url: str, tasks: None) -> None:
    @jobq.task("later", max_attempts=3, backoff=lambda attempt: 1000.0 * attempt)
    def later(ctx: jobq.JobContext) -> None:
        raise RuntimeError("not yet")

    with jobq.Queue(backend_url) as q:
        job_id = q.enqueue({}, task="later")
        Worker(q, {"later": later}, exit_when_idle=True).run()
        job = q.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.PENDING, 1)
    assert 990 < job.run_at - time.time() <= 1000  # the task's backoff, not the queue's (seconds)


def test_bad_policies_are_refused_in_one_line() -> None:
    for kwargs, message in [
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"timeout": -1}, "timeout must be a positive number of seconds"),
        ({"retry_on": ValueError}, "retry_on must be a tuple of exception classes"),
        ({"retry_on": ("ValueError",)}, "retry_on must be a tuple of exception classes"),
        (
            {"backoff": "10s"},
            r"backoff must be seconds >= 0, a list of them, or \{'base': s, 'cap': s\}, "
            "or a function of the attempt number",
        ),
    ]:
        with pytest.raises(jobq.ConfigError, match=f"^{message}$"):
            jobq.task("bad", **kwargs)  # type: ignore[arg-type]
    assert "bad" not in REGISTRY
