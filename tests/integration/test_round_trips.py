"""Round trips per call on PostgreSQL: every per-job API call (enqueue, with or without a key, claim,
heartbeat, complete, fail) is one statement sent alone, one round trip; a batch enqueue is one
statement too; a read is one round trip per statement (no BEGIN and COMMIT).

Counted by a proxy between jobq and the server (``faultproxy.FaultProxy.round_trips``: the
server's ReadyForQuery messages), so a change that adds a BEGIN/COMMIT or a second statement to
the hot path fails here, not only in the benchmark.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from faultproxy import FaultProxy, proxied
from pg import raw_connect
from polling import wait_for

import jobq
from jobq.testing import FakeClock

pytestmark = pytest.mark.postgres


@pytest.fixture
def clock() -> FakeClock:
    import time

    return FakeClock(time.time())


@pytest.fixture
def counted(postgres_url: str, clock: FakeClock) -> Iterator[tuple[jobq.Queue, FaultProxy]]:
    # sslmode=disable: the proxy reads the server's stream as messages from its first byte.
    # prepare_threshold=none: psycopg prepares a statement at its sixth run on a connection, in a
    # round trip of its own, once; which call that lands on depends on which connection ran what
    # before (the backend's sticky connection runs them all). Unprepared, a statement is one round
    # trip, as a prepared one is: what is counted here.
    sep = "&" if "?" in postgres_url else "?"
    with proxied(f"{postgres_url}{sep}sslmode=disable&prepare_threshold=none") as (url, proxy):
        q = jobq.Queue(settings=jobq.Settings(database_url=url), clock=clock)
        q.counts()  # the pool's connection is made before anything is counted
        yield q, proxy
        q.close()


def trips(proxy: FaultProxy, call: Callable[[], Any]) -> tuple[int, Any]:
    before = proxy.round_trips
    result = call()
    return proxy.round_trips - before, result


def _kinds(q: jobq.Queue, job_id: int) -> list[str]:
    return [str(e.kind) for e in q.events(job_id)]


def test_the_counter_counts_a_transaction_as_three_round_trips(postgres_url: str) -> None:
    sep = "&" if "?" in postgres_url else "?"
    with proxied(f"{postgres_url}{sep}sslmode=disable") as (url, proxy), raw_connect(url, autocommit=True) as conn:
        n, _ = trips(proxy, lambda: conn.execute("SELECT 1"))
        assert n == 1

        def transaction() -> None:
            with conn.transaction():
                conn.execute("SELECT 1")

        n, _ = trips(proxy, transaction)  # BEGIN, SELECT, COMMIT
        assert n == 3


def test_a_read_is_one_round_trip_per_statement(counted, clock: FakeClock) -> None:
    """At READ COMMITTED every statement takes its own snapshot, inside BEGIN ... COMMIT or not:
    a read sends its statements alone, without the two round trips of a transaction."""
    q, proxy = counted
    job_id = q.enqueue({"n": 1})
    n, job = trips(proxy, lambda: q.get(job_id))
    assert (n, job.id) == (1, job_id)
    n, counts = trips(proxy, q.counts)
    assert (n, counts[jobq.JobStatus.PENDING]) == (1, 1)
    n, due = trips(proxy, lambda: q.next_due_at(["default"]))  # the controls, then the minimum
    assert (n, due) == (2, pytest.approx(q.get(job_id).run_at))
    n, events = trips(proxy, lambda: q.events(job_id))
    assert n <= 2 and [str(e.kind) for e in events] == ["enqueued"]
    # The ops page's chart: the events, then enqueues, the backlog (its window's part and its
    # size in one statement), completions, claims (two sources) and durations.
    clock.advance(1)  # the chart's buckets end before now
    n, buckets = trips(proxy, lambda: q.history(window=120, bucket=60))
    assert (n, sum(b.enqueued for b in buckets), buckets[-1].depth) == (7, 1, 1)


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


def test_an_enqueue_with_a_key_is_one_round_trip_in_every_case(counted, clock: FakeClock) -> None:
    q, proxy = counted
    n, first = trips(proxy, lambda: q.enqueue({"n": 1}, key="k"))
    assert n == 1
    n, again = trips(proxy, lambda: q.enqueue({"n": 2}, key="k"))  # the holder's id, nothing stored
    assert (n, again) == (1, first)
    before = proxy.round_trips
    with pytest.raises(jobq.DuplicateJob) as raised:
        q.enqueue({"n": 3}, key="k", on_conflict="raise")
    assert (proxy.round_trips - before, raised.value.job_id) == (1, first)
    assert q.counts()[jobq.JobStatus.PENDING] == 1
    assert _kinds(q, first) == ["enqueued"]
    # 'active': a finished holder lets go, and the next enqueue takes the key.
    active = q.enqueue({"n": 4}, key="a", key_scope="active")
    job = q.claim("w1")
    assert job is not None and job.id == first
    job = q.claim("w1")
    assert job is not None and job.id == active
    q.complete(job)
    n, fresh = trips(proxy, lambda: q.enqueue({"n": 5}, key="a", key_scope="active"))
    assert n == 1 and fresh > active
    # 'ttl': an expired holder is released and the key taken anew, still in one statement.
    held = q.enqueue({"n": 6}, key="t", key_ttl=10)
    n, same = trips(proxy, lambda: q.enqueue({"n": 7}, key="t", key_ttl=10))
    assert (n, same) == (1, held)
    clock.advance(11)
    n, renewed = trips(proxy, lambda: q.enqueue({"n": 8}, key="t", key_ttl=10))
    assert n == 1 and renewed > held
    assert q.get(renewed).idempotency_key == "t"
    assert q.enqueue({"n": 9}, key="t", key_ttl=10) == renewed  # the new holder, not the released one
    assert _kinds(q, renewed) == ["enqueued"]


def _locks_waited_on(url: str) -> int:
    with raw_connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
        return int(row[0])


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_keyed_enqueue_waits_for_a_holder_in_flight_and_names_it_or_takes_the_key(
    counted, postgres_url: str, outcome: str
) -> None:
    """The INSERT waits for a transaction that inserted the same key. Committed: that job is
    named, though the statement's snapshot cannot see it (a second statement, with a new one).
    Rolled back: the key is free, the waiting enqueue stores its job."""
    q, proxy = counted
    with raw_connect(postgres_url) as app:
        in_flight = q.enqueue({"n": 1}, key="k", conn=app)
        got: list[int] = []
        before = proxy.round_trips
        producer = threading.Thread(target=lambda: got.append(q.enqueue({"n": 2}, key="k")))
        producer.start()
        try:
            wait_for(lambda: _locks_waited_on(postgres_url) == 1, 30, "the enqueue to wait for the key's holder")
        finally:
            app.commit() if outcome == "commit" else app.rollback()
            producer.join(30)
    assert len(got) == 1
    if outcome == "commit":
        assert (got[0], proxy.round_trips - before) == (in_flight, 2)
    else:
        assert got[0] != in_flight and proxy.round_trips - before == 1
    assert [j.id for j in q.list_jobs(None, jobq.Page(limit=10))] == [got[0]]


def test_a_claim_of_a_paused_or_full_queue_takes_no_lock(counted, clock: FakeClock) -> None:
    # The claim's flag leaves out paused queues, queues whose concurrency limit is taken and
    # rate-limited queues not yet admitting: one statement, no transaction on the control row.
    # A queue limited by its concurrency alone, with room, is claimed under its control row's
    # lock in one round trip more (claim_concurrency_locked: the lock and the claim in one
    # message); a rate-limited one in a transaction of several.
    q, proxy = counted
    q.set_limits("lim", concurrency=2)
    ids = q.enqueue_many([{"n": i} for i in range(4)], queue="lim")
    n, job = trips(proxy, lambda: q.claim("w1", queue="lim"))
    assert job is not None and job.id == ids[0] and n == 2
    n, job = trips(proxy, lambda: q.claim("w1", queue="lim"))
    assert job is not None and job.id == ids[1] and n == 2
    n, job = trips(proxy, lambda: q.claim("w1", queue="lim"))
    assert (n, job) == (1, None)  # two of two running: no lock taken
    assert [q.get(i).status for i in ids] == [jobq.JobStatus.PROCESSING] * 2 + [jobq.JobStatus.PENDING] * 2
    q.pause("paused")
    q.enqueue({"n": 9}, queue="paused")
    n, job = trips(proxy, lambda: q.claim("w1", queue="paused"))
    assert (n, job) == (1, None)
    q.set_limits("rated", rate=(1, 60.0))
    q.enqueue_many([{"n": 1}, {"n": 2}], queue="rated")
    assert q.claim("w1", queue="rated") is not None  # admitted: the next one in 60 s
    n, job = trips(proxy, lambda: q.claim("w1", queue="rated"))
    assert (n, job) == (1, None)
    clock.advance(61)
    n, job = trips(proxy, lambda: q.claim("w1", queue="rated"))
    # The flag; BEGIN with the lock; the claim; the rate's next time; COMMIT.
    assert job is not None and n == 5


def test_completions_and_the_next_claim_are_one_round_trip(counted) -> None:
    # complete_set_and_claim: the fenced completions, a stale one's refusal, the waiters' wake-up
    # and the claim in one statement, where the transaction below takes three round trips.
    q, proxy = counted
    ids = q.enqueue_many([{"n": i} for i in range(5)])
    stale, *jobs = q.claim_many("w1", 3)
    q.complete(stale)  # its lease is spent: completing with it again is a stale write
    items = [(stale, None), *[(j, {"ok": 1}) for j in jobs]]
    n, (done, more) = trips(proxy, lambda: q.complete_many_and_claim(items, "w1", 2))
    assert (n, done, sorted(j.id for j in more)) == (1, [False, True, True], ids[3:])
    assert [q.get(i).status for i in ids] == [jobq.JobStatus.COMPLETED] * 3 + [jobq.JobStatus.PROCESSING] * 2
    assert q.get(ids[1]).result == {"ok": 1}
    assert _kinds(q, ids[0]).count("stale_write_refused") == 1
    assert "stale_write_refused" not in _kinds(q, ids[1])


def test_a_full_queue_a_completion_frees_is_claimed_at_once(counted) -> None:
    # The statement's snapshot still sees the job it completes running; its flag counts that job
    # as freed, so the next job of a full limited queue is claimed right after (under the control
    # row's lock, claim_concurrency_locked: one round trip more), not at the next poll.
    q, proxy = counted
    q.set_limits("lim", concurrency=1)
    ids = q.enqueue_many([{"n": i} for i in range(2)], queue="lim")
    job = q.claim("w1", queue="lim")
    assert job is not None and q.claim("w1", queue="lim") is None  # full
    n, (done, more) = trips(proxy, lambda: q.complete_many_and_claim([(job, None)], "w1", 1, queue="lim"))
    assert (n, done, [j.id for j in more]) == (2, [True], ids[1:])


def test_a_transaction_sends_begin_with_its_first_statement_and_wake_ups_with_commit(counted) -> None:
    # Completions with notes take a transaction: BEGIN in one pipeline with the completions, the
    # note events, the claim, then the waiters' notice in one pipeline with COMMIT. Four round
    # trips where psycopg's transaction() took six (BEGIN and COMMIT alone, the notice its own).
    q, proxy = counted
    ids = q.enqueue_many([{"n": i} for i in range(4)])
    jobs = q.claim_many("w1", 2)
    items = [(j, {"ok": 1}) for j in jobs]
    n, (done, more) = trips(proxy, lambda: q.complete_many_and_claim(items, "w1", 2, notes=["a", "b"]))
    assert (n, done, sorted(j.id for j in more)) == (4, [True, True], ids[2:])
    assert [q.get(i).status for i in ids] == [jobq.JobStatus.COMPLETED] * 2 + [jobq.JobStatus.PROCESSING] * 2
    assert q.get(ids[0]).result == {"ok": 1}


def test_a_waiters_settle_is_a_probe_and_one_round_trip_for_its_transaction(counted, clock: FakeClock) -> None:
    """The settle's lock, its statement and COMMIT go in one pipeline: the server never waits for
    the client with the lock held (test_postgres_finish_notify.py freezes a client there)."""
    q, proxy = counted
    job_id = q.enqueue({"n": 1})
    now = clock()
    q.backend.register_waiter(job_id, now, now - 1)  # a crashed waiter's, expired
    n, settled = trips(proxy, q.settle_waiters)
    assert (n, settled) == (2, True)
    n, settled = trips(proxy, q.settle_waiters)  # nothing to settle: the probe alone
    assert (n, settled) == (1, False)
