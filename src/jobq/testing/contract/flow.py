"""The backend contract: flow control (docs/flow-control.md). Pause, concurrency limits, per-key
limits and rate limits are enforced by the claim itself, on every handle (every worker, host)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

import jobq
from jobq import JobFilter
from jobq.testing import FakeClock
from jobq.testing.contract.common import P, R


def _payloads(jobs: list[jobq.Job]) -> list[str]:
    return sorted(str(j.payload) for j in jobs)


def test_a_paused_queue_is_claimed_by_no_one_and_its_jobs_stay_pending(
    queue: jobq.Queue, clock: FakeClock, open_queue: Callable[[], jobq.Queue]
) -> None:
    running = queue.enqueue("running", queue="mail")
    waiting = queue.enqueue_many(["a", "b"], queue="mail")
    other = queue.enqueue("other", queue="reports")
    job = queue.claim("w", queue="mail")
    assert job is not None and job.id == running
    control = queue.pause("mail", actor="ann")
    assert (control.paused, control.paused_by, control.paused_at) == (True, "ann", clock.now)
    elsewhere = open_queue()  # another process, another host: it stops claiming too
    assert queue.claim_many("w", 10, queue="mail") == []
    assert elsewhere.claim_many("w2", 10, queue=["mail", "reports"])[0].id == other
    assert elsewhere.next_due_at("mail") is None  # nothing to wake up for: an idle worker sleeps
    queue.complete(job)  # a running job finishes normally
    assert [queue.get(i).status for i in waiting] == [P, P]
    assert [queue.get(i).attempts for i in waiting] == [0, 0]
    stats = queue.stats()
    assert stats.waiting_on_limit_by_queue == {"mail": 2}
    assert stats.controls["mail"].paused
    clock.advance(5)
    resumed = elsewhere.resume("mail", actor="bob")
    assert (resumed.paused, resumed.paused_by, resumed.paused_at) == (False, "bob", clock.now)
    assert _payloads(queue.claim_many("w", 10, queue="mail")) == ["a", "b"]
    history = queue.control_history("mail")
    assert [(e.action, e.actor) for e in history] == [("resume", "bob"), ("pause", "ann")]
    assert history[0].at == clock.now and history[1].at == clock.now - 5
    assert [c.queue for c in queue.controls()] == ["mail"]
    assert queue.stats().controls == {}  # neither paused nor limited: nothing to show


def test_pausing_twice_records_one_change(queue: jobq.Queue) -> None:
    queue.pause("q", actor="ann")
    queue.pause("q", actor="bob")
    assert [(e.action, e.actor) for e in queue.control_history("q")] == [("pause", "ann")]
    assert queue.controls()[0].paused_by == "ann"


def test_a_concurrency_limit_holds_across_handles_rescues_and_batches(
    queue: jobq.Queue, clock: FakeClock, open_queue: Callable[[], jobq.Queue]
) -> None:
    queue.enqueue_many([f"j{i}" for i in range(6)], queue="api")
    queue.enqueue("free", queue="free")
    queue.set_limits("api", concurrency=2, actor="ops")
    other = open_queue()
    first = queue.claim_many("w1", 10, queue=["api", "free"], lease=10)
    assert _payloads(first) == ["free", "j0", "j1"]  # other queues are not held back
    assert other.claim_many("w2", 10, queue="api") == []
    assert other.next_due_at("api") is None  # at its limit: nothing due until a slot frees
    assert queue.stats().waiting_on_limit_by_queue == {"api": 4}
    # The worker that frees a slot takes the next job in the same transaction.
    api_jobs = [j for j in first if j.queue == "api"]
    done, more = queue.complete_many_and_claim([(api_jobs[0], None)], "w1", 10, queue="api", lease=10)
    assert done == [True] and _payloads(more) == ["j2"]
    # A crashed worker's job counts until it is rescued (its lease may still be held).
    clock.advance(11)
    assert other.claim_many("w2", 10, queue="api") == []
    rescued = other.rescue_expired()
    assert len(rescued) == 3  # j1, j2 and "free": back to PENDING after a backoff
    again = other.claim_many("w2", 10, queue="api")
    assert len(again) == 2
    assert queue.count(JobFilter(statuses=(R,), queues=("api",))) == 2


def test_a_per_key_limit_passes_over_blocked_keys(queue: jobq.Queue, open_queue: Callable[[], jobq.Queue]) -> None:
    queue.enqueue_many(
        ["a1", "a2", "a3", "b1", "none1", "b2"],
        queue="sync",
        concurrency_keys=["a", "a", "a", "b", None, "b"],
    )
    queue.enqueue("c1", queue="sync", concurrency_key="c")
    queue.set_limits("sync", per_key=1)
    claimed = queue.claim_many("w", 10, queue="sync")
    assert _payloads(claimed) == ["a1", "b1", "c1", "none1"]  # a2 waits, b's and c's run past it
    other = open_queue()
    assert other.claim_many("w2", 10, queue="sync") == []
    assert other.stats().waiting_on_limit_by_queue == {"sync": 3}
    a1 = next(j for j in claimed if j.payload == "a1")
    queue.complete(a1)
    assert [j.payload for j in other.claim_many("w2", 10, queue="sync")] == ["a2"]
    queue.set_limits("sync", per_key=2)
    assert _payloads(other.claim_many("w2", 10, queue="sync")) == ["a3", "b2"]


def test_per_key_and_concurrency_limits_combine(queue: jobq.Queue) -> None:
    queue.enqueue_many([f"x{i}" for i in range(4)], queue="q", concurrency_key="x")
    queue.enqueue_many([f"y{i}" for i in range(4)], queue="q", concurrency_key="y")
    queue.set_limits("q", concurrency=3, per_key=2)
    assert _payloads(queue.claim_many("w", 10, queue="q")) == ["x0", "x1", "y0"]
    assert queue.claim_many("w", 10, queue="q") == []


def test_a_rate_limit_admits_at_most_count_per_window(
    queue: jobq.Queue, clock: FakeClock, open_queue: Callable[[], jobq.Queue]
) -> None:
    queue.enqueue_many(list(range(40)), queue="mail")
    queue.set_limits("mail", rate="4/s")
    other = open_queue()
    admitted: list[float] = []
    start = clock.now
    while clock.now < start + 5:
        for handle in (queue, other):
            jobs = handle.claim_many("w", 10, queue="mail")
            admitted += [clock.now] * len(jobs)
        clock.advance(0.0625)  # exact in binary: admissions land on the polls
    # Exactly one job per window/count: 4 per second, spaced evenly, none early.
    assert len(admitted) == 20
    for i, at in enumerate(admitted):
        assert sum(1 for t in admitted[i:] if t < at + 1.0) <= 4
    [control] = queue.controls()
    assert (control.rate_count, control.rate_window) == (4, 1.0)
    assert control.next_admit_at == pytest.approx(admitted[-1] + 0.25)
    assert queue.next_due_at("mail") == pytest.approx(control.next_admit_at)  # the worker's sleep


def test_a_rate_limit_goes_on_after_the_clock_was_set_back(queue: jobq.Queue, clock: FakeClock) -> None:
    """The clock set back two minutes after an admission (a VM restored from a snapshot, a clock
    stepped back) left the next admission two minutes ahead: the queue admitted nothing, and its
    workers did not even look, for two minutes. It is taken as at most one step from now."""
    queue.enqueue("first", queue="mail")
    queue.set_limits("mail", rate="4/s")
    assert len(queue.claim_many("w", 10, queue="mail")) == 1
    clock.advance(-120.0)
    queue.enqueue_many(["second", "third"], queue="mail")  # due by the clock as it is now
    assert queue.next_due_at("mail") == pytest.approx(clock.now + 0.25)  # the worker's sleep
    assert queue.claim_many("w", 10, queue="mail") == []  # the rate still holds: one step
    clock.advance(0.25)
    assert len(queue.claim_many("w", 10, queue="mail")) == 1
    assert queue.claim_many("w", 10, queue="mail") == []
    [control] = queue.controls()
    assert control.next_admit_at == pytest.approx(clock.now + 0.25)


def test_limits_are_set_kept_cleared_and_audited(queue: jobq.Queue, clock: FakeClock) -> None:
    queue.set_limits("q", concurrency=5, rate="10/min", actor="ann")
    control = queue.set_limits("q", per_key=1, actor="bob")  # the others are kept
    assert (control.concurrency, control.per_key, control.rate_count, control.rate_window) == (5, 1, 10, 60.0)
    assert control.updated_by == "bob"
    with pytest.raises(jobq.ConfigError, match="concurrency must be a whole number from 1"):
        queue.set_limits("q", concurrency=0)
    with pytest.raises(jobq.ConfigError, match="not a rate"):
        queue.set_limits("q", rate="ten per second")
    for shape in ((1,), (1, 2, 3), 5):  # (1,) raised TypeError from check_rate's missing argument
        with pytest.raises(jobq.ConfigError, match=r"rate must be 'COUNT/UNIT' or \(count, seconds\)"):
            queue.set_limits("q", rate=shape)  # type: ignore[arg-type]
    assert queue.controls() == [control]  # a refused change stored nothing
    queue.pause("q")
    cleared = queue.clear_limits("q", actor="cat")
    assert (cleared.concurrency, cleared.per_key, cleared.rate_count, cleared.paused) == (None, None, None, True)
    history = queue.control_history("q")
    assert (history[0].action, history[0].actor) == ("limits", "cat")
    assert json.loads(history[-1].detail or "{}") == {
        "paused": False,
        "concurrency": 5,
        "per_key": None,
        "rate": {"count": 10, "window_seconds": 60.0},
    }
    assert [e.queue for e in queue.control_history()] == ["q"] * 4


def test_a_concurrency_key_is_checked(queue: jobq.Queue) -> None:
    with pytest.raises(jobq.InvalidPayload, match="concurrency key"):
        queue.enqueue("x", concurrency_key="bad\nkey")
    with pytest.raises(jobq.InvalidPayload, match="2 concurrency keys for 1 payloads"):
        queue.enqueue_many(["x"], concurrency_keys=["a", "b"])
    assert queue.count() == 0
