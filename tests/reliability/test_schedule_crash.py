"""kill -9 inside a schedule slot's transaction (the schedule's row moves off the slot and the
slot's job is inserted in one transaction, ``Queue.fire_schedule``): after a restart, exactly one
job for the slot, whatever the point of the kill (``agents.SCHEDULE_CRASH_POINTS``)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from agents import SCHEDULE_CRASH_POINTS
from harness import Agents, Recorder, backend_name, scale

import jobq
from jobq.schedules import schedule_of
from jobq.testing import FakeClock

pytestmark = pytest.mark.slow
HOUR = 3600.0


def _tick(agents: Agents, backend_url: str, crash_log: Path, point: str) -> subprocess.Popen[bytes]:
    """One scheduler tick in a process of its own, killed at ``point`` ("none": not killed)."""
    proc = agents.start("schedworker", "--db", backend_url, "--crash-log", str(crash_log), "--point", point)
    proc.wait(120)
    return proc


def test_a_kill_inside_a_slots_transaction_leaves_one_job_for_the_slot(
    backend_url: str, tmp_path: Path, agents: Agents, record: Recorder
) -> None:
    rounds = scale(1, 10)
    crash_log = tmp_path / "crashes.log"
    clock = FakeClock(time.time() - 2 * HOUR)  # schedules added now have their next slot in the past: due
    setup = jobq.Queue(settings=jobq.Settings(database_url=backend_url), clock=clock)
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url))
    try:
        for point in SCHEDULE_CRASH_POINTS:
            for n in range(rounds):
                name = f"{point}-{n}"
                task = jobq.JobFilter(tasks=(f"task-{name}",))
                stored = setup.add_schedule(name, task=f"task-{name}", every=HOUR)
                # The slot a tick takes now: the latest one due (catch-up "latest").
                [slot], _next = schedule_of(stored).due(stored.next_run_at, time.time())

                killed = _tick(agents, backend_url, crash_log, point)
                assert killed.returncode == -signal.SIGKILL, agents.logs()
                assert crash_log.read_text().splitlines()[-1].split()[0] == point
                [after_kill] = [s for s in q.schedules() if s.name == name]
                if point == "after_commit":  # (the latest slot, should an hour have begun meanwhile)
                    taken_slots = {slot, schedule_of(stored).due(stored.next_run_at, time.time())[0][0]}
                    assert len(q.list_jobs(task)) == 1 and after_kill.last_run_at in taken_slots
                else:  # rolled back as a whole: the row is still on its slot, and no job
                    assert q.list_jobs(task) == [] and after_kill.next_run_at == stored.next_run_at
                    assert after_kill.last_run_at is None and after_kill.last_job_id is None

                restarted = _tick(agents, backend_url, crash_log, "none")
                assert restarted.returncode == 0, agents.logs()
                [schedule] = [s for s in q.schedules() if s.name == name]
                [job] = q.list_jobs(task)  # exactly one job for the slot
                # The slot taken: the one due at the kill, or, if an hour began before the
                # restart, the newer one (catch-up "latest" runs only the latest missed slot).
                [latest], _next = schedule_of(stored).due(stored.next_run_at, time.time())
                assert job.payload in ({"schedule": name, "slot": slot}, {"schedule": name, "slot": latest})
                taken = job.payload["slot"]
                assert (schedule.last_run_at, schedule.last_job_id) == (taken, job.id)
                assert taken < schedule.next_run_at <= time.time() + HOUR
    finally:
        q.close()
        setup.close()
    for point in SCHEDULE_CRASH_POINTS:
        record(
            f"schedule slot: kill -9 {point.replace('_', ' ')}, then a restart",
            backend=backend_name(backend_url),
            jobs=rounds,
            faults=rounds,
            lost=0,
            duplicated=0,
            jobs_per_slot=1,
        )
