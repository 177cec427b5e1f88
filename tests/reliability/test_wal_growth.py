"""Item 7: WAL growth behind a reader that keeps a transaction open (an ops page that misbehaves).

While a reader holds a snapshot, no checkpoint can pass it and the WAL grows with every write
(checkpoint starvation): that cannot be bounded by jobq, only reported. What jobq must do is
shrink it back once the reader is gone: its connections set ``journal_size_limit``, so the first
writes after a complete checkpoint truncate the WAL to ``WAL_SIZE_LIMIT_BYTES``. Without the bad
reader, the same load keeps the WAL under that limit all along.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import apsw
import pytest
from harness import Recorder, scale

import jobq
from jobq.backends.sqlite import WAL_SIZE_LIMIT_BYTES

pytestmark = pytest.mark.slow
MB = 1024 * 1024
#: Heavy but realistic (the seed makes one job per 5 s per producer); at full speed the WAL grows ~35 MB/s.
LOAD_JOBS_PER_SECOND = 2000


class Load:
    """A thread enqueueing 20-job batches at up to ``LOAD_JOBS_PER_SECOND`` until stopped."""

    def __init__(self, url: str) -> None:
        self.queue = jobq.Queue(url)
        self.stop = threading.Event()
        self.enqueued = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.queue.enqueue_many([{"pad": "x" * 200, "n": i} for i in range(20)])
                self.enqueued += 20
                self.stop.wait(20 / LOAD_JOBS_PER_SECOND)  # the load's pace
        except BaseException as exc:  # noqa: BLE001 - handed to the test, which fails with it
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.queue.close()
        assert self.error is None, self.error


def wal_size(db: Path) -> int:
    try:
        return os.path.getsize(f"{db}-wal")
    except FileNotFoundError:
        return 0


def watch(db: Path, seconds: float) -> int:
    """The largest WAL size seen over ``seconds`` (sampled every 50 ms)."""
    peak = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, wal_size(db))
        time.sleep(0.05)  # the sampling period of a measurement, not a wait for an outcome
    return peak


def test_wal_grows_behind_an_open_reader_and_shrinks_back_after(tmp_path: Path, record: Recorder) -> None:
    seconds = scale(5, 60)
    control_seconds = scale(2, 5)
    db = tmp_path / "q.db"
    url = f"sqlite:///{db}"

    # A long-lived handle, like a running worker's: it keeps the database open, so closing the load's
    # connection is not the last close (which would checkpoint and delete the WAL by itself).
    holder = jobq.Queue(url)
    holder.count()
    load = Load(url)
    try:
        control_peak = watch(db, control_seconds)  # the same load, no misbehaving reader
        control_jobs = load.enqueued

        reader = apsw.Connection(str(db))
        reader.execute("BEGIN")
        held_rows = reader.execute("SELECT count(*) FROM jobs").fetchall()[0][0]
        before = load.enqueued
        peak = watch(db, seconds)
        during = load.enqueued - before
        reader.execute("COMMIT")
        reader.close()
    finally:
        load.finish()

    # The reader is gone and nothing writes: no checkpoint runs, the WAL keeps its size.
    idle_size = watch(db, 1.0)
    # The next writes checkpoint the WAL and reset it, truncated to journal_size_limit.
    writes = 0
    try:
        while wal_size(db) > WAL_SIZE_LIMIT_BYTES and writes < 100:
            holder.enqueue({"after": writes})
            writes += 1
        after = wal_size(db)
    finally:
        holder.close()
    with jobq.Queue(url) as q:
        stored = q.count()
        integrity = q.backend.integrity_check()  # type: ignore[attr-defined]
    record(
        f"WAL growth behind a reader open {seconds} s",
        backend="sqlite",
        jobs=stored,
        faults=1,
        lost=load.enqueued + writes - stored,
        duplicated=0,
        integrity=integrity,
        wal_peak_mb=round(peak / MB, 1),
        wal_peak_without_reader_mb=round(control_peak / MB, 1),
        wal_after_mb=round(after / MB, 1),
        wal_idle_after_reader_mb=round(idle_size / MB, 1),
        writes_to_shrink=writes,
        enqueued_while_held=during,
        jobs_per_second_without_reader=round(control_jobs / control_seconds),
        reader_saw_rows=held_rows,
    )
    assert control_peak <= WAL_SIZE_LIMIT_BYTES + 1 * MB, "without a bad reader the WAL stays bounded"
    assert peak > control_peak, "the open reader did starve the checkpoints (the scenario happened)"
    assert after <= WAL_SIZE_LIMIT_BYTES and writes <= 3, "a couple of writes after the reader left shrink it"
    assert stored == load.enqueued + writes
    assert integrity == "ok"
