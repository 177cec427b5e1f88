"""Commits whose reply is lost (PostgreSQL): the transaction was applied, the client cannot know.

A proxy between jobq and the server forwards the COMMIT and cuts the connection before the reply
comes back. jobq must find out what happened instead of guessing: a claim that did commit is run
(not left PROCESSING for a whole lease), a completion that did commit is reported done (not
refused and recorded as a stale write against the worker that made it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from faultproxy import FaultProxy, proxied
from polling import wait_for

import jobq
from jobq.backends import base, ops
from jobq.backends.store import SqlStore
from jobq.schedules import schedule_of
from jobq.worker import Worker
from jobq.worker.runtime import GAVE_BACK_AT_STOP

pytestmark = pytest.mark.postgres


ENQUEUE_UNKNOWN = r"outcome is unknown.*\. The jobs may be stored: look for them \(jobq list\)"
"""What an enqueue without keys whose outcome is unknown says (``OutcomeUnknown``)."""


@pytest.fixture
def pq(postgres_url: str) -> Iterator[tuple[jobq.Queue, FaultProxy]]:
    with proxied(postgres_url) as (url, proxy):
        q = jobq.Queue(settings=jobq.Settings(database_url=url, backoff_base_seconds=0.01, backoff_cap_seconds=0.01))
        yield q, proxy
        q.close()


def _kinds(q: jobq.Queue, job_id: int) -> list[str]:
    return [str(e.kind) for e in q.events(job_id)]


def _prepared(q: jobq.Queue, runs: int = 6) -> None:
    """Claims and completes jobs: after 6 runs the per-job statements run prepared on the
    connection (``PooledConnection.run_alone``: after ``prepare_threshold`` runs, 5 by default)."""
    for n in range(runs):
        q.enqueue({"warm": n})
        job = q.claim("w0")
        assert job is not None
        q.complete(job)


@pytest.mark.parametrize("prepared", [False, True], ids=["first-runs", "prepared"])
def test_a_claim_whose_commit_reply_was_lost_hands_out_what_it_claimed(pq, prepared: bool) -> None:
    """Once its statement runs prepared, the client sends the statement's name, not its text:
    the reply lost is then the one to that name (the completion's too)."""
    q, proxy = pq
    if prepared:
        _prepared(q)
    job_id = q.enqueue({"n": 1})
    proxy.lose_next_commit_reply(after=b"_jobq_" if prepared else b"FOR NO KEY UPDATE SKIP LOCKED")
    job = q.claim("w1")
    assert proxy.lost_replies == 1
    assert job is not None and job.id == job_id
    stored = q.get(job_id)
    assert (stored.status, stored.lease_token, stored.attempts) == (jobq.JobStatus.PROCESSING, job.lease_token, 1)
    if prepared:
        _prepared(q)  # on the fresh connection that replaced the one cut
        proxy.lose_next_commit_reply(after=b"_jobq_")
    q.complete(job)  # with prepared: its reply lost too, found completed and not refused
    assert proxy.lost_replies == (2 if prepared else 1)
    assert _kinds(q, job_id) == ["enqueued", "claimed", "completed"]


def test_a_connection_lost_while_a_statement_is_prepared_is_retried_as_nothing_committed(pq) -> None:
    """The prepare is a round trip of its own, before the statement that commits: a connection
    cut there is a call to retry (on a fresh connection), never an unknown outcome."""
    q, proxy = pq
    _prepared(q, runs=5)  # one run short of the threshold: the next claim prepares its statement
    job_id = q.enqueue({"n": 1})
    proxy.cut_next(before=b"_jobq_")  # the Parse that names the statement: never reaches the server
    job = q.claim("w1")
    assert proxy.cuts == 1
    assert job is not None and job.id == job_id
    q.complete(job)
    assert q.get(job_id).status == jobq.JobStatus.COMPLETED
    assert _kinds(q, job_id) == ["enqueued", "claimed", "completed"]


def test_a_completion_whose_commit_reply_was_lost_is_not_refused(pq) -> None:
    q, proxy = pq
    job_id = q.enqueue({"n": 1})
    job = q.claim("w1")
    assert job is not None
    proxy.lose_next_commit_reply(after=b"'COMPLETED'")
    q.complete(job, {"ok": True})  # raised StorageError (outcome unknown) before
    assert proxy.lost_replies == 1
    assert q.get(job_id).status == jobq.JobStatus.COMPLETED
    assert _kinds(q, job_id) == ["enqueued", "claimed", "completed"]


def test_a_failure_whose_commit_reply_was_lost_is_not_refused(pq) -> None:
    q, proxy = pq
    job_id = q.enqueue({"n": 1}, max_attempts=2)
    job = q.claim("w1")
    assert job is not None
    proxy.lose_next_commit_reply(after=b"last_error")
    assert q.fail(job, "flaky") == jobq.JobStatus.PENDING
    assert proxy.lost_replies == 1
    assert _kinds(q, job_id) == ["enqueued", "claimed", "retry_scheduled"]


def test_a_release_whose_commit_reply_was_lost_is_not_refused(pq) -> None:
    """A worker shutting down gives its job back (``release``); the reply to that COMMIT is lost.
    The job is PENDING with its attempt given back, and one ``released`` event says so: the
    release is not recorded as a stale write, nor given back twice."""
    q, proxy = pq
    job_id = q.enqueue({"n": 1}, max_attempts=1)
    job = q.claim("w1")
    assert job is not None
    proxy.lose_next_commit_reply(after=b"greatest(0, attempts - 1)")
    assert q.release(job, GAVE_BACK_AT_STOP) is True
    assert proxy.lost_replies == 1
    stored = q.get(job_id)
    assert (stored.status, stored.attempts) == (jobq.JobStatus.PENDING, 0)
    kinds = _kinds(q, job_id)
    assert kinds.count("released") == 1 and "stale_write_refused" not in kinds, kinds
    again = q.claim("w2")  # runs again, its one attempt intact
    assert again is not None and again.id == job_id and again.attempts == 1


def test_a_heartbeat_whose_commit_reply_was_lost_keeps_the_lease(pq) -> None:
    q, proxy = pq
    q.enqueue({"n": 1})
    job = q.claim("w1", lease=30)
    assert job is not None
    proxy.lose_next_commit_reply(after=b"lease_expires_at =")
    assert q.heartbeat(job, lease=60) is False
    assert proxy.lost_replies == 1
    q.complete(job)


def test_a_worker_whose_completion_reply_was_lost_records_one_completion(pq) -> None:
    q, proxy = pq
    ids = q.enqueue_many([{"n": n} for n in range(3)])
    proxy.lose_next_commit_reply(after=b"'COMPLETED'")
    worker = Worker(q, lambda ctx: ctx.payload["n"], exit_when_idle=True)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: all(q.get(i).status == jobq.JobStatus.COMPLETED for i in ids), 60, "every job to complete")
    finally:
        worker.stop(force=True)
        t.join(30)
    assert proxy.lost_replies == 1
    assert worker.jobs_done == 3
    for job_id in ids:
        assert _kinds(q, job_id) == ["enqueued", "claimed", "completed"]


def test_an_enqueue_whose_reply_was_lost_says_the_outcome_is_unknown(pq) -> None:
    """An enqueue without a key cannot be recognised afterwards: the caller is told, not guessed
    for (``OutcomeUnknown``, a ``StorageError``), with what to do: look before sending it again,
    or give jobs a key."""
    q, proxy = pq
    proxy.lose_next_commit_reply(after=b"SELECT ins.id FROM ins, wake")
    with pytest.raises(jobq.OutcomeUnknown, match=ENQUEUE_UNKNOWN):
        q.enqueue({"n": 1})
    assert proxy.lost_replies == 1
    assert q.counts()["PENDING"] == 1  # it was applied, exactly once


def test_a_batch_enqueue_whose_reply_was_lost_says_the_outcome_is_unknown(pq) -> None:
    """enqueue_many's one statement (enqueue_uniform): as a single enqueue, told, not guessed."""
    q, proxy = pq
    proxy.lose_next_commit_reply(after=b"SELECT ins.id FROM ins, wake")
    with pytest.raises(jobq.OutcomeUnknown, match=ENQUEUE_UNKNOWN):
        q.enqueue_many([{"n": n} for n in range(3)])
    assert proxy.lost_replies == 1
    assert q.counts()["PENDING"] == 3  # applied, exactly once


@pytest.mark.parametrize(
    ("notes", "marker"),
    [
        # One statement (complete_set_and_claim): its own reply is its commit's.
        (None, b"locked AS MATERIALIZED"),
        # With notes, a transaction whose COMMIT goes in one pipeline with the waiters' notice.
        (["first", "second"], b"COMMIT"),
    ],
    ids=["one-statement", "transaction"],
)
def test_completions_and_a_claim_whose_commit_reply_was_lost_are_settled(pq, notes, marker) -> None:
    """The worker's completions and next claim commit together: when that reply is lost, the
    completions are recognised as done when repeated and the claimed jobs are read back by the
    claim's nonce, each handed out once with its stored lease."""
    q, proxy = pq
    ids = q.enqueue_many([{"n": n} for n in range(4)])
    jobs = q.claim_many("w1", 2)
    proxy.lose_next_commit_reply(after=marker)
    done, more = q.complete_many_and_claim([(j, {"ok": 1}) for j in jobs], "w1", 2, notes=notes)
    assert proxy.lost_replies == 1
    assert done == [True, True] and sorted(j.id for j in more) == ids[2:]
    for job in more:
        assert q.get(job.id).lease_token == job.lease_token
    assert [q.get(i).status for i in ids] == [jobq.JobStatus.COMPLETED] * 2 + [jobq.JobStatus.PROCESSING] * 2
    assert q.claim("w2") is None  # nothing left to hand out a second time


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(postgres_url: str) -> None:
    """A pooled connection the server ended (restart, idle timeout) is found out before a statement
    is sent alone on it: the call runs on a fresh connection instead of reporting an unknown outcome.
    (No proxy here: the server's last words must be in the client's socket once its process is gone.)"""
    with jobq.Queue(postgres_url) as q:
        _enqueue_after_the_server_ended_the_connection(q, postgres_url)


def _enqueue_after_the_server_ended_the_connection(q: jobq.Queue, postgres_url: str) -> None:
    import psycopg

    q.enqueue({"n": 0})  # the pool holds idle connections now
    pool = q.backend._get_pool()  # type: ignore[attr-defined]
    mine = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'jobq'"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        # End every connection of the pool, once it has made all it will make.
        wait_for(
            lambda: len(admin.execute(mine).fetchall()) == pool.get_stats()["pool_size"],
            30,
            "the pool to settle",
        )
        pids = [row[0] for row in admin.execute(mine).fetchall()]
        assert pids and all(admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] for pid in pids)
        wait_for(
            lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchall(),
            30,
            "the ended server processes to exit",
        )
    job_id = q.enqueue({"n": 1})
    assert q.get(job_id) is not None and q.counts()["PENDING"] == 2


@pytest.mark.parametrize(
    ("limits", "sent"),
    [
        ({}, b"WITH ctl AS"),  # concurrency alone: claim_concurrency_locked, one message
        ({"per_key": 5}, b"rate_window, rate_tat FROM"),  # the general path: lock_controls first
    ],
)
def test_a_controlled_claim_whose_commit_reply_was_lost_hands_out_what_it_claimed(
    pq, limits: dict[str, int], sent: bytes
) -> None:
    """A limited queue's claim is a transaction of its own (its control row FOR UPDATE, the count,
    the lease): its lost COMMIT reply is settled by reading back the nonce's jobs (``claimed_also``),
    and the slot it took is the one job handed out, not a second."""
    q, proxy = pq
    q.set_limits("default", concurrency=1, **limits)
    first, second = q.enqueue({"n": 1}), q.enqueue({"n": 2})
    proxy.lose_next_commit_reply(after=sent)
    job = q.claim("w1")
    assert proxy.lost_replies == 1
    assert job is not None and job.id == first
    stored = q.get(first)
    assert (stored.status, stored.lease_token, stored.attempts) == (jobq.JobStatus.PROCESSING, job.lease_token, 1)
    assert q.claim("w2") is None  # the one slot is taken by the claim whose reply was lost
    assert q.get(second).status == jobq.JobStatus.PENDING
    q.complete(job)
    assert _kinds(q, first) == ["enqueued", "claimed", "completed"]
    again = q.claim("w2")
    assert again is not None and again.id == second


def test_a_limited_claim_cut_before_the_server_saw_it_hands_out_nothing_and_loses_nothing(pq) -> None:
    """The one-round-trip claim of a queue limited by its concurrency alone is sent alone: a
    connection lost before the server saw it leaves the outcome unknown to the client, which reads
    back by the claim's nonce, finds nothing, and hands out nothing; the job stays PENDING for the
    next claim and the slot is free."""
    q, proxy = pq
    q.set_limits("default", concurrency=1)
    job_id = q.enqueue({"n": 1})
    proxy.cut_next(before=b"WITH ctl AS")
    assert q.claim("w1") is None
    assert proxy.cuts == 1
    assert q.get(job_id).status == jobq.JobStatus.PENDING
    job = q.claim("w1")
    assert job is not None and job.id == job_id and job.attempts == 1


@pytest.mark.parametrize("on_conflict", ["return", "raise"])
def test_a_keyed_enqueue_whose_reply_was_lost_names_the_job_it_made(pq, on_conflict: str) -> None:
    """The keyed enqueue is one statement sent alone: when its reply is lost, the key tells what
    happened (the job it made is the key's holder), so the caller gets that id, once, and no
    DuplicateJob for its own insert."""
    q, proxy = pq
    proxy.lose_next_commit_reply(after=b"ON CONFLICT")
    job_id = q.enqueue({"n": 1}, key="k1", on_conflict=on_conflict)
    assert proxy.lost_replies == 1
    assert q.counts()["PENDING"] == 1
    assert q.get(job_id).idempotency_key == "k1"
    assert _kinds(q, job_id) == ["enqueued"]
    assert q.enqueue({"n": 1}, key="k1") == job_id  # the key is held by that job, nothing doubled


def test_a_keyed_enqueue_whose_reply_was_lost_still_raises_for_an_older_holder(pq) -> None:
    q, proxy = pq
    holder = q.enqueue({"n": 0}, key="k1")
    proxy.lose_next_commit_reply(after=b"ON CONFLICT")
    with pytest.raises(jobq.DuplicateJob) as raised:
        q.enqueue({"n": 1}, key="k1", on_conflict="raise")
    assert proxy.lost_replies == 1 and raised.value.job_id == holder
    assert q.counts()["PENDING"] == 1


def test_a_keyed_batch_whose_commit_reply_was_lost_names_the_jobs_it_made(pq) -> None:
    q, proxy = pq
    proxy.lose_next_commit_reply(after=b"COMMIT")  # a batch is a transaction: its COMMIT
    ids = q.enqueue_many([{"n": n} for n in range(3)], keys=["a", "b", "c"])
    assert proxy.lost_replies == 1
    assert q.counts()["PENDING"] == 3 and len(set(ids)) == 3
    assert q.enqueue_many([{"n": n} for n in range(3)], keys=["a", "b", "c"]) == ids


# -- AsyncQueue (the native asyncio store, backends/postgres/aio.py): the same faults, awaited ----


def test_async_queue_settles_lost_commit_replies_and_retries_cut_connections(postgres_url: str) -> None:
    """``AsyncPostgresStore._arun`` is ``_run`` awaited: a connection cut inside a transaction, before
    its COMMIT, is retried on a fresh one; a lost commit reply is settled (claims read back by nonce, worker writes
    repeated, keyed enqueues found by key), a plain enqueue's is reported unknown. Nothing doubled."""

    async def main(url: str, proxy: FaultProxy) -> None:
        async with jobq.AsyncQueue(url) as q:
            # A statement sent alone commits as it runs: cut before the server saw it, the client
            # cannot tell from a lost reply. A keyed enqueue is settled by its key ...
            proxy.cut_next(before=b"ON CONFLICT")
            first = await q.enqueue({"n": 1}, key="first")
            assert proxy.cuts == 1 and (await q.counts())["PENDING"] == 1
            # ... a plain one is reported unknown (here it was not applied).
            proxy.cut_next(before=b"SELECT ins.id FROM ins, wake")
            with pytest.raises(jobq.StorageError, match="outcome is unknown"):
                await q.enqueue({"n": 0})
            assert proxy.cuts == 2 and (await q.counts())["PENDING"] == 1

            proxy.lose_next_commit_reply(after=b"FOR NO KEY UPDATE SKIP LOCKED")  # claim
            job = await q.claim("w1")
            assert proxy.lost_replies == 1 and job is not None and job.id == first
            assert (await q.get(first)).lease_token == job.lease_token

            proxy.lose_next_commit_reply(after=b"'COMPLETED'")  # completion
            await q.complete(job, {"ok": True})
            assert proxy.lost_replies == 2
            assert [str(e.kind) for e in await q.events(first)] == ["enqueued", "claimed", "completed"]

            proxy.lose_next_commit_reply(after=b"ON CONFLICT")  # keyed enqueue: found by its key
            keyed = await q.enqueue({"n": 2}, key="k")
            assert proxy.lost_replies == 3 and await q.enqueue({"n": 2}, key="k") == keyed

            proxy.lose_next_commit_reply(after=b"SELECT ins.id FROM ins, wake")  # plain enqueue: the caller is told
            with pytest.raises(jobq.OutcomeUnknown, match=ENQUEUE_UNKNOWN):
                await q.enqueue({"n": 3})
            assert proxy.lost_replies == 4 and (await q.counts())["PENDING"] == 2

            # A controlled claim: its own transaction (a per-key limit: the general path).
            await q.set_limits("default", concurrency=1, per_key=5)
            proxy.cut_next(before=b"rate_window, rate_tat FROM")  # cut before it: retried
            job = await q.claim("w1")
            assert proxy.cuts == 3 and job is not None
            await q.complete(job)
            proxy.lose_next_commit_reply(after=b"rate_window, rate_tat FROM")  # its reply lost: read back
            job = await q.claim("w1")
            assert proxy.lost_replies == 5 and job is not None
            assert await q.claim("w2") is None  # the single slot is the job handed out
            proxy.cut_next(before=b"'COMPLETED'")  # completion cut before sending: retried
            await q.complete(job)
            assert proxy.cuts == 4
            assert (await q.counts())["COMPLETED"] == 3

            # Concurrency alone: the lock and the claim in one message (claim_concurrency_locked).
            await q.set_limits("default", per_key=None)
            last = await q.enqueue({"n": 4})
            proxy.lose_next_commit_reply(after=b"WITH ctl AS")  # its reply lost: read back
            job = await q.claim("w1")
            assert proxy.lost_replies == 6 and job is not None and job.id == last
            assert await q.claim("w2") is None  # the single slot is the job handed out
            assert (await q.get(last)).lease_token == job.lease_token

            # An operator's pause: made again, found made (one history row).
            proxy.lose_next_commit_reply(after=b"queue_control_events (queue, at, actor")
            paused = await q.pause("default", actor="ann")
            assert proxy.lost_replies == 7 and paused.paused
            assert [e.action for e in await q.control_history("default")].count("pause") == 1

            # An operator's cancel: the chunk that committed is recognised, not refused.
            waiting = await q.enqueue({"n": 5})
            proxy.lose_next_commit_reply(after=b"FOR UPDATE")
            cancelled = await q.cancel(waiting, actor="ann")
            assert proxy.lost_replies == 8 and cancelled.ok
            assert [str(e.kind) for e in await q.events(waiting)] == ["enqueued", "cancelled"]

            # A purge: its chunk that committed is counted (its first job deleted is gone).
            proxy.lose_next_commit_reply(after=b"WITH gone AS")
            assert await q.purge(older_than=0, statuses=[jobq.JobStatus.CANCELLED]) == 1
            assert (
                proxy.lost_replies == 9 and (await q.count(jobq.JobFilter(statuses=(jobq.JobStatus.CANCELLED,)))) == 0
            )

    with proxied(postgres_url) as (url, proxy):
        asyncio.run(main(url, proxy))


def test_async_queue_sends_its_per_job_statements_prepared_and_settles_them_as_the_blocking_one(
    postgres_url: str,
) -> None:
    """``AsyncPooledConnection.arun_alone`` is ``PooledConnection.run_alone`` awaited: a per-job
    statement is prepared under jobq's own name (here at its first run on a connection:
    ``prepare_threshold=0``; the async pool rotates its connections, so counting runs to the
    default 5 would depend on how many it holds), in a round trip of its own: a connection cut
    there is retried, nothing committed. Sent by that name, a lost commit reply is settled as one
    to its text: the claim read back by its nonce, the completion repeated and found made."""
    from jobq.backends.postgres.aio import ASYNC_POOL_MAX_SIZE

    async def warm(q: jobq.AsyncQueue) -> None:
        # Every per-job statement run, and so prepared, on each connection the pool hands out
        # next (it holds at most ASYNC_POOL_MAX_SIZE, handed out in turn).
        for n in range(2 * ASYNC_POOL_MAX_SIZE):
            await q.enqueue({"warm": n})
            job = await q.claim("w0")
            assert job is not None
            await q.complete(job)

    async def main(url: str, proxy: FaultProxy) -> None:
        async with jobq.AsyncQueue(f"{url}?prepare_threshold=0") as q:
            proxy.cut_next(before=b"_jobq_")  # the first Parse naming a statement: the enqueue's
            first = await q.enqueue({"n": 1})
            assert proxy.cuts == 1 and (await q.counts())["PENDING"] == 1  # retried, made once

            await warm(q)  # it leaves its last job pending
            proxy.lose_next_commit_reply(after=b"_jobq_")  # the claim, sent by its name
            job = await q.claim("w1")
            assert proxy.lost_replies == 1 and job is not None and job.payload == {"warm": 2 * ASYNC_POOL_MAX_SIZE - 1}
            job_id = job.id
            stored = await q.get(job_id)
            running = (jobq.JobStatus.PROCESSING, job.lease_token, 1)
            assert (stored.status, stored.lease_token, stored.attempts) == running

            await warm(q)  # the connection cut was replaced by one with nothing prepared
            proxy.lose_next_commit_reply(after=b"_jobq_")  # the completion, by its name
            await q.complete(job)
            assert proxy.lost_replies == 2
            assert [str(e.kind) for e in await q.events(job_id)] == ["enqueued", "claimed", "completed"]
            assert (await q.get(first)).status == jobq.JobStatus.COMPLETED  # taken by the first warm-up
            counts = await q.counts()
            assert (counts["COMPLETED"], counts["PENDING"], counts["PROCESSING"]) == (1 + 4 * ASYNC_POOL_MAX_SIZE, 0, 0)

    with proxied(postgres_url) as (url, proxy):
        asyncio.run(main(url, proxy))


def test_async_queue_settles_a_lost_reply_of_the_second_transaction_of_a_claim(postgres_url: str) -> None:
    """A claim over a plain and a limited queue is two transactions under the async store too (the
    plain claim, then the limited queue's own, its control row FOR UPDATE): the second one's lost
    COMMIT reply is settled by reading back its nonce, so both jobs are handed out once, with the
    leases stored, and the limited queue's one slot stays the one job handed out."""

    async def main(url: str, proxy: FaultProxy) -> None:
        async with jobq.AsyncQueue(url) as q:
            await q.set_limits("lim", concurrency=1)
            plain = await q.enqueue({"n": 1}, queue="default")
            limited = [await q.enqueue({"n": n}, queue="lim") for n in (2, 3)]
            proxy.lose_next_commit_reply(after=b"rate_window, rate_tat FROM")
            jobs = await q.claim_many("w1", 3, queue=["default", "lim"])
            assert proxy.lost_replies == 1
            assert sorted(j.id for j in jobs) == [plain, limited[0]]
            for job in jobs:
                stored = await q.get(job.id)
                assert (stored.status, stored.lease_token, stored.attempts) == (
                    jobq.JobStatus.PROCESSING,
                    job.lease_token,
                    1,
                )
            assert await q.claim_many("w2", 3, queue=["default", "lim"]) == []  # the slot is taken
            for job in jobs:
                await q.complete(job)
            again = await q.claim("w2", queue="lim")
            assert again is not None and again.id == limited[1]

    with proxied(postgres_url) as (url, proxy):
        asyncio.run(main(url, proxy))


def _lose_the_third_chunks_reply(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, marker: bytes, cut: bool) -> None:
    """Chunks of 10 jobs; once two have committed, the third one's COMMIT reply is lost (``cut``:
    the COMMIT itself never reaches the server, which rolls that chunk back)."""
    monkeypatch.setattr(base, "PURGE_CHUNK_JOBS", 10)
    monkeypatch.setattr(base, "OPERATOR_CHUNK_JOBS", 10)
    paused = []

    def pause(self: SqlStore, began: float) -> None:
        paused.append(began)
        if len(paused) == 2:
            if cut:
                proxy.cut_next(before=b"COMMIT")
            else:
                proxy.lose_next_commit_reply(after=marker)

    monkeypatch.setattr(SqlStore, "_pause", pause)


@pytest.mark.parametrize("committed", [True, False], ids=["reply-lost", "commit-cut"])
def test_a_purge_chunk_whose_commit_outcome_is_unknown_is_settled(
    pq, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """A purge of 50 jobs, 10 a transaction; the third chunk's COMMIT reply is lost (it
    committed: its first job is gone) or the COMMIT is cut on its way (it did not: the chunk runs
    again). The call returns 50, every job and its events gone (before: StorageError, "the
    outcome is unknown", and the count of the jobs purged in the chunks before)."""
    q, proxy = pq
    ids = q.enqueue_many([{"n": n} for n in range(50)])
    assert all(r.ok for r in q.cancel_many(ids=ids))
    _lose_the_third_chunks_reply(proxy, monkeypatch, b"WITH gone AS", cut=not committed)
    assert q.purge(older_than=0, statuses=[jobq.JobStatus.CANCELLED]) == 50
    assert (proxy.lost_replies, proxy.cuts) == ((1, 0) if committed else (0, 1))
    assert q.count() == 0
    assert all(q.events(i) == [] for i in ids)


@pytest.mark.parametrize("committed", [True, False], ids=["reply-lost", "commit-cut"])
@pytest.mark.parametrize("call", ["cancel_many", "resubmit_many", "move_many"])
def test_an_operator_chunk_whose_commit_outcome_is_unknown_is_settled(
    pq, monkeypatch: pytest.MonkeyPatch, call: str, committed: bool
) -> None:
    """An operator's cancel, resubmit or move of 50 jobs, 10 a transaction; the third chunk's COMMIT
    reply is lost (it committed), or the COMMIT is cut on its way (it did not). The call finds out
    which and returns every job done once, as a call without the fault does (before: StorageError,
    "the outcome is unknown"; run again blindly, a committed chunk would refuse its own jobs)."""
    q, proxy = pq
    ids = q.enqueue_many([{"n": n} for n in range(50)])
    if call == "resubmit_many":
        assert all(r.ok for r in q.cancel_many(ids=ids))
    _lose_the_third_chunks_reply(proxy, monkeypatch, b"FOR UPDATE", cut=not committed)
    if call == "resubmit_many":
        results = q.resubmit_many(where=jobq.JobFilter(statuses=(jobq.JobStatus.CANCELLED,)))
        done, kinds = jobq.JobStatus.PENDING, ["enqueued", "cancelled", "resubmitted"]
    elif call == "move_many":
        results = q.move_many("elsewhere", where=jobq.JobFilter(statuses=(jobq.JobStatus.PENDING,)))
        done, kinds = jobq.JobStatus.PENDING, ["enqueued", "moved"]
        assert {r.message for r in results} == {"moved to queue 'elsewhere'"}  # as done, once
        assert {q.get(i).queue for i in ids} == {"elsewhere"}
    else:
        results = q.cancel_many(where=jobq.JobFilter(statuses=(jobq.JobStatus.PENDING,)))
        done, kinds = jobq.JobStatus.CANCELLED, ["enqueued", "cancelled"]
    assert (proxy.lost_replies, proxy.cuts) == ((1, 0) if committed else (0, 1))
    assert [(r.job_id, r.ok, r.status) for r in results] == [(i, True, done) for i in ids]
    assert q.count(jobq.JobFilter(statuses=(done,))) == 50
    assert all(_kinds(q, i) == kinds for i in ids)


def test_a_resubmit_whose_reply_was_lost_is_not_made_again_after_a_worker_ran_the_job(
    pq, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resubmit's COMMIT reply is lost, and before it is settled a worker claims the job and
    completes it. Made again, the resubmit would find a COMPLETED job and run it a second time;
    the settle recognises the resubmit by its event and leaves the job as it is."""
    q, proxy = pq
    job_id = q.enqueue({"n": 1})
    assert q.cancel(job_id).ok
    settled = ops.chunk_settled

    def worker_first(*args: object) -> ops.Op[ops.Chunk]:
        with jobq.Queue(postgres_url) as worker:
            job = worker.claim("w")
            assert job is not None and job.id == job_id
            worker.complete(job)
        return settled(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ops, "chunk_settled", worker_first)
    proxy.lose_next_commit_reply(after=b"FOR UPDATE")
    (result,) = q.resubmit_many(ids=[job_id])
    assert proxy.lost_replies == 1
    assert (result.job_id, result.ok, result.status) == (job_id, True, jobq.JobStatus.PENDING)
    assert q.get(job_id).status == jobq.JobStatus.COMPLETED
    assert _kinds(q, job_id) == ["enqueued", "cancelled", "resubmitted", "claimed", "completed"]


def test_a_worker_re_registering_whose_commit_reply_was_lost_stays_listed_once_and_working(
    postgres_url: str,
) -> None:
    """The worker's registry row deleted by hand: the next heartbeat finds none and registers the
    worker again, and that commit's reply is lost. The row is written (an upsert: running it again
    is safe), the worker is listed once, alive, and still claims and runs what is enqueued."""
    import psycopg

    with proxied(postgres_url) as (url, proxy):
        q = jobq.Queue(settings=jobq.Settings(database_url=url, lease_seconds=1.5))
        worker = Worker(q, lambda ctx: ctx.payload["n"])
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        try:
            listed = lambda: [w for w in q.workers() if w.id == worker.id and w.stopped_at is None]  # noqa: E731
            wait_for(listed, 30, "the worker's registry row")
            proxy.lose_next_commit_reply(after=b"wake_address = EXCLUDED.wake_address")
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                assert conn.execute("DELETE FROM jobq.workers WHERE id = %s", [worker.id]).rowcount == 1
            wait_for(lambda: proxy.lost_replies == 1, 30, "the re-register's reply to be lost")
            lost_at = time.time()
            # Listed, and heartbeating since: the lost reply stopped neither the heartbeats nor the row.
            wait_for(lambda: [w for w in listed() if w.last_seen_at > lost_at], 30, "a heartbeat after the lost reply")
            job_id = q.enqueue({"n": 7})
            wait_for(lambda: q.get(job_id).status is jobq.JobStatus.COMPLETED, 30, "the job to run")
            assert len(listed()) == 1 and t.is_alive()
        finally:
            worker.stop(force=True)
            t.join(30)
            q.close()


def test_a_worker_whose_first_registration_reply_was_lost_starts_and_is_listed_once(postgres_url: str) -> None:
    """A worker's registry row is written as it starts (an upsert), and that commit's reply is
    lost. The worker starts all the same (a repeat of the upsert settles it), is listed once,
    alive, and runs what is enqueued."""
    with proxied(postgres_url) as (url, proxy):
        q = jobq.Queue(settings=jobq.Settings(database_url=url, lease_seconds=1.5))
        proxy.lose_next_commit_reply(after=b"wake_address = EXCLUDED.wake_address")
        worker = Worker(q, lambda ctx: ctx.payload["n"])
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        try:
            wait_for(lambda: proxy.lost_replies == 1, 30, "the registration's reply to be lost")
            job_id = q.enqueue({"n": 7})
            wait_for(lambda: q.get(job_id).status is jobq.JobStatus.COMPLETED, 30, "the job to run")
            listed = [w for w in q.workers() if w.stopped_at is None]
            assert [w.id for w in listed] == [worker.id] and t.is_alive()
        finally:
            worker.stop(force=True)
            t.join(30)
            q.close()


@pytest.mark.parametrize(
    ("operation", "marker"),
    [
        ("heartbeat", b"lease_expires_at ="),
        ("complete", b"'COMPLETED'"),
        ("fail", b"last_error"),
        ("release", b"greatest(0, attempts - 1)"),
        ("progress", b"progress_message ="),
    ],
)
def test_a_refused_write_whose_commit_reply_was_lost_is_recorded_once(
    pq, postgres_url: str, operation: str, marker: bytes
) -> None:
    """A worker's write after its job was rescued is refused, and the refusal recorded in the
    same transaction; the reply to that COMMIT is lost. The store settles the unknown outcome
    by writing again, which is refused again: that second refusal must not be recorded too (the
    job's history said "refused" twice for one write, and the lease-lost counter counted it
    twice)."""
    q, proxy = pq
    job_id = q.enqueue({"n": 1}, max_attempts=3)
    job = q.claim("w1")
    assert job is not None
    with jobq.Queue(postgres_url, clock=lambda: time.time() + 3600) as late:
        assert [r.job_id for r in late.rescue_expired(actor="rescuer")] == [job_id]
    proxy.lose_next_commit_reply(after=marker)
    write = {
        "heartbeat": lambda: q.heartbeat(job),
        "complete": lambda: q.complete(job),
        "fail": lambda: q.fail(job, "boom"),
        "release": lambda: q.release(job, GAVE_BACK_AT_STOP),
        "progress": lambda: q.progress(job, 0.5, "half"),
    }[operation]
    try:
        outcome = write()
    except jobq.LeaseLost:
        outcome = "LeaseLost"
    assert proxy.lost_replies == 1
    assert outcome in (False, None, "LeaseLost"), outcome
    refusals = [e.detail for e in q.events(job_id) if e.kind == jobq.EventKind.STALE_WRITE_REFUSED]
    named = {"release": "released"}.get(operation, operation)  # as the history names it
    assert refusals == [{"operation": named, "token": job.lease_token}]
    stored = q.get(job_id)
    assert (stored.status, stored.attempts) == (jobq.JobStatus.PENDING, 1)  # as rescued


def test_a_schedule_slot_whose_commit_reply_was_lost_is_enqueued_once(pq) -> None:
    """The firing of a slot (the schedule moved on, its job enqueued, in one transaction) whose
    reply is lost raises "outcome unknown"; the scheduler's next try, from the row it read before,
    finds the slot taken and enqueues nothing: one job for the slot, none lost."""
    q, proxy = pq
    q.add_schedule("tick", task="t", every=1)
    info = wait_for(lambda: next(iter(q.schedules(due=True)), None), 10, "the first slot to be due")
    slots, next_run_at = schedule_of(info).due(info.next_run_at, q.clock())
    assert len(slots) == 1
    proxy.lose_next_commit_reply(after=b"SET last_job_id")
    with pytest.raises(jobq.StorageError, match="outcome is unknown"):
        q.fire_schedule(info, slots, next_run_at)
    assert proxy.lost_replies == 1
    assert q.fire_schedule(info, slots, next_run_at) is None  # the slot was taken: by that commit
    (stored,) = q.schedules()
    assert stored.next_run_at == next_run_at and stored.last_job_id is not None
    assert q.counts()["PENDING"] == 1
    assert q.get(stored.last_job_id).task == "t"


def test_a_schedule_added_whose_commit_reply_was_lost_is_saved_once(pq) -> None:
    """``jobq schedule add`` (``Queue.add_schedule``) whose COMMIT reply is lost: the upsert is made
    again and the call returns (before: StorageError, "the outcome is unknown"), and the schedule
    keeps the first run time the first write gave it."""
    q, proxy = pq
    proxy.lose_next_commit_reply(after=b"schedules (name, task, queue")
    q.add_schedule("nightly", task="report", cron="0 3 * * *")
    assert proxy.lost_replies == 1
    (stored,) = q.schedules()
    assert (stored.name, stored.task, stored.cron) == ("nightly", "report", "0 3 * * *")
    assert stored.next_run_at > q.clock()


def test_a_wait_whose_registration_reply_was_lost_still_returns_the_finished_job(pq, postgres_url: str) -> None:
    """``Queue.wait`` registers itself as a waiter (a row the finishing transaction looks for),
    and that COMMIT's reply is lost: the registration is made again, and the wait returns the
    job once another process completes it (before: StorageError, "the outcome is unknown")."""
    q, proxy = pq
    job_id = q.enqueue({"n": 1})
    proxy.lose_next_commit_reply(after=b"INSERT INTO jobq.job_waiters")
    waited: list[object] = []

    def wait() -> None:
        try:
            waited.append(q.wait(job_id, timeout=60))
        except jobq.JobqError as exc:
            waited.append(exc)

    waiting = threading.Thread(target=wait, daemon=True)
    waiting.start()
    wait_for(lambda: proxy.lost_replies == 1 or waited, 30, "the registration's reply to be lost")
    with jobq.Queue(postgres_url) as worker:
        job = worker.claim("w")
        assert job is not None and job.id == job_id
        worker.complete(job, {"ok": True})
    waiting.join(60)
    assert proxy.lost_replies == 1
    (got,) = waited
    assert isinstance(got, jobq.Job), got
    assert got.status == jobq.JobStatus.COMPLETED and got.result == {"ok": True}


def test_a_pause_or_a_limit_whose_commit_reply_was_lost_is_made_once(pq) -> None:
    """An operator's ``jobq pause`` or ``jobq limit`` whose COMMIT reply is lost: the change is
    written again, which finds it made and changes nothing more. The call returns the queue's
    controls, and the history holds one row per change (before: StorageError, "the outcome is
    unknown", for a change that was made)."""
    q, proxy = pq
    proxy.lose_next_commit_reply(after=b"queue_control_events (queue, at, actor")
    paused = q.pause("mail", actor="ann")
    assert proxy.lost_replies == 1
    assert paused.paused and paused.paused_by == "ann"
    proxy.lose_next_commit_reply(after=b"queue_control_events (queue, at, actor")
    limited = q.set_limits("mail", rate="4/s", concurrency=2, actor="bob")
    assert proxy.lost_replies == 2
    assert (limited.rate_count, limited.rate_window, limited.concurrency, limited.paused) == (4, 1.0, 2, True)
    assert [(e.action, e.actor) for e in q.control_history("mail")] == [("limits", "bob"), ("pause", "ann")]


def test_a_schedule_paused_resumed_or_removed_whose_commit_reply_was_lost_is_done_once(pq) -> None:
    """``jobq schedule pause``/``resume``/``remove`` whose COMMIT reply is lost: the pause and the
    resume find their history row and are not recorded twice; the removal is made again. Each call
    returns (before: StorageError, "the outcome is unknown", for a change that was made)."""
    q, proxy = pq
    q.add_schedule("nightly", task="report", cron="0 3 * * *")
    proxy.lose_next_commit_reply(after=b"schedule_actions (name, action, actor, at)")
    q.pause_schedule("nightly", actor="ann")
    assert proxy.lost_replies == 1
    proxy.lose_next_commit_reply(after=b"schedule_actions (name, action, actor, at)")
    q.resume_schedule("nightly", actor="bob")
    assert proxy.lost_replies == 2
    (stored,) = q.schedules()
    assert not stored.paused
    assert [(a.action, a.actor) for a in q.schedule_history("nightly")] == [("resume", "bob"), ("pause", "ann")]
    proxy.lose_next_commit_reply(after=b"DELETE FROM jobq.schedules")
    q.remove_schedule("nightly")
    assert proxy.lost_replies == 3
    assert q.schedules() == []
    with pytest.raises(jobq.ScheduleNotFound):
        q.remove_schedule("nightly")


def test_a_registry_prune_whose_commit_reply_was_lost_is_settled(pq) -> None:
    """The rescuer's deletion of workers ended long ago: sent again after a lost reply, it deletes
    nothing more and returns, so the rescuer's tick goes on (it raised OutcomeUnknown there)."""
    q, proxy = pq
    now = q.wall_time()
    q.backend.register_worker(base.WorkerInfo("gone", "gone", "h", 1, ("default",), now - 9e5, now - 9e5))
    q.backend.register_worker(base.WorkerInfo("here", "here", "h", 2, ("default",), now, now))
    q.backend.worker_stopped("gone", now - 8e5)
    proxy.lose_next_commit_reply(after=b"DELETE FROM")
    q.prune_workers(7 * 86_400)
    assert proxy.lost_replies == 1
    assert [w.id for w in q.workers()] == ["here"]


@pytest.mark.parametrize("committed", [True, False], ids=["reply-lost", "commit-cut"])
def test_a_rescue_whose_commit_outcome_is_unknown_is_settled_and_names_what_it_rescued(pq, committed: bool) -> None:
    """The rescuer's rescue of two expired leases; its COMMIT's reply is lost (it committed: its
    first job has its event at the rescue's time) or the COMMIT is cut on its way (it did not:
    the rescue runs again). Either way the call returns both jobs rescued once, each with one
    event (before: OutcomeUnknown, and the rescuer's tick ended there)."""
    q, proxy = pq
    ids = [q.enqueue({"n": n}) for n in range(2)]
    assert all(q.claim(f"w{n}") is not None for n in range(2))
    with jobq.Queue(q.settings.database_url, clock=lambda: time.time() + 3600) as late:
        if committed:
            proxy.lose_next_commit_reply(after=b"lease_token IS NOT DISTINCT FROM")
        else:
            proxy.cut_next(before=b"COMMIT")
        results = late.rescue_expired(actor="rescuer")
    assert (proxy.lost_replies, proxy.cuts) == ((1, 0) if committed else (0, 1))
    assert sorted((r.job_id, r.outcome) for r in results) == [(i, "rescued") for i in ids]
    for job_id in ids:
        assert q.get(job_id).status == jobq.JobStatus.PENDING
        assert _kinds(q, job_id) == ["enqueued", "claimed", "rescued"]


def test_a_marking_of_lost_workers_whose_commit_reply_was_lost_is_settled_and_names_them(pq) -> None:
    """The rescuer's marking of workers not heard from: after a lost reply it is made again and
    read back, so the call returns the workers it marked (the rescuer logs each one) instead of
    raising OutcomeUnknown in the rescuer's tick and cutting it short."""
    q, proxy = pq
    now = q.wall_time()
    for worker_id, seen in (("silent", now - 900), ("quiet", now - 800), ("here", now)):
        q.backend.register_worker(base.WorkerInfo(worker_id, worker_id, "h", 1, ("default",), seen, seen))
    proxy.lose_next_commit_reply(after=b"'lost'")
    assert sorted(q.mark_lost_workers(now - 60)) == ["quiet", "silent"]
    assert proxy.lost_replies == 1
    ended = {w.id: (w.end_reason, w.stopped_at) for w in q.workers()}
    assert ended["here"] == (None, None)
    assert ended["silent"][0] == ended["quiet"][0] == base.WorkerEnd.LOST


def _waiter_counts(postgres_url: str) -> tuple[int, int, int]:
    """(registrations made, registrations counted gone, rows left) of the queue's job_waiters."""
    import psycopg
    from psycopg import sql

    from jobq.backends.postgres.url import split_url

    options = split_url(postgres_url)
    s = options.schema
    with psycopg.connect(options.libpq_url) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT coalesce(pg_sequence_last_value({made}), 0), coalesce(pg_sequence_last_value({gone}), 0),"
                " (SELECT count(*) FROM {table})"
            ).format(
                made=sql.Literal(f"{s}.job_waiters_id_seq"),
                gone=sql.Literal(f"{s}.job_waiters_gone"),
                table=sql.Identifier(s, "job_waiters"),
            )
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


@pytest.mark.parametrize("fault", ["reply-lost", "never-sent"])
def test_an_unregistration_whose_outcome_is_unknown_is_not_sent_again_and_raises_nothing(
    pq: tuple[jobq.Queue, FaultProxy], postgres_url: str, fault: str
) -> None:
    """Sent again, an unregistration could count its registration gone twice (the finishing
    statements would then skip looking for a waiter that is still there). Left as it is, the
    count stays right (reply lost: the row went and was counted) or over (never sent: the row
    stays, uncounted, and expires), and the wait that made it is not failed for it."""
    q, proxy = pq
    job_id = q.enqueue({"n": 1})
    now = time.time()
    registration = q.backend.register_waiter(job_id, now, now - 1 if fault == "never-sent" else now + 60)
    assert _waiter_counts(postgres_url) == (1, 0, 1)
    if fault == "reply-lost":
        proxy.lose_next_commit_reply(after=b"WITH gone AS")
    else:
        proxy.cut_next(before=b"WITH gone AS")
    q.backend.unregister_waiter(registration)  # raises nothing
    if fault == "reply-lost":
        assert proxy.lost_replies == 1
        assert _waiter_counts(postgres_url) == (1, 1, 0)  # gone, counted once
    else:
        assert _waiter_counts(postgres_url) == (1, 0, 1)  # not sent again: the row is there
        assert q.settle_waiters() is True  # expired: deleted, and the count settled
        assert _waiter_counts(postgres_url) == (1, 1, 0)


def test_a_settle_of_the_waiters_count_whose_reply_was_lost_is_made_again_harmlessly(
    pq: tuple[jobq.Queue, FaultProxy], postgres_url: str
) -> None:
    """The settle (the lock, the settle and COMMIT in one round trip) committed, its reply lost:
    made again, it finds nothing more to do. The count is settled once, nothing raised."""
    q, proxy = pq
    job_id = q.enqueue({"n": 1})
    now = time.time()
    q.backend.register_waiter(job_id, now, now - 1)  # a crashed waiter's, expired
    assert _waiter_counts(postgres_url) == (1, 0, 1)
    proxy.lose_next_commit_reply(after=b"LOCK TABLE")
    assert q.settle_waiters() is False  # made again: nothing left to settle
    assert proxy.lost_replies == 1
    assert _waiter_counts(postgres_url) == (1, 1, 0)
