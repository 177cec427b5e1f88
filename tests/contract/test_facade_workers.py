"""What a worker needs of storage, through the ``Queue`` facade only (every backend).

The backend operations themselves are in ``test_contract.py``; this checks the facade's small
doors over them: queue names as a worker passes them, and wall-clock registry times.
"""

from __future__ import annotations

import os
import time

import pytest
from polling import wait_for

import jobq
from jobq import WorkerInfo


def _info(worker_id: str, address: str | None) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(
        id=worker_id,
        name="w",
        host="h",
        pid=os.getpid(),
        queues=("default",),
        started_at=now,
        last_seen_at=now,
        wake_address=address,
    )


def test_a_worker_registers_reports_and_stops_through_the_facade(queue: jobq.Queue) -> None:
    listener = queue.listener("w-facade", "default")  # one name or a list, as claim takes them
    try:
        queue.register_worker(_info("w-facade", listener.address))
        queue.worker_seen("w-facade", [7, 8], 3, 1)
        [row] = queue.workers()
        assert (row.current_jobs, row.jobs_done, row.jobs_failed, row.stopped_at) == ((7, 8), 3, 1, None)
        # Registry rows are for people: wall-clock times even when the queue runs on a fake clock.
        assert abs(row.last_seen_at - time.time()) < 60
        with jobq.Queue(settings=queue.settings) as producer:  # real clock: the registry row is live
            producer.enqueue({})
        wait_for(lambda: listener.wait(0.5), 10, "an enqueue to wake the worker's listener")
        queue.worker_stopped("w-facade")
        [row] = queue.workers()
        assert row.stopped_at is not None and abs(row.stopped_at - time.time()) < 60
    finally:
        listener.close()


def test_next_due_at_and_single_host(queue: jobq.Queue, clock) -> None:
    assert queue.next_due_at() is None
    queue.enqueue({}, delay=60)
    assert queue.next_due_at() == pytest.approx(clock.now + 60)
    assert queue.next_due_at(["default", "other"]) == pytest.approx(clock.now + 60)
    assert queue.next_due_at("other") is None
    assert queue.single_host is queue.url.startswith("sqlite")
