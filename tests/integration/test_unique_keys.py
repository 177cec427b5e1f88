"""Key scopes under concurrent producer processes: the unique index decides, never a read first."""

from __future__ import annotations

import collections
import itertools
import time
from pathlib import Path

import pytest
from polling import wait_for
from processes import Procs

import jobq
from jobq import Page

PRODUCERS = 8
KEYS = 40


def _start(procs: Procs, url: str, *extra: str) -> None:
    start_at = f"{time.time() + 2.0:.3f}"  # every producer is running (and connected) by then
    for _ in range(PRODUCERS):
        procs.start("keyed", "--db", url, "--count", str(KEYS), "--start-at", start_at, *extra)


def _handed(tmp_path: Path, procs: Procs) -> list[tuple[str, int]]:
    wait_for(lambda: all(p.poll() is not None for p in procs.started[-PRODUCERS:]), 180, "the producers to finish")
    assert [p.returncode for p in procs.started[-PRODUCERS:]] == [0] * PRODUCERS, "a producer failed (see its log)"
    pairs = []
    for path in tmp_path.glob("keyed-*.txt"):
        for line in path.read_text().split():
            pairs.append(line)
    return [(k, int(i)) for k, i in zip(pairs[::2], pairs[1::2], strict=True)]


def _keys_of(q: jobq.Queue) -> dict[int, str | None]:
    return {j.id: j.idempotency_key for j in q.list_jobs(None, Page(limit=100_000))}


@pytest.mark.parametrize("scope", ["all", "active"])
def test_concurrent_producers_get_one_job_per_key(backend_url: str, procs: Procs, tmp_path: Path, scope: str) -> None:
    _start(procs, backend_url, "--scope", scope, "--rounds", "3")
    handed = _handed(tmp_path, procs)
    assert len(handed) == PRODUCERS * KEYS * 3
    ids = collections.defaultdict(set)
    for key, job_id in handed:
        ids[key].add(job_id)
    # Nothing finished meanwhile: every producer was handed the one job of each key.
    assert {k: len(v) for k, v in ids.items()} == {f"k{k}": 1 for k in range(KEYS)}
    with jobq.Queue(backend_url) as q:
        assert _keys_of(q) == {next(iter(v)): k for k, v in ids.items()}


def test_concurrent_producers_and_workers_keep_one_active_job_per_key(
    backend_url: str, procs: Procs, tmp_path: Path
) -> None:
    for _ in range(2):  # workers finish jobs while the producers enqueue: keys are let go and taken
        procs.start("worker", "--db", backend_url, "--batch", "4")
    _start(procs, backend_url, "--scope", "active", "--rounds", "20")
    handed = _handed(tmp_path, procs)
    with jobq.Queue(backend_url) as q:
        keys = _keys_of(q)
        # Every id a producer was handed is a job of the key it asked for.
        assert all(keys[job_id] == key for key, job_id in handed)
        assert set(keys) == {job_id for _, job_id in handed}
        # At most one job of a key was PENDING or PROCESSING at any time: the partial unique index
        # says so (an insert that broke it would have failed a producer above).
        assert len(keys) > KEYS  # keys were released and taken again


def test_ttl_keys_released_by_concurrent_producers(backend_url: str, procs: Procs, tmp_path: Path) -> None:
    ttl = 0.05
    _start(procs, backend_url, "--ttl", str(ttl), "--rounds", "15")
    handed = _handed(tmp_path, procs)
    with jobq.Queue(backend_url) as q:
        jobs = {j.id: j for j in q.list_jobs(None, Page(limit=100_000))}
    assert all(jobs[job_id].idempotency_key == key for key, job_id in handed)
    by_key = collections.defaultdict(list)
    for job in jobs.values():
        by_key[job.idempotency_key].append(job)
    for key, mine in by_key.items():
        mine.sort(key=lambda j: j.id)
        # A producer takes a key only once the holder's ttl has passed by its own clock reading,
        # which becomes the new job's created_at: holders never overlap.
        for before, after in itertools.pairwise(mine):
            assert after.created_at >= before.created_at + ttl - 1e-6, (key, before.id, after.id)
    assert len(jobs) > KEYS
