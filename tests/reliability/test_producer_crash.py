"""Item 4: producers SIGKILLed mid-enqueue, restarted, retrying with the same idempotency key.

Each producer appends ``key id`` to its acknowledgement file after ``enqueue`` returned, and a
restarted one resumes at its first unacknowledged key: the key a kill may have committed without
an acknowledgement. That case is counted (``committed_unacked``): its retry must get the same job.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from harness import Agents, Recorder, backend_name, scale

import jobq

pytestmark = pytest.mark.slow
PRODUCERS = 3
MIN_KILLS = 3  # a run must kill at least this many producers mid-enqueue to count
MAX_ROUNDS = 20


def read_acks(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    return [(key, int(job_id)) for key, job_id in (line.split() for line in path.read_text().splitlines())]


def test_killed_producers_retrying_with_their_keys_lose_and_duplicate_nothing(
    backend_url: str, tmp_path: Path, agents: Agents, record: Recorder
) -> None:
    per_producer = scale(300, 3000)
    q = jobq.Queue(backend_url)
    rng = random.Random()
    kills = committed_unacked = 0
    prefixes: list[str] = []

    def run_round(r: int) -> None:
        """Run PRODUCERS producers to the end of their keys, killing them at random meanwhile."""
        nonlocal kills, committed_unacked
        prefix = [f"p{i}r{r}" for i in range(PRODUCERS)]
        prefixes.extend(prefix)
        ack = [tmp_path / f"acks-{p}" for p in prefix]

        def start(i: int) -> subprocess.Popen[bytes]:
            args = ["--db", backend_url, "--ack", str(ack[i]), "--prefix", prefix[i], "--count", str(per_producer)]
            return agents.start("producer", *args)

        started_at = [0] * PRODUCERS
        slots = [start(i) for i in range(PRODUCERS)]
        # Each life must acknowledge a random number of keys before it may be killed, so that the run
        # always progresses however slowly a loaded machine starts Python; the kill itself still lands
        # at an arbitrary point of the enqueue loop. The deadline is on progress, not on the total.
        lives = [rng.randint(1, 20) for _ in range(PRODUCERS)]
        progress, stalled_after = -1, 0.0
        while True:
            codes = [p.poll() for p in slots]
            if all(c == 0 for c in codes):
                return
            assert all(c in (None, 0) for c in codes), f"a producer failed: {codes}\n{agents.logs()}"
            done = sum(len(read_acks(path)) for path in ack)
            if done != progress:
                progress, stalled_after = done, time.monotonic() + 60
            assert time.monotonic() < stalled_after, f"no key acknowledged for 60 s\n{agents.logs()}"
            time.sleep(rng.uniform(0.01, 0.1))  # the pace of the chaos, not a wait for an outcome
            i = rng.randrange(PRODUCERS)
            # Kill only a producer that is in its enqueue loop (acknowledged enough since it started).
            if slots[i].poll() is None and len(read_acks(ack[i])) >= started_at[i] + lives[i]:
                slots[i].send_signal(signal.SIGKILL)
                slots[i].wait(10)
                kills += 1
                nxt = f"{prefix[i]}-{len(read_acks(ack[i]))}"
                if q.count(jobq.JobFilter(search=f'"key":"{nxt}"')):
                    committed_unacked += 1  # killed between the commit and the acknowledgement
                started_at[i] = len(read_acks(ack[i]))
                lives[i] = rng.randint(1, 20)
                slots[i] = start(i)

    try:
        # A fast machine can enqueue a round's keys before the chaos picks a producer to kill: a run
        # without a kill proves nothing, so further rounds (new keys) run until some kills landed.
        for r in range(MAX_ROUNDS):
            run_round(r)
            if kills >= MIN_KILLS:
                break
        ack_files = [tmp_path / f"acks-{p}" for p in prefixes]
        jobs = q.list(page=jobq.Page(limit=1_000_000))
        by_key: dict[str, list[int]] = {}
        for job in jobs:
            by_key.setdefault(job.payload["key"], []).append(job.id)
        acked = [a for path in ack_files for a in read_acks(path)]
        missing = sum(1 for key, job_id in acked if by_key.get(key) != [job_id])
        duplicated = sum(len(ids) - 1 for ids in by_key.values()) + sum(1 for j in jobs if j.idempotency_key is None)
        expected = {f"{p}-{n}" for p in prefixes for n in range(per_producer)}
        integrity = q.backend.integrity_check() if hasattr(q.backend, "integrity_check") else None
    finally:
        q.close()
    record(
        "producer kill -9 mid-enqueue, retry with same key",
        backend=backend_name(backend_url),
        jobs=len(jobs),
        faults=kills,
        lost=missing + len(expected - set(by_key)),
        duplicated=duplicated,
        integrity=integrity,
        committed_unacked_retried=committed_unacked,
    )
    assert kills >= MIN_KILLS, f"only {kills} kills landed in {MAX_ROUNDS} rounds"
    assert len(acked) == len(expected) == len(jobs), "every key acknowledged once, one job per key"
    assert missing == 0 and duplicated == 0
    assert set(by_key) == expected
    assert {j.idempotency_key for j in jobs} == expected
    assert integrity in (None, "ok")
