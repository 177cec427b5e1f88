"""Periodic jobs for real: a 1-second schedule declared in code, run by three worker processes."""

from __future__ import annotations

import collections
from pathlib import Path

from polling import wait_for
from processes import Procs

import jobq
from jobq.schedules import SCHEDULE_KEY_PREFIX


def test_one_second_schedule_over_three_workers_runs_every_slot_once(
    backend_url: str, procs: Procs, tmp_path: Path
) -> None:
    workers = [procs.start("worker", "--db", backend_url, "--every", "1") for _ in range(3)]

    def ran() -> list[float]:
        return [float(s) for p in tmp_path.glob("*.slots") for s in p.read_text().split()]

    wait_for(lambda: len(set(ran())) >= 8, 120, "eight slots to run")
    for proc in workers:
        proc.terminate()
    for proc in workers:
        assert proc.wait(60) == 0
    runs = collections.Counter(ran())
    with jobq.Queue(backend_url) as q:
        jobs = q.list_jobs(None, jobq.Page(limit=10_000))
        [info] = q.schedules()
    slots = sorted(float(j.payload["slot"]) for j in jobs if (j.idempotency_key or "").startswith(SCHEDULE_KEY_PREFIX))
    # One job per slot, no slot left out between the first and the last, whichever worker took it.
    assert len(slots) == len(set(slots)) and slots == [slots[0] + i for i in range(len(slots))]
    assert set(runs.values()) == {1}  # each slot's handler ran once
    assert (info.name, info.every, info.origin) == ("tick", 1.0, "code")
    assert info.last_run_at == slots[-1]
