"""The machine's own speed, read at a run's start and at its end, with no jobq and no database.

The machine these runs share can run 2-3x slower for an hour or more (the run of 2026-12-07 12:25
in ``docs/benchmarks.md``): every figure with a unit then follows it, and paired ratios move too.
Three readings, a pure-Python loop (the CPU one process gets), small writes each followed by
``fsync`` (what every FULL-durability commit waits for), and SQLite commits at NORMAL, one
``UPDATE`` each (C code, file locks and writes, as in raw's rows; which of these was slow in the
throttled hours was not measured), let a reader of the table see whether the machine held its
speed through the run, and compare two runs' machines, without rerunning either.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from collections.abc import Callable

#: How long each reading runs, and how many times (the best is kept: a slow one is the machine
#: doing something else for a moment).
READING_SECONDS = 0.2
READINGS = 3
FSYNC_BYTES = 4096
LOOP_STEPS = 10_000

#: Start and end readings further apart than this (as a fraction of the faster) are called out.
MOVED = 0.2


@dataclasses.dataclass(frozen=True)
class Speed:
    loop_per_s: float  # iterations of a small pure-Python loop a second
    fsync_per_s: float  # 4 KiB writes, each followed by fsync, a second
    commit_per_s: float  # SQLite transactions of one UPDATE (WAL, synchronous=NORMAL) a second

    def text(self) -> str:
        return (
            f"CPU {self.loop_per_s / 1e6:.1f} M loop steps/s, {self.fsync_per_s:,.0f} fsyncs/s, "
            f"{self.commit_per_s:,.0f} SQLite commits/s"
        )


def _per_second(step: Callable[[], object], seconds: float, per_step: int = 1) -> float:
    """How many times a second ``step()`` does its work (``per_step`` units a call), over
    ``seconds``: the one loop of every reading."""
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        count += per_step
    return count / (time.perf_counter() - started)


def _loop_rate(seconds: float) -> float:
    def steps() -> int:  # 10,000 at a time, so that reading the clock is not what is measured
        total = 0
        for i in range(LOOP_STEPS):
            total += i & 7
        return total

    return _per_second(steps, seconds, LOOP_STEPS)


def _fsync_rate(path: str, seconds: float) -> float:
    block = b"\0" * FSYNC_BYTES
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def write() -> None:
        os.pwrite(fd, block, 0)
        os.fsync(fd)

    try:
        return _per_second(write, seconds)
    finally:
        os.close(fd)
        os.unlink(path)


def _commit_rate(path: str, seconds: float) -> float:
    conn = sqlite3.connect(path, isolation_level=None)

    def commit() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE t SET n = n + 1")
        conn.execute("COMMIT")

    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
        conn.execute("INSERT INTO t VALUES (0)")
        return _per_second(commit, seconds)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)


def probe(workdir: str, seconds: float = READING_SECONDS, readings: int = READINGS) -> Speed:
    """Read the machine's speed now; the fsyncs go to a file in ``workdir`` (the disk the
    benchmark's databases are on)."""
    path = os.path.join(workdir, "speed-probe")
    return Speed(
        loop_per_s=max(_loop_rate(seconds) for _ in range(readings)),
        fsync_per_s=max(_fsync_rate(path, seconds) for _ in range(readings)),
        commit_per_s=max(_commit_rate(path + ".db", seconds) for _ in range(readings)),
    )


def moved(start: Speed, end: Speed) -> list[str]:
    """What changed by more than ``MOVED`` between the two readings, in words (none: [])."""
    out = []
    for name, a, b in (
        ("CPU", start.loop_per_s, end.loop_per_s),
        ("fsync", start.fsync_per_s, end.fsync_per_s),
        ("SQLite commits", start.commit_per_s, end.commit_per_s),
    ):
        if max(a, b) > 0 and abs(a - b) / max(a, b) > MOVED:
            out.append(f"{name} {'slower' if b < a else 'faster'} by {abs(a - b) / max(a, b):.0%}")
    return out
