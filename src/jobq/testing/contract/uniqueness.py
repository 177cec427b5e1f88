"""The backend contract: key scopes (``key_scope``, ``key_ttl``) and ``on_conflict``."""

from __future__ import annotations

import pytest

import jobq
from jobq.testing import FakeClock
from jobq.testing.contract.common import C, F, P, X


def _finish(queue: jobq.Queue, job_id: int, outcome: str) -> None:
    job = queue.claim("w")
    assert job is not None and job.id == job_id
    if outcome == "complete":
        queue.complete(job)
    elif outcome == "fail":
        queue.fail(job, "boom", retry=False)
    else:
        queue.cancel(job_id)
        assert queue.ack_cancel(queue.get(job_id))


def test_all_scope_holds_the_key_after_the_job_finishes(queue: jobq.Queue) -> None:
    first = queue.enqueue("a", key="k")
    _finish(queue, first, "complete")
    assert queue.enqueue("b", key="k") == first
    assert queue.enqueue("b", key="k", key_scope="all") == first
    assert queue.count() == 1


@pytest.mark.parametrize("outcome", ["complete", "fail", "cancel"])
def test_active_scope_releases_the_key_when_the_job_finishes(queue: jobq.Queue, outcome: str) -> None:
    first = queue.enqueue("a", key="user-1", key_scope="active")
    assert queue.enqueue("b", key="user-1", key_scope="active") == first  # PENDING holds it
    queue.claim("w-hold")
    assert queue.get(first).status is jobq.JobStatus.PROCESSING
    assert queue.enqueue("b", key="user-1", key_scope="active") == first  # PROCESSING holds it
    queue.release(queue.get(first))
    _finish(queue, first, outcome)
    assert queue.get(first).status in (C, F, X)
    second = queue.enqueue("c", key="user-1", key_scope="active")
    assert second != first and queue.get(second).payload == "c"
    assert queue.enqueue("d", key="user-1", key_scope="active") == second
    assert queue.count() == 2


def test_a_key_is_one_name_across_scopes(queue: jobq.Queue) -> None:
    held = queue.enqueue("a", key="k", key_scope="active")
    assert queue.enqueue("b", key="k") == held  # an 'all' key cannot be taken while held
    assert queue.enqueue("b", key="k", key_ttl=60) == held
    _finish(queue, held, "complete")
    forever = queue.enqueue("c", key="k")  # free again: now held for good
    _finish(queue, forever, "complete")
    assert queue.enqueue("d", key="k", key_scope="active") == forever


def test_ttl_scope_holds_the_key_for_its_time(queue: jobq.Queue, clock: FakeClock) -> None:
    first = queue.enqueue("a", key="digest", key_ttl=60)
    _finish(queue, first, "complete")
    clock.advance(59)
    assert queue.enqueue("b", key="digest", key_ttl=60) == first  # finished, but within its ttl
    clock.advance(1)
    second = queue.enqueue("c", key="digest", key_ttl=60)
    assert second != first
    # a ttl holds whatever the status: the second job is still PENDING after its ttl, yet the
    # key is free once the time has passed
    clock.advance(61)
    assert queue.get(second).status is P
    third = queue.enqueue("d", key="digest", key_ttl=10)
    assert len({first, second, third}) == 3
    assert queue.enqueue("e", key="digest") == third


def test_on_conflict_raise(queue: jobq.Queue) -> None:
    held = queue.enqueue("a", key="k", key_scope="active")
    with pytest.raises(jobq.DuplicateJob) as caught:
        queue.enqueue("b", key="k", key_scope="active", on_conflict="raise")
    assert caught.value.job_id == held and caught.value.key == "k"
    assert str(caught.value) == f"key 'k' is held by job {held}"
    # a batch is all or none: the free key before the duplicate is not stored either
    with pytest.raises(jobq.DuplicateJob):
        queue.enqueue_many(["x", "y"], keys=["free", "k"], on_conflict="raise")
    assert queue.count() == 1
    assert queue.enqueue("c", key="k", on_conflict="return") == held


def test_purge_releases_every_scope(queue: jobq.Queue, clock: FakeClock) -> None:
    ids = [queue.enqueue(i, key=f"k{i}") for i in range(2)]
    for job_id in ids:
        _finish(queue, job_id, "complete")
    clock.advance(10)
    assert queue.purge(older_than=5) == 2
    assert queue.enqueue("again", key="k0") not in ids


def test_resubmit_is_refused_while_a_newer_job_holds_an_active_key(queue: jobq.Queue) -> None:
    old = queue.enqueue("a", key="k", key_scope="active")
    _finish(queue, old, "fail")
    new = queue.enqueue("b", key="k", key_scope="active")
    [result] = queue.resubmit_many(ids=[old])
    assert not result.ok and result.status is F and result.held_by == new
    assert result.message == f"job {old}: key 'k' is held by job {new}; not resubmitted"
    with pytest.raises(jobq.DuplicateJob, match=f"^key 'k' is held by job {new}$"):
        queue.resubmit(old)
    assert queue.get(old).status is F and queue.get(old).run == 1
    _finish(queue, new, "complete")
    assert queue.resubmit(old).ok  # the key is free again: the old job takes it back
    assert queue.enqueue("c", key="k", key_scope="active") == old


def test_bad_key_options_are_refused_in_one_line(queue: jobq.Queue) -> None:
    for kwargs, message in [
        ({"key": "k", "key_scope": "forever"}, "key_scope must be one of all, active, not 'forever'"),
        ({"key_scope": "active"}, "key_scope needs a key"),
        ({"key_ttl": 5}, "key_ttl needs a key"),
        ({"key": "k", "key_ttl": 0}, "key_ttl must be a positive number of seconds"),
        ({"key": "k", "key_ttl": float("inf")}, "key_ttl must be a positive number of seconds"),
        ({"key": "k", "key_ttl": 1e300}, "key_ttl must be a positive number of seconds, at most 100 years"),
        ({"key": "k", "key_ttl": 5, "key_scope": "active"}, "key_ttl and key_scope='active' cannot be combined"),
        ({"key": "k", "on_conflict": "ignore"}, "on_conflict must be one of return, raise, not 'ignore'"),
    ]:
        with pytest.raises(jobq.InvalidPayload, match="^" + message.replace("(", r"\(")):
            queue.enqueue("x", **kwargs)  # type: ignore[arg-type]
    assert queue.count() == 0


def test_an_empty_key_is_refused_not_taken_as_a_key(queue: jobq.Queue) -> None:
    """``key=""`` (a script's ``--key "$UNSET"``) was a key like any other: the second such job
    was silently dropped as a duplicate of the first. Refused in one line; nothing stored."""
    kept = queue.enqueue("kept")
    for kwargs in ({"key": ""}, {"concurrency_key": ""}):
        with pytest.raises(jobq.InvalidPayload, match="must not be empty") as raised:
            queue.enqueue("x", **kwargs)  # type: ignore[arg-type]
        assert "\n" not in str(raised.value)
    for many in ({"keys": ["a", ""]}, {"concurrency_key": ""}, {"concurrency_keys": ["a", ""]}):
        with pytest.raises(jobq.InvalidPayload, match="must not be empty"):
            queue.enqueue_many(["x", "y"], **many)
    assert [j.id for j in queue.list_jobs()] == [kept]


def test_one_resubmit_of_many_jobs_refuses_only_the_one_whose_key_is_held(queue: jobq.Queue) -> None:
    """A chunk's resubmits are one statement per status: the job whose 'active' key a newer job
    took is refused within it, and the others of its status and of another still go back to
    PENDING, each with one event; a COMPLETED job's event carries the attempt it ends."""
    held = queue.enqueue("a", key="k", key_scope="active")
    free = queue.enqueue("b", key="free", key_scope="active")
    plain = queue.enqueue("c")
    done = queue.enqueue("d")
    for job_id in (held, free, plain):
        _finish(queue, job_id, "fail")
    _finish(queue, done, "complete")
    newer = queue.enqueue("e", key="k", key_scope="active")
    results = {r.job_id: r for r in queue.resubmit_many(ids=[held, free, plain, done], actor="dan")}
    assert [results[i].ok for i in (held, free, plain, done)] == [False, True, True, True]
    assert results[held].held_by == newer and queue.get(held).status is F
    assert all(queue.get(i).status is P and queue.get(i).run == 2 for i in (free, plain, done))
    for job_id, was in ((free, "FAILED"), (plain, "FAILED"), (done, "COMPLETED")):
        (event,) = [e for e in queue.events(job_id) if str(e.kind) == "resubmitted"]
        assert (event.actor, event.attempt, event.detail["from"]) == ("dan", 0, was)
    (event,) = [e for e in queue.events(done) if str(e.kind) == "resubmitted"]
    assert {"claimed_at", "completed_at", "attempt"} <= set(event.detail)
    assert not [e for e in queue.events(held) if str(e.kind) == "resubmitted"]
