"""A purge on SQLite lets other writers in: it deletes ``PURGE_CHUNK_JOBS`` jobs per transaction
and pauses after each, so a worker's claim, heartbeat or completion (and an app's action, which
waits 2 s at most) is never held behind the whole purge. In one transaction, purging 979,020
finished jobs held the write lock for 3 s, and every other writer with it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import jobq
from jobq.backends import base


def test_another_writer_gets_through_while_a_long_purge_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "PURGE_CHUNK_JOBS", 200)
    url = f"sqlite:///{tmp_path}/q.db"
    written: list[float] = []  # when each of the other writer's enqueues returned
    stop = threading.Event()

    def write() -> None:
        with jobq.Queue(url) as other:
            while not stop.is_set():
                other.enqueue({"other": True})
                written.append(time.monotonic())

    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": n} for n in range(4_000)])
        assert len(q.complete_many([(job, None) for job in q.claim_many("w", 4_000)])) == 4_000
        statements: list[tuple[float, str]] = []  # on the purge's own connection
        conn = q.backend._connect()  # type: ignore[attr-defined]
        conn.exec_trace = lambda _c, sql, _b: statements.append((time.monotonic(), sql.split()[0].upper())) is None
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            deadline = time.monotonic() + 30
            while not written and time.monotonic() < deadline:  # the writer is writing
                time.sleep(0.001)
            assert q.purge(older_than=0, statuses=[jobq.JobStatus.COMPLETED]) == 4_000
        finally:
            stop.set()
            writer.join(timeout=30)
            conn.exec_trace = None
        assert q.count(jobq.JobFilter(statuses=(jobq.JobStatus.COMPLETED,))) == 0
    began = min(t for t, word in statements if word == "DELETE")
    ended = max(t for t, word in statements if word == "COMMIT")
    assert sum(word == "DELETE" for _, word in statements) >= 20  # a chunk at a time (and its events)
    inside = [t for t in written if began < t < ended]
    assert inside, "no other write got through while the purge ran"
