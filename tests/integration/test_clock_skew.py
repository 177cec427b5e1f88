"""Hosts whose clocks disagree, on one PostgreSQL queue: real worker processes whose wall clock
(``time.time()``, what jobq reads) runs a minute ahead of the server's or a minute behind it
(``JOBQ_TEST_CLOCK_SKEW`` in procs.py), next to one whose clock is right.

A lease is written by the claiming host and judged by every other host's rescuer. Judged by clocks
a minute apart, a 3 s lease is long expired (the fast host rescues a job that is running fine
elsewhere) or written already expired (the slow host's own jobs are rescued from it at once),
and the job runs twice. With the default clock, each process reads the server's time instead
(``Queue.clock_offset``), so the leases hold wherever they were written and judged.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from polling import wait_for
from processes import Procs, effects

import jobq
from jobq import JobStatus

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE = "3"
SKEW = 60.0
WATCH_LEASES = 4
"""How many leases the skewed hosts' rescuers watch the others' running jobs."""


def _skewed(seconds: float) -> dict[str, str]:
    return {"JOBQ_TEST_CLOCK_SKEW": repr(seconds)}


def test_hosts_a_minute_apart_keep_each_others_leases(postgres_url: str, procs: Procs, tmp_path: Path) -> None:
    common = ("--db", postgres_url, "--lease", LEASE, "--rescue-interval", "0.2")
    with jobq.Queue(postgres_url) as q:
        assert q.clock_offset == 0.0  # this process's clock is the server's (one machine)
        # A worker on a host whose clock is right runs a job until the test releases it.
        right_job = q.enqueue({}, task="gated")
        procs.start("worker", *common)
        right = wait_for(lambda: (j := q.get(right_job)).status == JobStatus.PROCESSING and j, 120, "the claim")
        # A program on the low-level API, on a host a minute behind, claims another job and
        # heartbeats it every lease / 3 (the right host's rescuer judges that lease).
        slow_job = q.enqueue({}, task="gated")
        procs.start("hold", *common, env=_skewed(-SKEW))
        wait_for(lambda: (tmp_path / f"held-{slow_job}").exists(), 120, "the slow host to claim its job")
        slow = q.get(slow_job)
        # A worker on a host a minute ahead: nothing to run, its rescuer looks every 0.2 s.
        procs.start("worker", *common, env=_skewed(SKEW))
        wait_for(lambda: len(q.workers()) == 2, 120, "the fast host's worker to register")
        (fast,) = [w for w in q.workers() if w.id != right.lease_owner]

        # The registry's times are the server's too: a minute off, the fast worker's row would
        # say it started a minute from now.
        assert abs(fast.started_at - q.clock()) < 30

        def watched() -> bool:
            row = next(w for w in q.workers() if w.id == fast.id)
            return row.last_seen_at - row.started_at >= WATCH_LEASES * float(LEASE)

        wait_for(watched, 120, f"the fast host to run for {WATCH_LEASES} leases")
        for job, before in ((right_job, right), (slow_job, slow)):
            now = q.get(job)
            assert (now.status, now.lease_owner, now.lease_token) == (
                JobStatus.PROCESSING,
                before.lease_owner,
                before.lease_token,
            ), f"job {job} was taken from its host: {[(e.kind, e.actor) for e in q.events(job)]}"
            assert "rescued" not in [e.kind for e in q.events(job)]
            # Its lease runs from the server's now, whoever wrote it: within a lease and a beat.
            assert now.lease_expires_at is not None and abs(now.lease_expires_at - q.clock()) <= 2 * float(LEASE)
        # `jobq workers` on the fast host (a minute ahead) lists both workers alive: it reads
        # their registry times against the server's time too, not against its own clock.
        for skew in (SKEW, -SKEW):
            listed = json.loads(_skewed_cli(skew, "workers", "--db", postgres_url, "--json"))
            assert sorted((w["id"], w["state"]) for w in listed) == sorted((w.id, "alive") for w in q.workers()), (
                f"jobq workers on a host {skew:+.0f} s off: {listed}"
            )
        # Each worker's host clock against the server's is in the registry: which host NTP
        # does not keep shows in `jobq workers` (CLOCK, and clock_skew in its JSON).
        listed = json.loads(_skewed_cli(0.0, "workers", "--db", postgres_url, "--json"))
        skews = {w["id"]: w["clock_skew"] for w in listed}
        assert skews[fast.id] == pytest.approx(SKEW, abs=1.0) and abs(skews[right.lease_owner]) < 1.0, skews
        assert "+60.0 s" in _skewed_cli(0.0, "workers", "--db", postgres_url)
        assert _exported_skews(q)[fast.id] == pytest.approx(SKEW, abs=1.0)  # jobq metrics' gauge
        # `jobq list --created-within 30s` there counts back from the server's now too.
        fresh = q.enqueue({}, task="count")
        listed = json.loads(_skewed_cli(SKEW, "list", "--db", postgres_url, "--created-within", "30s", "--json"))
        assert fresh in [j["id"] for j in listed], listed
        # Each skewed process measured its offset at open and says so.
        logs = procs.logs()
        assert "clock is 60.0 s ahead of the database server's" in logs
        assert "clock is 60.0 s behind the database server's" in logs

        # Both jobs finish once, where they were claimed.
        (tmp_path / f"release-{right_job}").write_text("")
        (tmp_path / f"go-{slow_job}").write_text("")
        wait_for(lambda: (tmp_path / f"outcome-{slow_job}").exists(), 120, "the slow host's completion")
        assert (tmp_path / f"outcome-{slow_job}").read_text() == "heartbeat:ok complete:ok"
        wait_for(lambda: q.get(right_job).status == JobStatus.COMPLETED, 120, "the right host's completion")
        wait_for(lambda: q.get(fresh).status == JobStatus.COMPLETED, 120, "the fresh job")
        assert sorted(effects(tmp_path)) == sorted([right_job, fresh])
        for job in (right_job, slow_job):
            done = q.get(job)
            assert done.attempts == 1 and done.status == JobStatus.COMPLETED
            assert done.finished_at is not None and abs(done.finished_at - time.time()) < 30
    print(
        f"\nclocks {SKEW:.0f} s ahead and behind the server's, lease {LEASE} s, watched for "
        f"{WATCH_LEASES} leases: 0 rescues, each job run once ({json.dumps([right_job, slow_job])})"
    )


def _exported_skews(q: jobq.Queue) -> dict[str, float]:
    """``jobq_worker_clock_skew_seconds`` by worker id, as ``jobq metrics`` serves it."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from jobq.observability.metrics import JobqCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobqCollector(q))
    return {
        s.labels["worker"]: s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        if family.name == "jobq_worker_clock_skew_seconds"
        for s in family.samples
    }


def _skewed_cli(skew: float, *args: str) -> str:
    """``jobq ARGS`` run on a host whose wall clock is ``skew`` seconds off (as procs.py skews it)."""
    program = (
        "import sys, time; skew = float(sys.argv.pop(1)); host = time.time; "
        "time.time = lambda: host() + skew; from jobq.cli import main; sys.exit(main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, repr(skew), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_worker_whose_clock_steps_back_measures_it_again_at_once(
    postgres_url: str, procs: Procs, tmp_path: Path
) -> None:
    """A host's clock set back two minutes while its worker runs a job (a VM resumed from a
    snapshot, NTP stepping a large offset): the worker's next heartbeat would write a lease two
    minutes expired by the other host's clock, which rescues the job at once. The worker notices
    the step (its wall clock moved against its monotonic one) and measures again before it beats."""
    skew = tmp_path / "skew"
    skew.write_text("0")
    common = ("--db", postgres_url, "--lease", LEASE, "--rescue-interval", "0.2")
    with jobq.Queue(postgres_url) as q:
        job = q.enqueue({}, task="gated")
        procs.start("worker", *common, env={"JOBQ_TEST_CLOCK_SKEW_FILE": str(skew)})
        held = wait_for(lambda: (j := q.get(job)).status == JobStatus.PROCESSING and j, 120, "the claim")
        procs.start("worker", *common)  # a host whose clock is right, rescuing every 0.2 s
        wait_for(lambda: len(q.workers()) == 2, 120, "the other worker to register")
        (other,) = [w.id for w in q.workers() if w.id != held.lease_owner]

        stepped_at = q.clock()
        tmp = skew.with_name("skew.tmp")
        tmp.write_text(repr(-2 * SKEW))
        tmp.replace(skew)

        def watched() -> bool:
            row = next(w for w in q.workers() if w.id == other)
            return row.last_seen_at - stepped_at >= WATCH_LEASES * float(LEASE)

        wait_for(watched, 120, f"the other host to run for {WATCH_LEASES} leases after the step")
        now = q.get(job)
        assert (now.status, now.lease_token) == (JobStatus.PROCESSING, held.lease_token), [
            (e.kind, e.actor) for e in q.events(job)
        ]
        assert now.lease_expires_at is not None and now.lease_expires_at > q.clock()
        assert "this host's clock stepped" in procs.logs()
        assert "clock is 120.0 s behind the database server's" in procs.logs()
        assert "marked lost" not in procs.logs()  # its registry beats kept the server's time too
        (tmp_path / f"release-{job}").write_text("")
        wait_for(lambda: q.get(job).status == JobStatus.COMPLETED, 120, "the completion")
        assert effects(tmp_path) == [job] and q.get(job).attempts == 1


def test_a_lost_reply_to_the_clock_read_leaves_the_call_going_and_the_clock_right(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This host's clock steps back two minutes, and the reply to the measurement that the step
    makes due is lost on the network (FaultProxy cuts the connection once the server answered).
    A read is safe to repeat: the store reads again on a fresh connection, so the claim that
    measured goes on, on the corrected clock, and stamps its lease by the server's time, not two
    minutes off. (Were the read to fail for good, the call would still go on and the clock be
    measured again ``CLOCK_RETRY_SECONDS`` later: tests/unit/test_clock.py.)"""
    from faultproxy import proxied

    host_time = time.time
    skew = [0.0]
    monkeypatch.setattr(time, "time", lambda: host_time() + skew[0])
    with proxied(postgres_url) as (url, proxy), jobq.Queue(url) as q:
        assert q.clock_offset == 0.0
        jobs = q.enqueue_many([{"n": n} for n in range(3)])
        skew[0] = -2 * SKEW
        proxy.lose_next_commit_reply(after=b"clock_timestamp")
        first = q.claim("w", lease=30)  # the step makes a measurement due: its reply is lost
        assert proxy.lost_replies == 1
        assert q.clock_offset == pytest.approx(2 * SKEW, abs=1.0)
        # On the stepped clock the jobs, made by the server's time, were not due for two minutes.
        claimed = [j for j in [first, *q.claim_many("w", 3, lease=30)] if j is not None]
        assert sorted(j.id for j in claimed) == jobs
        for job in claimed:
            # Stamped by the server's time: started now, leased for 30 s from now.
            assert job.started_at is not None and abs(job.started_at - host_time()) < 5
            assert job.lease_expires_at is not None and abs(job.lease_expires_at - host_time() - 30) < 5


def test_a_process_that_never_claims_keeps_its_clock_right_after_a_step(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long-lived processes that never claim (the manager app, ``jobq metrics``) on a host whose
    clock steps two minutes ahead after they opened the queue: their operator actions and the
    reads that judge times measure the clock again first, as lease calls do. Before, such a
    process kept the offset of its start: a job resubmitted there waited two minutes before any
    worker could take it, and a job delayed by a minute was counted due."""
    host_time = time.time
    skew = [0.0]
    monkeypatch.setattr(time, "time", lambda: host_time() + skew[0])
    with jobq.Queue(postgres_url) as app, jobq.Queue(postgres_url) as exporter:
        assert app.clock_offset == exporter.clock_offset == 0.0
        delayed = app.enqueue({}, queue="ops", delay=60)
        cancelled = app.enqueue({}, queue="ops-cancelled")
        app.cancel(cancelled)
        skew[0] = 2 * SKEW  # the step; neither process claims anything
        app.resubmit(cancelled)  # due now by the server's time
        assert app.clock_offset == pytest.approx(-2 * SKEW, abs=1.0)
        assert abs(app.get(cancelled).run_at - host_time()) < 5
        gauges = exporter.queue_gauges()["ops"]
        assert exporter.clock_offset == pytest.approx(-2 * SKEW, abs=1.0)
        assert (gauges.pending_due, gauges.pending_scheduled) == (0, 1), gauges  # due in a minute, not now
        assert app.get(delayed).status == JobStatus.PENDING

    async def natively() -> None:  # AsyncQueue's own PostgreSQL calls, the same rule
        skew[0] = 0.0
        async with jobq.AsyncQueue(postgres_url) as aq:
            assert aq.native and aq.sync.clock_offset == 0.0
            job = await aq.enqueue({}, queue="ops-async")
            await aq.cancel(job)
            skew[0] = 2 * SKEW
            await aq.resubmit(job)
            assert aq.sync.clock_offset == pytest.approx(-2 * SKEW, abs=1.0)
            assert abs((await aq.get(job)).run_at - host_time()) < 5

    asyncio.run(natively())


def test_a_registry_beat_right_after_a_step_back_is_stamped_by_the_servers_clock(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's clock is set back two minutes between the worker's heartbeat and its registry
    beat (the window the heartbeat's own measurement leaves). The beat measures again first, as
    the heartbeat does: its row keeps the server's time, and no other host marks it lost (before:
    written two minutes behind, marked lost by the next rescue elsewhere)."""
    from jobq.backends.base import WorkerInfo

    with jobq.Queue(postgres_url) as q:
        now = q.wall_time()
        q.register_worker(WorkerInfo("w-step", "consumer1", "host", 1, ("default",), now, now))
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() - 2 * SKEW)  # the step, for this process
        assert q.worker_seen("w-step", [], 0, 0)
        (row,) = [w for w in q.workers() if w.id == "w-step"]
        assert abs(row.last_seen_at - q.backend.store_time()) < 5.0, row.last_seen_at - q.backend.store_time()
        assert q.mark_lost_workers(q.backend.store_time() - 10.0) == []
