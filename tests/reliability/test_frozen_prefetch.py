"""A worker frozen (SIGSTOP) while it holds jobs it claimed ahead (the default worker's prefetch,
``jobq.worker.prefetch``): their leases expire, another worker rescues and completes them, and the
frozen worker, once continued (SIGCONT), cannot complete or give back any of them: each of its
late writes is refused and recorded. 0 jobs lost, 0 effects doubled. The metrics exporter, started
before the freeze, counts each rescue and each refused late write once (issue 17)."""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import apsw
import pytest
from children import stopped
from harness import Agents, Recorder, backend_name, scale
from pg import raw_connect
from polling import wait_for
from scraped import served, total

import jobq
from jobq.observability.metrics import JobqCollector

LEASE_SECONDS = 1.5
#: Every this many jobs one freezes its worker, until a freeze lands where the test wants it (the
#: worker's run-time estimate, which the freeze inflates, recovers in between).
FREEZE_EVERY = 40


def _in_transaction(url: str) -> bool:
    """Is a transaction open (only the frozen worker can have one)? A process frozen inside one
    stops every writer on SQLite (file locks have no timeout) until it continues, a known limit
    (docs/architecture.md), and hides its rows from rescuers on PostgreSQL (SKIP LOCKED) until the
    server ends its session (test_frozen_transaction.py): not what this test is about."""
    if url.startswith("sqlite:///"):
        conn = apsw.Connection(url.removeprefix("sqlite:///"))
        try:
            conn.execute("BEGIN IMMEDIATE")  # no busy timeout: fails at once if the lock is held
            conn.execute("ROLLBACK")
            return False
        except apsw.BusyError:
            return True
        finally:
            conn.close()
    with raw_connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
        ).fetchone()
        return bool(row and row[0])


def test_a_worker_frozen_with_jobs_claimed_ahead_loses_them_cleanly(
    backend_url: str, tmp_path: Path, agents: Agents, record: Recorder
) -> None:
    jobs = scale(400, 3000)
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url))
    try:
        ids = q.enqueue_many([{"n": n, "freeze": n % FREEZE_EVERY == FREEZE_EVERY // 2} for n in range(jobs)])
        prometheus = pytest.importorskip("prometheus_client")
        registry = prometheus.CollectorRegistry()
        registry.register(JobqCollector(q, settle_seconds=0.0))
        served(registry)  # the exporter's counters start here, before any fault
        args = ("--db", backend_url, "--lease", str(LEASE_SECONDS), "--out", str(tmp_path))
        frozen = agents.start("prefetchworker", *args, "--freeze")
        freezes, tries = tmp_path / "frozen", 0
        while True:
            tries += 1
            wait_for(lambda: frozen.poll() is None and stopped(frozen.pid), 60, "the worker to freeze itself")
            running = int(freezes.read_text().split()[-1])
            owner = q.get(running).lease_owner
            processing = q.list_jobs(jobq.JobFilter(statuses=(jobq.JobStatus.PROCESSING,)), jobq.Page(limit=1000))
            still = [j.id for j in processing if j.lease_owner == owner and j.id != running]
            if still and not _in_transaction(backend_url):
                break
            assert tries < jobs // FREEZE_EVERY, f"never frozen holding jobs claimed ahead\n{agents.logs()}"
            frozen.send_signal(signal.SIGCONT)
            wait_for(lambda: not stopped(frozen.pid), 10, "the worker to continue")
        (tmp_path / "frozen-done").write_text("")
        effects_file = tmp_path / "effects"
        before = effects_file.read_text().split() if effects_file.exists() else []
        assert owner is not None and not {str(i) for i in [running, *still]} & set(before[::2])  # none ran yet
        frozen_at = time.monotonic()

        rescuer = agents.start("prefetchworker", *args)
        wait_for(lambda: q.counts()["COMPLETED"] == jobs, 60 + jobs / 10, "every job completed")
        all_done = time.monotonic() - frozen_at
        for job_id in [running, *still]:
            job = q.get(job_id)
            assert job.attempts == 2 and job.lease_owner != owner, job  # rescued, run again elsewhere
            assert [e.kind for e in q.events(job_id)].count(jobq.EventKind.RESCUED) == 1

        frozen.send_signal(signal.SIGCONT)

        def refusals() -> dict[int, list[str]]:
            late: dict[int, list[str]] = collections.defaultdict(list)
            for job_id in [running, *still]:
                for e in q.events(job_id):
                    if e.kind == jobq.EventKind.STALE_WRITE_REFUSED and e.actor == owner:
                        late[job_id].append(e.detail["operation"])
            return late

        def refused() -> dict[int, list[str]]:
            late = refusals()
            return late if len(late) == 1 + len(still) else {}

        late = wait_for(refused, 30, f"the frozen worker's late writes to be refused\n{agents.logs()}")
        for proc in (frozen, rescuer):
            proc.terminate()
            proc.wait(30)
        # One refusal a job, through the shutdown too: a run known lost (its heartbeat refused)
        # is not given back as well, which was refused and recorded a second time; and the
        # running job's handler, which calls ensure_lease as it continues, at the moment the
        # heartbeater beats, waits for that beat rather than being refused beside it.
        late = refusals()
        assert all(len(ops) == 1 for ops in late.values()), late
        assert frozen.returncode == rescuer.returncode == 0, agents.logs()
        assert "Traceback" not in agents.logs(100_000)
        effects = collections.Counter(int(line.split()[0]) for line in effects_file.read_text().splitlines())
        lost = [i for i in ids if effects[i] == 0]
        doubled = [i for i in ids if effects[i] > 1]
        for i in doubled:  # what the failure needs to be understood
            print(f"doubled {i}:", [(e.kind, e.actor, e.attempt, e.detail, e.at) for e in q.events(i)])
        assert lost == [] and doubled == [], (lost, doubled)
        kinds: collections.Counter[jobq.EventKind] = collections.Counter()
        for job_id in ids:
            job = q.get(job_id)
            assert job.status == jobq.JobStatus.COMPLETED
            its = [e.kind for e in q.events(job_id)]
            assert its.count(jobq.EventKind.COMPLETED) == 1
            kinds.update(its)

        # What a scraper reads: each rescue and each refused late write once, as the events say.
        rescues = kinds[jobq.EventKind.RESCUED] + kinds[jobq.EventKind.EXPIRED]
        refused_writes = kinds[jobq.EventKind.STALE_WRITE_REFUSED]
        assert rescues == 1 + len(still) and refused_writes >= len(late)

        def counted() -> tuple[float, float, float]:
            scrape = served(registry)
            return (
                total(scrape, "jobq_rescues_total"),
                total(scrape, "jobq_lease_lost_total"),
                total(scrape, "jobq_completed_total"),
            )

        want = (rescues, refused_writes, jobs)
        wait_for(lambda: counted() == want, 30, f"the exporter to count {want}, not {counted()}")
        assert counted() == want  # a scrape more counts nothing twice
    finally:
        q.close()
    record(
        "worker frozen (SIGSTOP) holding jobs claimed ahead, then SIGCONT",
        backend=backend_name(backend_url),
        jobs=jobs,
        faults=1,
        lost=0,
        duplicated=0,
        redelivered=1 + len(still),
        held_ahead=len(still),
        refused=sum(len(v) for v in late.values()),
        refused_operations=",".join(sorted({op for ops in late.values() for op in ops})),
        freeze_to_all_done_s=round(all_done, 2),
        freezes_tried=tries,
    )
