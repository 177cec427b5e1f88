"""The backend contract: ``Queue.wait``, woken by the backend's wake-up channel when a job finishes."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable

import pytest

import jobq
from jobq.job import Job
from jobq.testing.contract.common import C, F, X

#: How long a test lets a woken waiter take to return. The poll is turned off meanwhile (an hour),
#: so only a wake-up can make it return this early.
WOKEN_WITHIN_SECONDS = 30.0
#: The waiter's own timeout: well beyond the above, so that its last read at its deadline (which
#: would find the job finished) cannot pass for a wake-up.
WAITER_TIMEOUT_SECONDS = 10 * WOKEN_WITHIN_SECONDS


def test_wait_returns_a_finished_job_and_refuses_unknown_ones(queue: jobq.Queue) -> None:
    job_id = queue.enqueue({"n": 1})
    job = queue.claim("w1")
    assert job is not None
    queue.complete(job, {"ok": True})
    done = queue.wait(job_id, timeout=0)
    assert (done.status, done.result) == (C, {"ok": True})
    with pytest.raises(jobq.JobNotFound):
        queue.wait(job_id + 1000, timeout=1)


def test_wait_times_out_with_a_clear_error(queue: jobq.Queue) -> None:
    job_id = queue.enqueue({})
    with pytest.raises(TimeoutError, match=rf"job {job_id} did not finish within 0.2 s \(it is PENDING\)"):
        queue.wait(job_id, timeout=0.2)


def test_wait_refuses_a_timeout_that_is_no_time(queue: jobq.Queue) -> None:
    """A NaN timeout waited forever (its deadline was never reached); infinity is no limit."""
    job_id = queue.enqueue({})
    for bad in (math.nan, -1, "5", True):
        with pytest.raises(ValueError, match="timeout must be a number of seconds, not negative"):
            queue.wait(job_id, timeout=bad)  # type: ignore[arg-type]
    job = queue.claim("w")
    assert job is not None
    queue.complete(job)
    assert queue.wait(job_id, timeout=math.inf).status == C


def _waiting(q: jobq.Queue, job_id: int) -> tuple[threading.Thread, list[Job | BaseException]]:
    got: list[Job | BaseException] = []

    def run() -> None:
        try:
            got.append(q.wait(job_id, timeout=WAITER_TIMEOUT_SECONDS))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            got.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


@pytest.mark.parametrize("finish", ["complete", "fail", "cancel"])
def test_wait_is_woken_when_the_job_finishes(
    queue: jobq.Queue, open_queue: Callable[[], jobq.Queue], monkeypatch: pytest.MonkeyPatch, finish: str
) -> None:
    monkeypatch.setattr(jobq.queue, "WAIT_POLL_SECONDS", 3600.0)
    job_id = queue.enqueue({}, max_attempts=2)
    other = open_queue()  # another handle, as another process would finish it
    job = other.claim("w1") if finish != "cancel" else None
    waiter = jobq.Queue(settings=queue.settings, clock=queue.clock)
    try:
        thread, got = _waiting(waiter, job_id)
        # The waiter must be listening before the job finishes: wait until it blocks in its wait.
        deadline = time.monotonic() + WOKEN_WITHIN_SECONDS
        while not asleep_in_wait(thread) and time.monotonic() < deadline:
            time.sleep(0.01)
        if finish == "fail":
            assert job is not None
            # A failure with attempts left is not the end: the waiter goes on waiting.
            assert other.fail(job, "first try") == jobq.JobStatus.PENDING
            queue.clock.advance(3600)  # type: ignore[attr-defined]
            job = other.claim("w1")
            assert job is not None
            assert other.fail(job, "second try") == F
        elif finish == "complete":
            assert job is not None
            other.complete(job, 42)
        else:
            other.cancel(job_id)
        thread.join(WOKEN_WITHIN_SECONDS)
        assert not thread.is_alive(), "the waiter was not woken"
        [result] = got
        assert isinstance(result, Job), result
        assert result.status == {"complete": C, "fail": F, "cancel": X}[finish]
        if finish == "complete":
            assert result.result == 42
    finally:
        waiter.close()


def asleep_in_wait(thread: threading.Thread) -> bool:
    """True once ``thread`` sleeps in a waiter's ``wait`` (after its first read of the job; a
    blocking waiter only: an asyncio one awaits on its loop)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_globals.get("__name__", "").startswith("jobq.backends"):
            return True
        frame = frame.f_back
    return False


def _wait_until_blocked(*threads: threading.Thread) -> None:
    deadline = time.monotonic() + WOKEN_WITHIN_SECONDS
    while not all(asleep_in_wait(t) for t in threads) and time.monotonic() < deadline:
        time.sleep(0.01)


def _woken(thread: threading.Thread, got: list[Job | BaseException]) -> Job:
    thread.join(WOKEN_WITHIN_SECONDS)
    assert not thread.is_alive(), "the waiter was not woken"
    [result] = got
    assert isinstance(result, Job), result
    return result


def test_two_waiters_on_one_job_are_both_woken(queue: jobq.Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobq.queue, "WAIT_POLL_SECONDS", 3600.0)  # only a wake-up returns in time
    job_id = queue.enqueue({})
    job = queue.claim("w1")
    assert job is not None
    waiters = [jobq.Queue(settings=queue.settings, clock=queue.clock) for _ in range(2)]
    try:
        waiting = [_waiting(w, job_id) for w in waiters]
        _wait_until_blocked(*(thread for thread, _ in waiting))
        queue.complete(job, "both")
        assert [_woken(thread, got).result for thread, got in waiting] == ["both", "both"]
    finally:
        for w in waiters:
            w.close()


@pytest.mark.parametrize("cancel_requested", [False, True])
def test_wait_is_woken_when_the_rescuer_finishes_the_job(
    queue: jobq.Queue, monkeypatch: pytest.MonkeyPatch, cancel_requested: bool
) -> None:
    monkeypatch.setattr(jobq.queue, "WAIT_POLL_SECONDS", 3600.0)
    job_id = queue.enqueue({}, max_attempts=1)
    assert queue.claim("w1", lease=10) is not None
    if cancel_requested:
        queue.cancel(job_id)  # PROCESSING: only requested, the rescuer ends it CANCELLED
    waiter = jobq.Queue(settings=queue.settings, clock=queue.clock)
    try:
        thread, got = _waiting(waiter, job_id)
        _wait_until_blocked(thread)
        queue.clock.advance(60)  # type: ignore[attr-defined]
        assert [r.job_id for r in queue.rescue_expired()] == [job_id]
        assert _woken(thread, got).status == (X if cancel_requested else F)
    finally:
        waiter.close()
