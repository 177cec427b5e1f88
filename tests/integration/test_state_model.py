"""Random sequences of every call that moves a job, checked step by step against a model of the
state machine (``jobq.job.TRANSITIONS``), on both backends.

The promise under test is fencing: a Job handed out by a claim acts on its job only while its lease
is the job's current one. Handles are kept for good, so calls come from stale ones after a
rescue, a resubmit, a give-back or another claim, mixed with operators' cancels and resubmits,
failures with and without retry, heartbeats, the clock moving past leases, delayed jobs, purges
(a purged job's handles stay, stale for good), and the queue paused, resumed and limited in
concurrency (each claim takes what the controls let it). After every step each
job's status, attempts and run must be what the model says, and each call's answer too."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import jobq
from jobq import JobStatus
from jobq.testing import FakeClock

LEASE = 30.0
QUEUE_SETTINGS = jobq.Settings(lease_seconds=LEASE, backoff_base_seconds=1.0, backoff_cap_seconds=4.0)
P, R, C, F, X = (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclasses.dataclass
class Modeled:
    status: JobStatus = P
    attempts: int = 0
    max_attempts: int = 1
    run: int = 1
    token: str | None = None
    expires: float = 0.0
    cancel_asked: bool = False


class _OnLoop:
    """An ``AsyncQueue`` whose calls block, each run on an event loop of its own: the model
    drives the asyncio facade (on PostgreSQL its native store) as it drives ``Queue``. What the
    asyncio facade lacks (a worker's batched give-backs and failures, the rescuer) goes to its
    blocking ``Queue`` on the same store."""

    def __init__(self, url: str, clock: FakeClock) -> None:
        self.loop = asyncio.new_event_loop()
        self.aq = jobq.AsyncQueue(url, settings=QUEUE_SETTINGS, clock=clock)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.aq, name, None)
        if method is None or not inspect.iscoroutinefunction(method):
            return getattr(self.aq.sync, name)
        return lambda *args, **kwargs: self.loop.run_until_complete(method(*args, **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.aq.aclose())
        self.loop.close()


class JobMachine(RuleBasedStateMachine):
    url_for: Callable[[], str]
    asyncio_facade = False

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        url = self.url_for()
        self.q: Any = (
            _OnLoop(url, self.clock)
            if self.asyncio_facade
            else jobq.Queue(url, settings=QUEUE_SETTINGS, clock=self.clock)
        )
        self.name = f"m{uuid.uuid4().hex[:12]}"
        self.jobs: dict[int, Modeled] = {}
        self.handles: list[jobq.Job] = []
        self.paused = False
        self.concurrency: int | None = None

    def teardown(self) -> None:
        self.q.close()

    # -- what the model says -------------------------------------------------------------------
    def _current(self, handle: jobq.Job) -> bool:
        m = self.jobs.get(handle.id)  # None: purged
        return m is not None and m.status == R and m.token == handle.lease_token

    def _due(self) -> list[int]:
        return [i for i, m in self.jobs.items() if m.status == P and self.q.get(i).run_at <= self.clock.now]

    def _claimable(self) -> int:
        """How many jobs a claim may take now, by the queue's controls (None: any number)."""
        if self.paused:
            return 0
        if self.concurrency is None:
            return 1_000_000
        return max(0, self.concurrency - sum(m.status == R for m in self.jobs.values()))

    def _finish_asked(self, m: Modeled) -> None:
        """A cancel was asked while it ran: a failure to retry or a give-back ends it CANCELLED."""
        self._leave(m, X)

    @staticmethod
    def _leave(m: Modeled, status: JobStatus) -> None:
        """The job leaves PROCESSING: its lease and any cancel asked of that run are over."""
        m.status, m.token, m.cancel_asked = status, None, False

    # -- rules ------------------------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        self.jobs[self.q.enqueue({"first": True}, queue=self.name, max_attempts=2)] = Modeled(max_attempts=2)

    @rule(attempts=st.integers(1, 3))
    def enqueue(self, attempts: int) -> None:
        job_id = self.q.enqueue({"n": len(self.jobs)}, queue=self.name, max_attempts=attempts)
        assert job_id not in self.jobs
        self.jobs[job_id] = Modeled(max_attempts=attempts)

    @rule()
    def claim(self) -> None:
        due = self._due()
        before = {i: self.q.get(i).run_at for i in due}
        self._claimable_before = self._claimable()
        job = self.q.claim("w", queue=self.name)
        self._took([] if job is None else [job], 1, due, before)

    def _took(self, jobs: list[jobq.Job], limit: int, due: list[int], before: dict[int, float]) -> None:
        """A claim of up to ``limit`` jobs took the first due ones, in claim order, as many as the
        queue's controls let it (read before the claim: ``_took`` is called after it)."""
        allowed = self._claimable_before
        expected = sorted(due, key=lambda i: (before[i], i))[: min(limit, allowed)]
        assert [j.id for j in jobs] == expected, ([j.id for j in jobs], expected)
        for job in jobs:
            m = self.jobs[job.id]
            m.status, m.token, m.attempts, m.expires = R, job.lease_token, m.attempts + 1, self.clock.now + LEASE
            assert job.attempts == m.attempts and job.run == m.run
            self.handles.append(job)

    def _completed(self, handles: list[jobq.Job], done: list[bool]) -> None:
        """Each of a group completion's answers: True exactly for the current leases."""
        expected = [self._current(h) for h in handles]
        assert done == expected, (done, expected)
        for h, ok in zip(handles, done, strict=True):
            if ok:
                self._leave(self.jobs[h.id], C)

    def _handle(self, data: st.DataObject) -> jobq.Job:
        """A handle, drawn most often where fencing is tested hardest: a stale one of a job that
        runs again under another lease, or the current one of a running job."""
        running = [h for h in self.handles if h.id in self.jobs and self.jobs[h.id].status == R]
        kinds = {
            "stale, its job running again": [h for h in running if not self._current(h)],
            "current": [h for h in running if self._current(h)],
            "any": self.handles,
        }
        kind = data.draw(st.sampled_from([k for k, v in kinds.items() if v]))
        return data.draw(st.sampled_from(kinds[kind]))

    def _some_handles(self, data: st.DataObject) -> list[jobq.Job]:
        """Up to four handles, at most one per job (a batch names each job once)."""
        picked = [self._handle(data) for _ in range(data.draw(st.integers(0, 4)))]
        return list({h.id: h for h in picked}.values())

    @rule(limit=st.integers(1, 3))
    def claim_many(self, limit: int) -> None:
        due = self._due()
        before = {i: self.q.get(i).run_at for i in due}
        self._claimable_before = self._claimable()
        self._took(self.q.claim_many("w", limit, queue=self.name), limit, due, before)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def complete_many(self, data: st.DataObject) -> None:
        handles = self._some_handles(data)
        self._completed(handles, self.q.complete_many([(h, None) for h in handles]))

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), limit=st.integers(0, 2))
    def complete_many_and_claim(self, data: st.DataObject, limit: int) -> None:
        """A worker's flush: its completions and its next claim in one transaction (the claim
        sees the jobs the completions finished as finished)."""
        handles = self._some_handles(data)
        due = self._due()  # completions make nothing due
        before = {i: self.q.get(i).run_at for i in due}
        done, claimed = self.q.complete_many_and_claim([(h, None) for h in handles], "w", limit, queue=self.name)
        self._completed(handles, done)
        self._claimable_before = self._claimable()  # the claim comes after the completions
        self._took(claimed, limit, due, before)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def heartbeat_many(self, data: st.DataObject) -> None:
        handles = self._some_handles(data)
        results = self.q.heartbeat_many(handles)
        for h, r in zip(handles, results, strict=True):
            current = self._current(h)
            assert (r.job_id, r.alive) == (h.id, current), (r, h.id, current)
            if current:
                m = self.jobs[h.id]
                assert r.cancel_requested is m.cancel_asked
                m.expires = self.clock.now + LEASE

    def _failed(self, h: jobq.Job, retry: bool) -> JobStatus:
        """What a failure leaves its job in, the model moved there (a current lease's)."""
        m = self.jobs[h.id]
        if not (retry and m.attempts < m.max_attempts):
            self._leave(m, F)  # a final failure is a failure, cancel asked or not
        elif m.cancel_asked:
            self._finish_asked(m)  # never run again
        else:
            self._leave(m, P)
        return m.status

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def fail_many(self, data: st.DataObject) -> None:
        handles = self._some_handles(data)
        retries = [data.draw(st.booleans()) for _ in handles]
        delays = [data.draw(st.sampled_from([None, 0.0, 2.0])) for _ in handles]
        current = [self._current(h) for h in handles]
        answers = self.q.fail_many([(h, "boom", r) for h, r in zip(handles, retries, strict=True)], delays=delays)
        for h, retry, delay, now_current, (status, applied) in zip(
            handles, retries, delays, current, answers, strict=True
        ):
            assert applied is now_current, (h.id, applied, now_current)
            if applied:
                assert status == self._failed(h, retry)
                if status == P:
                    run_at = self.q.get(h.id).run_at
                    assert run_at == self.clock.now + delay if delay is not None else run_at > self.clock.now

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def ack_cancel(self, data: st.DataObject) -> None:
        h = self._handle(data)
        acked = self._current(h) and self.jobs[h.id].cancel_asked
        assert self.q.ack_cancel(h) is acked
        if acked:
            self._finish_asked(self.jobs[h.id])

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def release_many(self, data: st.DataObject) -> None:
        handles = self._some_handles(data)
        expected = [self._current(h) for h in handles]
        assert self.q.release_many(handles, "given back") == expected
        for h, current in zip(handles, expected, strict=True):
            if current:
                self._given_back(h)

    def _given_back(self, h: jobq.Job) -> None:
        """A current lease's job given back: waiting again, the attempt not counted (CANCELLED
        if a cancel was asked)."""
        m = self.jobs[h.id]
        if m.cancel_asked:
            self._finish_asked(m)
        else:
            self._leave(m, P)
            m.attempts -= 1

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        h = self._handle(data)
        if self._current(h):
            self.q.complete(h, result={"ok": True})
            self._leave(self.jobs[h.id], C)
        else:
            with pytest.raises(jobq.LeaseLost):
                self.q.complete(h)

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), retry=st.booleans())
    def fail(self, data: st.DataObject, retry: bool) -> None:
        h = self._handle(data)
        if not self._current(h):
            with pytest.raises(jobq.LeaseLost):
                self.q.fail(h, "boom", retry=retry)
            return
        status = self.q.fail(h, "boom", retry=retry)
        assert status == self._failed(h, retry)
        if status == P:
            assert self.q.get(h.id).run_at > self.clock.now, "a retry is delayed by its backoff"

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        h = self._handle(data)
        current = self._current(h)
        assert self.q.release(h, "given back") is current
        if current:
            self._given_back(h)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        h = self._handle(data)
        if self._current(h):
            m = self.jobs[h.id]
            assert self.q.heartbeat(h) is m.cancel_asked
            m.expires = self.clock.now + LEASE
        else:
            with pytest.raises(jobq.LeaseLost):
                self.q.heartbeat(h)

    def _operator(self, data: st.DataObject, verb: str, legal: set[JobStatus]) -> tuple[Modeled, JobStatus] | None:
        """An operator's ``verb`` on a job drawn: refused (InvalidTransition) unless the job is in
        a ``legal`` status; else the job's model and the status the action reports."""
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        m, act = self.jobs[job_id], getattr(self.q, verb)
        if m.status not in legal:
            with pytest.raises(jobq.InvalidTransition):
                act(job_id, actor="ops")
            return None
        result = act(job_id, actor="ops")
        assert result.ok
        return m, result.status

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        done = self._operator(data, "cancel", {P, F, R})
        if done is not None:
            m, status = done
            if m.status == R:
                assert status == R  # asked to stop: the worker ends it
                m.cancel_asked = True
            else:
                assert status == X
                m.status = X

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def resubmit(self, data: st.DataObject) -> None:
        done = self._operator(data, "resubmit", {C, F, X})
        if done is not None:
            m, status = done
            assert status == P
            self._leave(m, P)
            m.attempts, m.run = 0, m.run + 1

    @rule(delay=st.sampled_from([3.0, LEASE * 2]))
    def enqueue_for_later(self, delay: float) -> None:
        job_id = self.q.enqueue({"later": delay}, queue=self.name, delay=delay, max_attempts=2)
        assert self.q.get(job_id).run_at == self.clock.now + delay
        self.jobs[job_id] = Modeled(max_attempts=2)

    @rule()
    def purge(self) -> None:
        """Finished jobs go (their handles stay, stale for good); on PostgreSQL other runs' too."""
        self.clock.advance(1.0)  # a purge takes jobs finished before its cutoff, not at it
        self.q.purge(older_than=0, statuses=[C, F, X])
        for job_id in [i for i, m in self.jobs.items() if m.status in (C, F, X)]:
            del self.jobs[job_id]
            with pytest.raises(jobq.JobNotFound):
                self.q.get(job_id)

    @rule(paused=st.booleans())
    def pause_or_resume(self, paused: bool) -> None:
        control = self.q.pause(self.name, actor="ops") if paused else self.q.resume(self.name, actor="ops")
        assert control.paused is paused
        self.paused = paused

    @rule(concurrency=st.sampled_from([None, 1, 2]))
    def limit_concurrency(self, concurrency: int | None) -> None:
        control = self.q.set_limits(self.name, concurrency=concurrency, actor="ops")
        assert control.concurrency == concurrency
        self.concurrency = concurrency

    @rule(seconds=st.sampled_from([1.0, 5.0, LEASE + 1]))
    def time_passes_and_the_rescuer_runs(self, seconds: float) -> None:
        self.clock.advance(seconds)
        rescued = {r.job_id: r.outcome for r in self.q.rescue_expired() if r.job_id in self.jobs}
        expected = {}
        for job_id, m in self.jobs.items():
            if m.status == R and m.expires < self.clock.now:
                if m.cancel_asked:
                    expected[job_id], status = "cancelled", X
                elif m.attempts < m.max_attempts:
                    expected[job_id], status = "rescued", P
                else:
                    expected[job_id], status = "expired", F
                self._leave(m, status)
        assert rescued == expected

    # -- after every step -------------------------------------------------------------------------
    @invariant()
    def each_job_is_as_modeled(self) -> None:
        for job_id, m in self.jobs.items():
            job = self.q.get(job_id)
            seen = (job.status, job.attempts, job.run, job.cancel_requested and job.status == R)
            assert seen == (m.status, m.attempts, m.run, m.cancel_asked and m.status == R), (job_id, seen, m)
            if m.status == R:
                assert job.lease_token == m.token


def _run(url_for: Callable[[], str], examples: int, *, asyncio_facade: bool = False) -> None:
    machine: Any = type("Machine", (JobMachine,), {"url_for": staticmethod(url_for), "asyncio_facade": asyncio_facade})
    machine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    machine.TestCase().runTest()


def test_fencing_and_transitions_hold_in_any_order_sqlite() -> None:
    with tempfile.TemporaryDirectory() as where:

        def url() -> str:
            return f"sqlite:///{where}/{uuid.uuid4().hex}.db"

        _run(url, examples=int(os.environ.get("JOBQ_MODEL_EXAMPLES", "100")))


def test_fencing_and_transitions_hold_in_any_order_postgres(postgres_url: str) -> None:
    _run(lambda: postgres_url, examples=int(os.environ.get("JOBQ_MODEL_EXAMPLES", "40")))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_fencing_and_transitions_hold_in_any_order_through_asyncqueue(
    backend: str, request: pytest.FixtureRequest
) -> None:
    examples = int(os.environ.get("JOBQ_MODEL_EXAMPLES", "30"))
    if backend == "postgres":
        url = str(request.getfixturevalue("postgres_url"))
        _run(lambda: url, examples, asyncio_facade=True)
        return
    with tempfile.TemporaryDirectory() as where:
        _run(lambda: f"sqlite:///{where}/{uuid.uuid4().hex}.db", examples, asyncio_facade=True)
