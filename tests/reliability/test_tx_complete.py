"""Completion in the handler's transaction: exactly-once database effects under kills and freezes.

``agents.py txworker`` inserts one application row per job and completes the job in the same
transaction (``ctx.complete(conn=...)``). Crash-point sweep: it SIGKILLs itself on a job's first
attempt at the point the payload names (``TX_POINTS``: before the insert, after it, after the
completion was written and before COMMIT, after COMMIT); the test plays supervisord, restarting
dead workers until every job is COMPLETED, and runs one process that only rescues (every worker
dies at the first job it takes, before its own rescuer has run: that process stands for the live
workers of a deployment). Zombie: a worker is SIGSTOPped in the middle of a job
(PostgreSQL: after its insert, its transaction open; SQLite: before it begins, since a process
frozen holding SQLite's write lock would stop every writer) until its lease has expired and
another worker has completed the job, then SIGCONTed: its completion is refused (``LeaseLost``)
before it commits, and its row rolls back with it. Checked: every job COMPLETED with exactly one
application row and one completion event.
"""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import pytest
from agents import TX_POINTS
from harness import Agents, Recorder, backend_name, percentile, scale
from polling import wait_for

import jobq
from jobq.testing.appconn import app_connections

pytestmark = pytest.mark.slow
WORKERS = 3


def _rows(backend_url: str) -> collections.Counter[int]:
    app = app_connections(backend_url)[0]
    try:
        return collections.Counter(int(r[0]) for r in app.execute("SELECT job_id FROM app_rows"))
    finally:
        app.close()


def test_tx_crash_point_sweep_completes_every_job_with_exactly_one_row(
    backend_url: str, tmp_path: Path, agents: Agents, record: Recorder
) -> None:
    per_point = scale(3, 40)
    crash_log = tmp_path / "crashes.log"
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url))
    try:
        app_connections(backend_url)[0].close()  # the application's table, before any worker
        point_of = {
            q.enqueue({"crash": point, "i": i}, queue="default"): point for point in TX_POINTS for i in range(per_point)
        }
        args = ("--db", backend_url, "--crash-log", str(crash_log), "--lease", "1.5", "--out", str(tmp_path))
        # Every worker dies at the first job it takes, before its rescuer runs: this process
        # stands for the live workers of a real deployment, so "kill to reclaim" means something.
        agents.start("rescuer", *args)
        slots = [agents.start("txworker", *args) for _ in range(WORKERS)]
        restarts = 0
        deadline = time.monotonic() + 60 + 3 * len(point_of)
        while True:
            counts = q.counts()
            if counts["COMPLETED"] == len(point_of):
                break
            assert counts["FAILED"] == counts["CANCELLED"] == 0, (counts, agents.logs())
            assert time.monotonic() < deadline, f"jobs not finished: {counts}\n{agents.logs()}"
            for i, proc in enumerate(slots):
                code = proc.poll()
                if code is not None:
                    assert code == -signal.SIGKILL, f"a worker exited with {code}, not a planned kill\n{agents.logs()}"
                    slots[i] = agents.start("txworker", *args)
                    restarts += 1
            time.sleep(0.05)  # supervisord's pace of restarts, not a wait for an outcome

        crashes: dict[int, float] = {}
        for line in crash_log.read_text().splitlines():
            job_id, point, at, _pid = line.split()
            assert int(job_id) not in crashes, f"job {job_id} was killed twice: only its first attempt should be"
            crashes[int(job_id)] = float(at)
        rows = _rows(backend_url)
        table: dict[str, collections.Counter[str]] = {p: collections.Counter() for p in TX_POINTS}
        reclaim: dict[str, list[float]] = {p: [] for p in TX_POINTS}
        for job_id, point in point_of.items():
            job, events = q.get(job_id), q.events(job_id)
            row = table[point]
            row["jobs"] += 1
            row["crashed"] += job_id in crashes
            row["lost"] += job.status != jobq.JobStatus.COMPLETED or rows[job_id] == 0
            completions = sum(1 for e in events if e.kind == jobq.EventKind.COMPLETED)
            row["duplicated"] += max(0, rows[job_id] - 1) + max(0, completions - 1)
            row["redelivered"] += job.attempts - 1
            row["stale_writes"] += sum(1 for e in events if e.kind == jobq.EventKind.STALE_WRITE_REFUSED)
            # The row that committed is the one of the attempt that completed the job (same process).
            if isinstance(job.result, dict) and rows[job_id]:
                row["row_from_other_attempt"] += _notes(backend_url, job_id) != [(str(job.result.get("pid")),)]
            if job_id in crashes:
                rescues = [e.at for e in events if e.kind == jobq.EventKind.RESCUED and e.at > crashes[job_id]]
                if rescues:
                    reclaim[point].append(min(rescues) - crashes[job_id])
        integrity = q.backend.integrity_check() if hasattr(q.backend, "integrity_check") else None
    finally:
        q.close()

    print(f"\ntransactional completion, crash points on {backend_name(backend_url)}: {len(point_of)} jobs")
    for point in TX_POINTS:
        row = table[point]
        p50, p99 = percentile(reclaim[point], 50), percentile(reclaim[point], 99)
        print(f"{point:<16} {dict(row)} reclaim p50 {p50} p99 {p99}")
        record(
            f"completion in the handler's transaction, kill: {point}",
            backend=backend_name(backend_url),
            jobs=row["jobs"],
            faults=row["crashed"],
            lost=row["lost"],
            duplicated=row["duplicated"],
            redelivered=row["redelivered"],
            reclaim_p50=p50,
            reclaim_p99=p99,
            integrity=integrity,
            restarts=restarts,
            stale_writes=row["stale_writes"],
        )
    for point in TX_POINTS:
        row = table[point]
        # A first attempt that lost its lease before its point (a worker starved of CPU for a whole
        # lease) is never killed: rare, harmless, and why this is not "== jobs".
        assert row["crashed"] >= max(1, row["jobs"] // 2), (point, dict(row))
        assert row["lost"] == 0 and row["duplicated"] == 0 and row["row_from_other_attempt"] == 0, (point, dict(row))
    # Killed after COMMIT: the job was done, nothing ran again.
    assert table["after_commit"]["redelivered"] == 0, dict(table["after_commit"])
    assert integrity in (None, "ok")


def _notes(backend_url: str, job_id: int) -> list[tuple[str]]:
    app = app_connections(backend_url)[0]
    try:
        return [(str(r[0]),) for r in app.execute("SELECT note FROM app_rows WHERE job_id = ?", (job_id,))]
    finally:
        app.close()


@pytest.mark.parametrize("handler", ["sync", "async"])
def test_a_zombie_cannot_complete_in_its_transaction_after_losing_the_lease(
    backend_url: str, tmp_path: Path, agents: Agents, record: Recorder, handler: str
) -> None:
    postgres = backend_name(backend_url) == "postgres"
    pause = "after_insert" if postgres else "before_begin"
    rounds = scale(1, 5)
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url))
    refusals = 0
    try:
        app_connections(backend_url)[0].close()
        args = ("--db", backend_url, "--lease", "1.5", "--out", str(tmp_path))
        args += ("--async",) if handler == "async" else ()
        for n in range(rounds):
            (tmp_path / "paused").unlink(missing_ok=True)
            (tmp_path / "go").unlink(missing_ok=True)
            job_id = q.enqueue({"pause": pause, "round": n})
            zombie = agents.start("txworker", *args)
            paused = wait_for(lambda: (tmp_path / "paused").exists() and (tmp_path / "paused").read_text(), 60, "pause")
            assert paused.split()[0] == str(job_id)
            zombie.send_signal(signal.SIGSTOP)
            rescuer = agents.start("txworker", *args)
            try:
                wait_for(lambda job_id=job_id: q.get(job_id).status == jobq.JobStatus.COMPLETED, 60, "the rescue")
                (tmp_path / "go").write_text("")
                zombie.send_signal(signal.SIGCONT)
                # The zombie learns it lost the job (its heartbeat's or its complete's refusal) and
                # its handler's transaction rolls back.
                log = tmp_path / f"agent-{agents.started.index(zombie)}-txworker.log"
                wait_for(lambda log=log: "lease lost" in log.read_text(), 30, "the zombie's refusal")
            finally:
                for proc in (zombie, rescuer):
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
                    proc.wait(30)
            assert "Traceback" not in log.read_text() and "could not record" not in log.read_text()
            job = q.get(job_id)
            rows = _notes(backend_url, job_id)
            assert job.status == jobq.JobStatus.COMPLETED and job.attempts == 2
            assert rows == [(str(job.result["pid"]),)], rows  # the rescuer's row alone
            assert rows[0][0] == str(rescuer.pid)
            assert sum(1 for e in q.events(job_id) if e.kind == jobq.EventKind.COMPLETED) == 1
            refusals += 1
    finally:
        q.close()
    record(
        "completion in the handler's transaction: zombie (SIGSTOP past the lease, SIGCONT)"
        + (" (async handler)" if handler == "async" else ""),
        backend=backend_name(backend_url),
        jobs=rounds,
        faults=rounds,
        lost=0,
        duplicated=0,
        redelivered=rounds,
        refused=refusals,
        paused_at=pause,
    )
