"""Round trips per call on PostgreSQL: every per-job API call (enqueue, claim, heartbeat, complete,
fail) is one statement sent alone, one round trip; a batch enqueue is one statement too.

Counted by a proxy between jobq and the server (``faultproxy.FaultProxy.round_trips``: the
server's ReadyForQuery messages), so a change that adds a BEGIN/COMMIT or a second statement to
the hot path fails here, not only in the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from faultproxy import FaultProxy, proxied

import jobq

pytestmark = pytest.mark.postgres


@pytest.fixture
def counted(postgres_url: str) -> Iterator[tuple[jobq.Queue, FaultProxy]]:
    # sslmode=disable: the proxy reads the server's stream as messages from its first byte.
    sep = "&" if "?" in postgres_url else "?"
    with proxied(f"{postgres_url}{sep}sslmode=disable") as (url, proxy):
        q = jobq.Queue(settings=jobq.Settings(database_url=url))
        q.counts()  # the pool's connection is made before anything is counted
        yield q, proxy
        q.close()


def trips(proxy: FaultProxy, call: Callable[[], Any]) -> tuple[int, Any]:
    before = proxy.round_trips
    result = call()
    return proxy.round_trips - before, result


def _kinds(q: jobq.Queue, job_id: int) -> list[str]:
    return [str(e.kind) for e in q.events(job_id)]


def test_the_counter_counts_a_transaction_as_three_round_trips(counted) -> None:
    q, proxy = counted
    n, _ = trips(proxy, q.counts)  # a read: BEGIN, SELECT, COMMIT
    assert n == 3


def test_an_enqueue_with_a_retry_policy_is_still_one_round_trip(counted) -> None:
    q, proxy = counted
    n, job_id = trips(proxy, lambda: q.enqueue({"n": 1}, max_attempts=2, backoff=[1, 10], retry_on=["ValueError"]))
    assert n == 1
    n, ids = trips(proxy, lambda: q.enqueue_many([{"n": 2}, {"n": 3}], backoff=5))
    assert n == 1
    assert [q.get(i).policy for i in (job_id, *ids)] == [
        '{"backoff":[1.0,10.0],"max_attempts":2,"retry_on":["builtins.ValueError"]}',
        '{"backoff":5.0}',
        '{"backoff":5.0}',
    ]


def test_every_per_job_call_is_one_round_trip(counted) -> None:
    q, proxy = counted
    n, first = trips(proxy, lambda: q.enqueue({"n": 1}, max_attempts=3))
    assert n == 1
    n, job = trips(proxy, lambda: q.claim("w1"))
    assert (n, job.id) == (1, first)
    n, cancel = trips(proxy, lambda: q.heartbeat(job))
    assert (n, cancel) == (1, False)
    n, status = trips(proxy, lambda: q.fail(job, "flaky"))
    assert (n, status) == (1, jobq.JobStatus.PENDING)
    assert _kinds(q, first) == ["enqueued", "claimed", "retry_scheduled"]
    second = q.enqueue({"n": 2}, run_at=0.0)
    job = q.claim("w1")
    assert job is not None and job.id == second
    n, _ = trips(proxy, lambda: q.complete(job, {"ok": True}))
    assert n == 1
    assert q.get(second).status == jobq.JobStatus.COMPLETED
    assert _kinds(q, second) == ["enqueued", "claimed", "completed"]


def test_a_final_failure_and_refused_writes_are_one_round_trip_each(counted) -> None:
    q, proxy = counted
    job_id = q.enqueue({"n": 1}, max_attempts=1)
    job = q.claim("w1")
    assert job is not None
    n, status = trips(proxy, lambda: q.fail(job, "boom"))
    assert (n, status) == (1, jobq.JobStatus.FAILED)
    for call in (lambda: q.complete(job), lambda: q.heartbeat(job), lambda: q.fail(job, "late")):
        before = proxy.round_trips
        with pytest.raises(jobq.LeaseLost):
            call()
        assert proxy.round_trips - before == 1
    kinds = _kinds(q, job_id)
    assert kinds[:3] == ["enqueued", "claimed", "failed"]
    assert kinds[3:] == ["stale_write_refused"] * 3


def test_a_batch_enqueue_is_one_round_trip(counted) -> None:
    q, proxy = counted
    n, ids = trips(proxy, lambda: q.enqueue_many([{"n": i} for i in range(1000)]))
    assert n == 1
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert [q.get(i).payload["n"] for i in (ids[0], ids[500], ids[-1])] == [0, 500, 999]
    assert _kinds(q, ids[-1]) == ["enqueued"]
