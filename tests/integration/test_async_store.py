"""Every Backend Protocol method through ``AsyncPostgresStore`` gives what the blocking
``PostgresBackend`` gives, on the loop alone (an executor that refuses all work).

The same script of calls runs twice on one database: on the blocking backend in one schema, then
on the asyncio store in another, each from an empty queue, with the same clock and the same claim
nonces, so every answer must be equal. A method that post-processed a transaction's result
outside its plan, ran one without returning it, or answered with a plain value, fails here
(un-awaited coroutine, a ``None``, a coroutine where a value belongs) and in
tests/unit/test_store_plans.py, which checks the shape of every method without a database."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from jobq.backends import base
from jobq.backends.base import (
    Completion,
    ControlUpdate,
    Failure,
    HistogramBounds,
    JobFilter,
    NewJob,
    Page,
    ScheduleInfo,
    WorkerEnd,
    WorkerInfo,
)
from jobq.backends.postgres import PostgresBackend
from jobq.backends.store import TOKEN_NONCE_BYTES
from jobq.job import JobStatus
from jobq.queue import lease_of
from jobq.testing import FakeClock

pytestmark = pytest.mark.postgres

# Not Protocol methods the asyncio store serves: the caller's own transaction (its asyncio path is
# ``aenqueue_in``/``acomplete_in``, tested in test_async_queue.py), the wake-up lines
# (``AsyncFinishHub``), close (``aclose``) and backup (SQLite's: ``AsyncQueue.backup`` runs it in
# a thread, PostgreSQL's refuses at once) and blockers (``AsyncQueue.blockers`` runs it in a thread:
# SQLite reads /proc).
NOT_SERVED = {"enqueue_in", "complete_in", "listener", "finish_waiter", "close", "backup", "blockers"}


def protocol_methods() -> set[str]:
    return {
        name
        for name, member in vars(base.Backend).items()
        if inspect.isfunction(member) and not name.startswith("_") and name not in NOT_SERVED
    }


class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        raise AssertionError(f"a worker thread was asked to run {fn!r}")


Call = Callable[..., Any]


def script(call: Call, clock: FakeClock) -> None:
    """Every Protocol method at least once, the multi-transaction ones both ways (a claim with a
    queue under flow control takes two transactions; a rescue that finds nothing takes one)."""
    now = clock()

    def job(n: int, queue: str = "default") -> NewJob:
        return NewJob(json.dumps(n), queue, "t", 0, now, 2)

    call("enqueue", [], now)
    ids = call("enqueue", [job(1), job(2), job(3), job(4), job(5, "lim"), job(6, "lim")], now)
    call("update_control", "lim", ControlUpdate(limits=frozenset({"concurrency"}), concurrency=1), "op", now)
    call("controls")
    call("control_history", None, 10)
    call("register_worker", WorkerInfo("w1", "w1", "h", 1, ("default", "lim"), now, now))
    call("next_due_at", ["default", "lim"], now)
    # Four from "default" are not enough for ten: the controlled claim (a second transaction) adds one of "lim".
    jobs = call("claim", "w1", ["lim", "default"], 10, 30.0, clock)
    assert len(jobs) == 5
    leases = [lease_of(j) for j in jobs]
    call("heartbeat", [], 30.0, clock)
    call("heartbeat", leases, 30.0, clock)
    call("progress", leases[0], 0.5, "half", clock)
    call("progress_of", [])
    call("progress_of", ids)
    call("trace_contexts", [])
    call("trace_contexts", ids)
    call("complete", [Completion(leases[0], json.dumps("ok"))], clock)
    call("complete_and_claim", [Completion(leases[1])], clock, "w1", ["default"], 1, 30.0)
    call("fail", [Failure(leases[2], "boom", None)], clock)
    call("release", [leases[3]], clock, "test")
    call("ack_cancel", [leases[4]], clock)
    call("resubmit", JobFilter(statuses=(JobStatus.PENDING,)), "op", now)
    call("move", JobFilter(ids=(ids[-1], ids[-2])), "elsewhere", "op", now)
    call("cancel", JobFilter(ids=(ids[-1],)), "op", now)
    call("rescue_expired", clock, lambda n: 1.0, "rescuer")  # nothing expired: the probe alone
    again = call("claim", "w1", ["default"], 2, 30.0, clock)
    assert again
    clock.advance(60)
    assert call("rescue_expired", clock, lambda n: 1.0, "rescuer", (), None, None)  # probe, then the write
    now = clock()
    call("worker_seen", "w1", now, [], 1, 1)
    call("mark_lost_workers", now - 1, now + 1)
    call("newest_write")
    call("restamp_ahead", now - 100, 100.0, 1.0, "rescuer")  # every waiting job ahead: restamped
    call("worker_stopped", "w1", now, WorkerEnd.STOPPED)
    call("prune_workers", now - 1)  # nothing ended before: the probe alone
    call("list_workers")
    call("prune_workers", now + 1)  # probe, then the delete
    call("store_time")
    schedule = ScheduleInfo("s", "t", "default", None, None, 60.0, "UTC", 0, "latest", False, "code", now)
    call("save_schedule", schedule, now)
    call("list_schedules")
    call("list_schedules", now)
    call("fire_schedule", "s", now, now + 60, now, [job(9)], now)
    call("pause_schedule", "s", True, "op", now, None)
    call("schedule_actions", None, 10)
    call("delete_schedule", "s")
    call("get", ids[0])
    call("get_after_writers", ids[1])
    waiter = call("register_waiter", ids[2], now, now + 60)
    call("unregister_waiter", waiter)
    call("unregister_waiter", None)
    call("settle_waiters", now)  # none left: the probe, then (PostgreSQL) the lock and the settle
    call("events", ids[0])
    call("recent_events", 50)
    call("list_jobs", JobFilter(), Page())
    call("count_jobs", JobFilter())
    call("list_page", JobFilter(), Page(limit=2))
    call("counts")
    call("stats", now)
    call("latest_jobs", None, 5)
    call("history", now - 3600, 60.0, now)
    call("due_history", now - 3600, 60.0, now, 10)
    call("queue_gauges", now)
    call("queue_gauges", now, False)
    call("last_event_id")
    call("events_after", 0, 100)
    call("completion_cursor", now)
    call("completions_after", (0.0, 0), now + 1, 100)
    call("last_job_id")
    call("enqueue_totals", 0, now + 1, 100)
    call("event_totals", 0, now + 1, 100, ["cancelled"])
    call("completion_totals", (0.0, 0), now + 1, 100, HistogramBounds((1.0, 10.0), (1.0, 10.0), (1.0, 3.0)))
    call("purge", [], now + 1)
    call("purge", [JobStatus.COMPLETED, JobStatus.CANCELLED], now + 1)
    call("purge", [JobStatus.COMPLETED, JobStatus.CANCELLED], now + 1, 5)


def test_every_protocol_method_gives_the_same_answer_through_the_asyncio_store(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nonces = itertools.count()
    # The same nonces on both runs (a lease token starts with its claim's nonce): equal answers.
    monkeypatch.setattr("jobq.backends.store._nonce", lambda: f"{next(nonces):0{2 * TOKEN_NONCE_BYTES}x}")
    sep = "&" if "?" in postgres_url else "?"

    blocking_answers: list[tuple[str, Any]] = []
    blocking = PostgresBackend(f"{postgres_url}{sep}schema=s_blocking")
    try:

        def call_blocking(name: str, *args: Any) -> Any:
            value = getattr(blocking, name)(*args)
            blocking_answers.append((name, value))
            return value

        script(call_blocking, FakeClock())
    finally:
        blocking.close()

    nonces = itertools.count()
    async_answers: list[tuple[str, Any]] = []
    backend = PostgresBackend(f"{postgres_url}{sep}schema=s_async")
    store: Any = backend.async_store()
    loop = asyncio.new_event_loop()
    try:
        loop.set_default_executor(_NoThreads())  # every call on the loop: no worker thread

        def call_async(name: str, *args: Any) -> Any:
            pending = getattr(store, name)(*args)
            assert inspect.iscoroutine(pending), f"{name} returned {pending!r}, not a coroutine"
            value = loop.run_until_complete(pending)
            assert not inspect.isawaitable(value), f"{name} gave an awaitable as its value"
            async_answers.append((name, value))
            return value

        script(call_async, FakeClock())
        loop.run_until_complete(store.aclose())
    finally:
        loop.close()
        backend.close()

    assert {name for name, _ in async_answers} == protocol_methods()
    assert len(async_answers) == len(blocking_answers)
    for (name, mine), (_, theirs) in zip(async_answers, blocking_answers, strict=True):
        if name == "store_time":  # the server's own clock, no fake one: read twice, moments apart
            assert isinstance(mine, float) and abs(mine - theirs) < 60, (mine, theirs)
            continue
        assert mine == theirs, name
