"""Item 9: operators cancelling and resubmitting from two sessions while workers complete the jobs.

Two operator processes fire random cancel / resubmit calls at the jobs while two consumers (the
seed's stamp handler, short delays) work them. Afterwards:

- every job's event history replays as a legal path of the transition table (``jobq.job``): each
  accepted action happened from a state that allows it, each refused one left no trace;
- no double processing: at most one stamp per (job, run) in every file, and exactly one for a run
  that ended COMPLETED.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from harness import Agents, Recorder, backend_name, scale
from polling import wait_for

import jobq
from jobq.demo.files import FILE_TASK, new_job_file
from jobq.demo.stamps import stamps_in
from jobq.job import Event, EventKind, JobStatus

pytestmark = pytest.mark.slow
P, R, C, F, X = JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED
SIMPLE = {
    EventKind.CLAIMED: ({P}, R),
    EventKind.COMPLETED: ({R}, C),
    EventKind.RETRY_SCHEDULED: ({R}, P),
    EventKind.FAILED: ({R}, F),
    EventKind.RESCUED: ({R}, P),
    EventKind.EXPIRED: ({R}, F),
    EventKind.RELEASED: ({R}, P),
}


def replay(events: list[Event]) -> tuple[JobStatus | None, list[str]]:
    """Walk a job's history through the transition table; return (final status, illegal steps)."""
    state: JobStatus | None = None
    cancel_requested = False
    illegal: list[str] = []
    for e in events:
        kind = EventKind(e.kind)
        step = f"event {e.id} {kind.value} {e.detail} in {state}"
        if kind == EventKind.ENQUEUED:
            if state is not None:
                illegal.append(step)
            state = P
        elif kind in SIMPLE:
            sources, target = SIMPLE[kind]
            if state not in sources:
                illegal.append(step)
            state = target
            cancel_requested = False
        elif kind == EventKind.CANCEL_REQUESTED:
            if state != R:
                illegal.append(step)
            cancel_requested = True
        elif kind == EventKind.CANCELLED:
            if "from" in e.detail:  # an operator's cancel of a waiting or failed job
                if state not in jobq.TRANSITIONS[jobq.Action.CANCEL].sources or e.detail["from"] != state:
                    illegal.append(step)
            elif not (state == R and cancel_requested):  # the worker (or rescuer) acknowledging a request
                illegal.append(step)
            state = X
        elif kind == EventKind.RESUBMITTED:
            if state not in jobq.TRANSITIONS[jobq.Action.RESUBMIT].sources or e.detail.get("from") != state:
                illegal.append(step)
            state = P
        elif kind != EventKind.STALE_WRITE_REFUSED:
            illegal.append(step)
    return state, illegal


def test_cancel_and_resubmit_racing_with_completion(
    backend_url: str, tmp_path: Path, agents: Agents, record: Recorder
) -> None:
    n_jobs, seconds = scale(30, 200), scale(5, 30)
    data = tmp_path / "data"
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url, data_dir=str(data)))
    try:
        files: dict[int, Path] = {}
        for _ in range(n_jobs):
            path = new_job_file(data)
            files[q.enqueue({"path": str(path)}, task=FILE_TASK, key=path.name)] = path
        assert sorted(files) == list(range(1, n_jobs + 1)), "the operators pick ids 1..n"
        common = ("--db", backend_url, "--data-dir", str(data), "--lease", "3")
        for _ in range(2):
            agents.start("raceworker", *common, "--delay", "0.02-0.3")
        operators = [
            agents.start("operator", *common, "--out", str(tmp_path), "--count", str(n_jobs), "--seconds", str(seconds))
            for _ in range(2)
        ]
        for proc in operators:
            assert proc.wait(seconds + 120) == 0, agents.logs()

        def settled() -> bool:
            counts = q.counts()
            return counts["PENDING"] == 0 and counts["PROCESSING"] == 0

        wait_for(settled, 120, "the workers to finish what the operators left")

        tally: collections.Counter[str] = collections.Counter()
        errors: list[str] = []
        for path in tmp_path.glob("operator-*.json"):
            result = json.loads(path.read_text())
            tally.update(result["tally"])
            errors += result["errors"]

        illegal: list[str] = []
        duplicated = lost = runs = cancelled_after_stamp = 0
        for job_id, path in files.items():
            job = q.get(job_id)
            final, bad = replay(q.events(job_id))
            illegal += [f"job {job_id}: {b}" for b in bad]
            assert final == job.status, f"job {job_id}: history ends {final}, row says {job.status}"
            stamps = collections.Counter(stamps_in(path.read_bytes()))
            duplicated += sum(n - 1 for n in stamps.values())
            runs += job.run
            if job.status == C and stamps[(job_id, job.run)] != 1:
                lost += 1
            if job.status == X and stamps[(job_id, job.run)]:
                cancelled_after_stamp += 1
        integrity = q.backend.integrity_check() if hasattr(q.backend, "integrity_check") else None
        counts = q.counts()
    finally:
        q.close()
    record(
        "operator cancel/resubmit racing with completion",
        backend=backend_name(backend_url),
        jobs=n_jobs,
        faults=sum(tally.values()),
        lost=lost,
        duplicated=duplicated,
        integrity=integrity,
        runs=runs,
        actions=dict(sorted(tally.items())),
        illegal_transitions=len(illegal),
        cancelled_after_their_stamp=cancelled_after_stamp,
        final=counts,
    )
    assert errors == [], errors[:5]
    assert tally["cancel_ok"] and tally["resubmit_ok"], "both actions got through at times"
    assert tally["cancel_refused"] + tally["resubmit_refused"] > 0, "and were refused at other times"
    assert illegal == [], illegal[:10]
    assert duplicated == 0 and lost == 0
    assert integrity in (None, "ok")


def test_the_replay_catches_an_illegal_history() -> None:
    def ev(i: int, kind: EventKind, **detail: str) -> Event:
        return Event(i, 1, float(i), kind, None, None, dict(detail))

    legal = [ev(1, EventKind.ENQUEUED), ev(2, EventKind.CLAIMED), ev(3, EventKind.COMPLETED)]
    assert replay(legal) == (C, [])
    assert replay([*legal, ev(4, EventKind.CANCELLED, **{"from": "COMPLETED"})])[1]
    assert replay([*legal[:2], ev(4, EventKind.RESUBMITTED, **{"from": "PROCESSING"})])[1]
    assert replay([*legal[:2], ev(4, EventKind.CANCELLED, by="worker")])[1], "no cancel was requested"
