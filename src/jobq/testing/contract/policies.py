"""The backend contract: the retry policy an enqueue sets is stored with the job (``Job.policy``),
only for the fields it set, and read back by every path that returns jobs."""

from __future__ import annotations

import json

import pytest

import jobq
from jobq.retry import POLICIES, JobPolicy, TaskPolicy
from jobq.testing import FakeClock
from jobq.testing.contract.common import F, P


class Flaky(Exception):
    """An application's exception, named in ``retry_on`` by its qualified name."""


def test_an_enqueue_stores_only_the_policy_fields_it_set(queue: jobq.Queue) -> None:
    plain = queue.enqueue("a")
    given = queue.enqueue("b", backoff=[1, 10, 60], retry_on=(TimeoutError, Flaky, "mymod.Later"), max_attempts=5)
    timed = queue.enqueue("c", timeout=30)
    assert queue.get(plain).policy is None
    stored = JobPolicy.from_json(queue.get(given).policy)
    assert stored == JobPolicy(
        max_attempts=5,
        backoff=[1.0, 10.0, 60.0],
        retry_on=("builtins.TimeoutError", "jobq.testing.contract.policies.Flaky", "mymod.Later"),
    )
    assert json.loads(queue.get(timed).policy or "") == {"timeout": 30}
    assert (queue.get(given).max_attempts, queue.get(timed).timeout) == (5, 30)
    # Every path that hands out jobs carries it: a claim, a list, the claim after a completion.
    first = queue.claim("w")
    assert first is not None and first.id == plain and first.policy is None
    done, claimed = queue.complete_many_and_claim([(first, None)], "w", 1)
    assert done == [True] and [(j.id, j.policy) for j in claimed] == [(given, queue.get(given).policy)]
    assert {j.id: j.policy for j in queue.list_jobs()}[timed] == '{"timeout":30}'


def test_enqueue_many_stores_the_policy_on_every_job(queue: jobq.Queue) -> None:
    ids = queue.enqueue_many(["a", "b", "c"], backoff={"base": 2, "cap": 60}, retry_on=["ValueError"])
    policies = {queue.get(i).policy for i in ids}
    assert policies == {'{"backoff":{"base":2.0,"cap":60.0},"retry_on":["builtins.ValueError"]}'}
    assert queue.enqueue_many(["d"], max_attempts=2, keys=["k"]) and queue.count() == 4


def test_a_held_key_keeps_the_policy_of_the_enqueue_that_made_the_job(queue: jobq.Queue) -> None:
    first = queue.enqueue("a", key="k", backoff=5)
    assert queue.enqueue("b", key="k", backoff=50, retry_on=(KeyError,)) == first
    assert queue.enqueue_many(["c", "d"], keys=["k", "k2"], backoff=7)[0] == first
    assert json.loads(queue.get(first).policy or "") == {"backoff": 5.0}


BACKOFF = "backoff must be seconds from 0 to 100 years, a list of them, or {'base': s, 'cap': s} (at most 100), not "
RETRY_ON = "retry_on must name exception classes (e.g. 'builtins.TimeoutError'), not "


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backoff": -1}, BACKOFF + "-1"),
        ({"backoff": "10s"}, BACKOFF + "'10s'"),
        ({"backoff": []}, BACKOFF + "[]"),
        ({"backoff": {"base": 1}}, BACKOFF + "{'base': 1}"),
        ({"retry_on": [""]}, RETRY_ON + "''"),
        ({"retry_on": [3]}, RETRY_ON + "3"),
        ({"retry_on": ["os.path; rm"]}, RETRY_ON + "'os.path; rm'"),
        ({"retry_on": [int]}, RETRY_ON + "<class 'int'>"),
        ({"retry_on": ["mod.E" + "x" * 200]}, RETRY_ON + "'mod.E" + "x" * 54),
        ({"retry_on": [f"m.E{i}" for i in range(101)]}, "retry_on names at most 100 exception classes, not 101"),
        ({"backoff": [1.0] * 101}, BACKOFF + repr([1.0] * 101)[:60]),
        ({"timeout": "1m"}, "timeout must be a number of seconds"),
        ({"timeout": float("inf")}, "timeout must be positive (seconds) and at most 100 years"),
        ({"timeout": 1e300}, "timeout must be positive (seconds) and at most 100 years"),
        ({"backoff": 1e300}, BACKOFF + "1e+300"),
        ({"backoff": [1, 1e300]}, BACKOFF + "[1, 1e+300]"),
        ({"backoff": {"base": 1, "cap": 1e300}}, BACKOFF + "{'base': 1, 'cap': 1e+300}"),
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"max_attempts": True}, "max_attempts must be an integer >= 1"),
    ],
)  # fmt: skip
def test_a_bad_policy_is_refused_in_one_line_and_nothing_is_stored(
    queue: jobq.Queue, kwargs: dict[str, object], message: str
) -> None:
    kept = queue.enqueue("kept")
    with pytest.raises(jobq.InvalidPayload) as raised:
        queue.enqueue("x", **kwargs)  # type: ignore[arg-type]
    assert str(raised.value) == message and "\n" not in message
    with pytest.raises(jobq.InvalidPayload):
        queue.enqueue_many(["x", "y"], **kwargs)  # type: ignore[arg-type]
    assert [j.id for j in queue.list_jobs()] == [kept]


def test_the_rescuer_counts_attempts_by_the_enqueue_then_the_task_registered_here(
    queue: jobq.Queue, clock: FakeClock
) -> None:
    # Enqueued where the task is unknown: the rows hold the settings' max_attempts (3).
    once = queue.enqueue("not idempotent", task="contract.once")
    given = queue.enqueue("the enqueue says 2", task="contract.once", max_attempts=2)
    plain = queue.enqueue("no task policy", task="contract.other")
    assert {queue.get(i).max_attempts for i in (once, plain)} == {queue.settings.max_attempts}
    POLICIES["contract.once"] = TaskPolicy(max_attempts=1)  # as a worker that imported the task
    try:
        for _round in range(2):
            for job in queue.claim_many("w", 3, lease=10):
                assert job.id in (once, given, plain)
            clock.advance(11)  # the worker froze or died: every lease expires
            queue.rescue_expired()
            clock.advance(3600)  # past any backoff
    finally:
        del POLICIES["contract.once"]
    got = {i: (queue.get(i).status, queue.get(i).attempts) for i in (once, given, plain)}
    assert got == {once: (F, 1), given: (F, 2), plain: (P, 2)}
    assert "attempt 1 of 1" in (queue.get(once).last_error or "")
