"""How jobq's writes wait for SQLite's one write lock (jobq.backends.sqlite.busy): as SQLite's
own handler for its first tries, then polling, so that a producer is not left behind workers
that take the lock again and again; giving up at the busy timeout with a clear error. A real
file, a real second connection holding the lock. (How long a producer waits behind four
batching workers is measured by ``python -m bench.lock_share``, not timed here.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

import jobq
from jobq.backends.sqlite import busy
from jobq.errors import StorageError

DEADLINE_SECONDS = 30.0
#: Tries made before the lock is let go: SQLite's six sleeps, then polls.
TRIES = len(busy.SQLITE_SLEEPS_SECONDS) + 10


def _held(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(30_000)  # a write of the queue's may be under way as the test starts
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _queue(path: Path, jobs: int, options: str = "") -> jobq.Queue:
    q = jobq.Queue(f"sqlite:///{path}{options}")
    q.enqueue_many([{"n": n} for n in range(jobs)])
    return q


@pytest.fixture
def chosen(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """Each pause jobq's handler chose, in order."""
    chosen: list[float | None] = []
    real = busy.pause

    def recorded(count: int, waited: float, timeout: float, draw: float) -> float | None:
        wait = real(count, waited, timeout, draw)
        chosen.append(wait)
        return wait

    monkeypatch.setattr(busy, "pause", recorded)
    return chosen


@pytest.mark.parametrize("call", ["enqueue", "claim", "claim_many", "complete_many_and_claim"])
def test_a_write_behind_a_held_lock_sleeps_as_sqlite_does_then_polls(
    tmp_path: Path, chosen: list[float | None], call: str
) -> None:
    path = tmp_path / "q.db"
    with _queue(path, 100) as q:
        claimed = q.claim_many("w", 10)
        calls: dict[str, Any] = {
            "enqueue": lambda: q.enqueue({"n": "one"}),
            "claim": lambda: q.claim("w"),
            "claim_many": lambda: q.claim_many("w", 50),
            "complete_many_and_claim": lambda: q.complete_many_and_claim([(j, None) for j in claimed], "w", 10),
        }
        chosen.clear()
        holder = _held(path)
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(calls[call]()))
        t.start()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(chosen) < TRIES and time.monotonic() < deadline:
            time.sleep(0.001)
        holder.execute("COMMIT")
        holder.close()
        t.join(DEADLINE_SECONDS)
        assert box and box[0], "the write did not get through once the lock was let go"
        assert chosen[: len(busy.SQLITE_SLEEPS_SECONDS)] == list(busy.SQLITE_SLEEPS_SECONDS)
        polls = chosen[len(busy.SQLITE_SLEEPS_SECONDS) :]
        assert len(polls) >= TRIES - len(busy.SQLITE_SLEEPS_SECONDS)
        assert all(p is not None and p <= busy.BACKOFF_CAP_SECONDS for p in polls)
        counts = q.counts()
        assert counts["PENDING"] + counts["PROCESSING"] + counts["COMPLETED"] == 100 + (call == "enqueue")


@pytest.mark.parametrize("timeout_ms", [300, 0])
def test_a_write_behind_a_lock_held_past_the_busy_timeout_gives_up_with_a_clear_error(
    tmp_path: Path, chosen: list[float | None], timeout_ms: int
) -> None:
    """``busy_timeout=0`` in the URL: no wait at all."""
    path = tmp_path / "q.db"
    with _queue(path, 20, f"?busy_timeout={timeout_ms}") as q:
        holder = _held(path)
        try:
            with pytest.raises(StorageError, match=rf"stayed locked for {timeout_ms / 1000:g} s"):
                q.claim_many("w", 20)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        if timeout_ms:
            assert None in chosen  # the handler gave up, at the timeout
            assert all(p is None or p <= timeout_ms / 1000 for p in chosen)
        else:
            assert chosen == []
        # Nothing was taken by the call that gave up; the jobs are there for the next.
        assert q.counts()["PENDING"] == 20
        assert len(q.claim_many("w", 20)) == 20
