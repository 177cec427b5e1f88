"""Workers SIGKILLed at random under load, restarted, on both backends, with ``async def``
handlers and sync ones: no job is lost, none ends FAILED, and every repeated effect is explained
by a kill (a job whose worker died after its effect and before its completion committed runs
again: at-least-once). The supervisord test does the same with the seed's sync consumers."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from agents import POLITE_GIVE_BACK
from harness import Agents, Recorder, backend_name, scale

import jobq
from jobq.worker.runtime import GAVE_BACK_AT_STOP, GAVE_BACK_WAITED

pytestmark = pytest.mark.slow
WORKERS = 3
#: Each worker runs up to this many jobs at once (chaosworker's async_concurrency).
IN_FLIGHT_PER_WORKER = 8
KILLS_MIN = 3


@pytest.mark.parametrize("handler", ["async", "sync"])
def test_killed_workers_lose_nothing(
    backend_url: str, tmp_path: Path, agents: Agents, record: Recorder, handler: str
) -> None:
    batch = scale(300, 5000)
    chaos_seconds = scale(6, 60)
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url, max_attempts=1000))
    try:

        def start() -> subprocess.Popen[bytes]:
            extra = ("--async",) if handler == "async" else ()
            return agents.start("chaosworker", "--db", backend_url, "--out", str(tmp_path), "--lease", "1.5", *extra)

        slots = [start() for _ in range(WORKERS)]

        def kill(proc: subprocess.Popen[bytes]) -> None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

        kills, jobs_total = _hit_busy_workers(q, slots, start, kill, (batch, 1000), chaos_seconds, agents)
        _wait_all_completed(q, jobs_total, slots, agents)
        counts = q.counts()
        jobs = q.list(page=jobq.Page(limit=1_000_000))
        effects = Counter(int(line.split()[0]) for line in _lines(tmp_path / "effects"))
        integrity = q.backend.integrity_check() if hasattr(q.backend, "integrity_check") else None
    finally:
        q.close()
    repeated = sum(n - 1 for n in effects.values())
    redelivered = sum(j.attempts - 1 for j in jobs)
    lost = sum(1 for j in jobs if effects.get(j.id, 0) == 0)
    record(
        f"worker kill -9 under load ({handler} handlers)",
        backend=backend_name(backend_url),
        jobs=len(jobs),
        faults=kills,
        lost=lost,
        duplicated=repeated,
        redelivered=redelivered,
        integrity=integrity,
    )
    assert kills > 0 and redelivered > 0, "kills must hit running jobs"
    assert counts["COMPLETED"] == jobs_total == len(jobs) and counts["FAILED"] == 0
    assert lost == 0, "every completed job ran its effect"
    # A repeat only for a job a killed worker held: at most its in-flight jobs per kill.
    assert repeated <= kills * IN_FLIGHT_PER_WORKER, (repeated, kills)
    assert integrity in (None, "ok")


@pytest.mark.parametrize("handler", ["async", "sync"])
def test_workers_stopped_at_random_give_back_what_they_hold(
    backend_url: str, tmp_path: Path, agents: Agents, record: Recorder, handler: str
) -> None:
    """Workers SIGTERMed at random under load, restarted, their handlers giving back (``ctx.stopping``,
    ``jobq.WorkerShutdown``) the jobs they have not finished: every job completes, its effect once,
    in one counted attempt (every job allows one: a give-back that counted would fail it), and each
    give-back is one ``released`` event."""
    batch = scale(200, 3000)
    chaos_seconds = scale(6, 60)
    q = jobq.Queue(settings=jobq.Settings(database_url=backend_url))
    stop_seconds: list[float] = []
    try:

        def start() -> subprocess.Popen[bytes]:
            extra = ("--async",) if handler == "async" else ()
            return agents.start("politeworker", "--db", backend_url, "--out", str(tmp_path), *extra)

        slots = [start() for _ in range(WORKERS)]

        def stop(proc: subprocess.Popen[bytes]) -> None:
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            # Its grace period is 5 s: a worker whose handlers give back exits well before.
            assert proc.wait(30) == 0, agents.logs()
            stop_seconds.append(time.monotonic() - began)

        _, jobs_total = _hit_busy_workers(q, slots, start, stop, (batch, 1), chaos_seconds, agents)
        _wait_all_completed(q, jobs_total, slots, agents)
        counts = q.counts()
        jobs = q.list(page=jobq.Page(limit=1_000_000))
        gave = Counter(int(line.split()[0]) for line in _lines(tmp_path / "gaveback"))
        # A worker shut down also gives back the jobs it claimed ahead and never started (a
        # released event of its own reason): only the handlers' give-backs pair with gaveback.
        reasons = {i: [(e.detail or {}).get("reason", "") for e in q.events(i) if e.kind == "released"] for i in gave}
        released = {i: rs.count(POLITE_GIVE_BACK) for i, rs in reasons.items()}
        ahead = {r for rs in reasons.values() for r in rs if r != POLITE_GIVE_BACK}
        effects = Counter(int(line.split()[0]) for line in _lines(tmp_path / "effects"))
    finally:
        q.close()
    record(
        f"worker SIGTERM under load, handlers give back ({handler} handlers)",
        backend=backend_name(backend_url),
        jobs=len(jobs),
        faults=len(stop_seconds),
        lost=sum(1 for j in jobs if effects.get(j.id, 0) == 0),
        duplicated=sum(n - 1 for n in effects.values()),
        redelivered=sum(gave.values()),
        stop_seconds_max=round(max(stop_seconds), 2) if stop_seconds else None,
    )
    assert len(stop_seconds) >= KILLS_MIN and gave, "stops must catch handlers between steps"
    assert counts["COMPLETED"] == jobs_total == len(jobs) and counts["FAILED"] == 0
    assert all(j.attempts == 1 for j in jobs), "a give-back does not count an attempt"
    assert effects == Counter({j.id: 1 for j in jobs}), "every effect exactly once"
    assert released == dict(gave), "each give-back is one released event"
    assert ahead <= {GAVE_BACK_AT_STOP, GAVE_BACK_WAITED}, ahead


def _hit_busy_workers(
    q: jobq.Queue,
    slots: list[subprocess.Popen[bytes]],
    start: Callable[[], subprocess.Popen[bytes]],
    hit: Callable[[subprocess.Popen[bytes]], None],
    jobs: tuple[int, int],
    chaos_seconds: float,
    agents: Agents,
) -> tuple[int, int]:
    """Enqueues a batch of ``jobs`` (how many, and the attempts each may make), then every
    0.2-0.6 s ``hit`` (kill or stop) a worker that holds jobs right now, and starts another in its
    slot: for ``chaos_seconds``, and at least KILLS_MIN times (on a loaded machine the workers may
    take most of that time to start), within 90 s. Returns the hits and the jobs enqueued."""
    batch, max_attempts = jobs

    def enqueue_batch() -> int:
        return len(q.enqueue_many(range(batch), max_attempts=max_attempts))

    rng = random.Random()
    hits = 0
    jobs_total = enqueue_batch()
    end = time.monotonic() + chaos_seconds
    give_up = time.monotonic() + 90
    while (time.monotonic() < end or hits < KILLS_MIN) and time.monotonic() < give_up:
        counts = q.counts()
        if counts["PENDING"] == 0 and hits < KILLS_MIN:
            # Fast workers can drain a batch before KILLS_MIN hits: another batch gives the
            # remaining hits running jobs to land on (the test's point), not an empty queue.
            jobs_total += enqueue_batch()
        elif counts["COMPLETED"] >= jobs_total:
            break
        time.sleep(rng.uniform(0.2, 0.6))  # the pace of the chaos, not a wait for an outcome
        # A worker that holds jobs right now (one still starting up would be a wasted hit).
        pids = {w.id: w.pid for w in q.workers()}
        running = q.list(jobq.JobFilter(statuses=(jobq.JobStatus.PROCESSING,)), jobq.Page(limit=1000))
        busy = {pids.get(j.lease_owner or "") for j in running}
        victims = [i for i, p in enumerate(slots) if p.pid in busy]
        if not victims:
            continue
        i = rng.choice(victims)
        assert slots[i].poll() is None, agents.logs()
        hit(slots[i])
        hits += 1
        slots[i] = start()
    return hits, jobs_total


def _wait_all_completed(q: jobq.Queue, jobs_total: int, slots: list[subprocess.Popen[bytes]], agents: Agents) -> None:
    """Polls (deadline 120 s) until every job is COMPLETED; every worker must stay up meanwhile."""
    deadline = time.monotonic() + 120
    while q.counts()["COMPLETED"] < jobs_total:
        assert time.monotonic() < deadline, f"{q.counts()}\n{agents.logs()}"
        assert all(p.poll() is None for p in slots), agents.logs()
        time.sleep(0.1)  # polling the outcome with a deadline


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
