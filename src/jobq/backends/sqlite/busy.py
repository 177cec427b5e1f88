"""How a write waits for SQLite's one write lock: jobq's busy handler.

SQLite's own handler (``busy_timeout``) sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms
between tries, then 100 ms until the timeout. Its first steps suit short transactions: a writer
that just committed often takes the lock again before the sleepers wake, runs several
transactions in a row, and each handoff (after which the next writer reads again the pages the
last one changed) is paid rarely. Its later steps do not: behind four batching workers, whose
transactions hold the lock ~1.5 ms each and leave it free for a fraction of a millisecond, a
producer's one-job enqueue that had reached the 25-100 ms sleeps woke rarely and found the lock
taken nearly every time, for up to 0.4-1.5 s a call (``python -m bench.lock_share``,
docs/benchmarks.md "Sharing SQLite's write lock").

So jobq's handler sleeps as SQLite's does for its first six tries (53 ms in all), then polls
every 0.5-2 ms, about as often as the workers come back for the lock, so that a waiter's chance at
each release is about theirs: behind those four workers a producer's enqueue then waited at most
60-70 ms. Polling from the first try made four per-job workers (whose transactions are short)
14 % slower with 30 % more CPU a job, as each handoff costs the next writer its reads of the
changed pages again; polling every 0.3-1 ms after the six sleeps, 5-10 % slower. Once the lock
has been held far longer than any of jobq's transactions holds it (a purge's chunk, an
operator's shell, a frozen process), the handler backs off as SQLite does, and it gives up at
the connection's busy timeout, as SQLite's handler does (``SqliteBackend._locked`` says so and
tries again).
"""

from __future__ import annotations

import random
import time

#: SQLite's own first pauses (``sqliteDefaultBusyCallback``), 53 ms in all.
SQLITE_SLEEPS_SECONDS = (0.001, 0.002, 0.005, 0.010, 0.015, 0.020)
#: Then the pause between polls, drawn evenly in between (so that waiters do not poll in step).
POLL_SECONDS = (0.0005, 0.002)
#: ... while the write has waited less than this.
POLL_UNTIL_SECONDS = 0.2
#: Past it, each pause is half the time waited so far, up to this (SQLite's own cap).
BACKOFF_CAP_SECONDS = 0.1


def pause(count: int, waited: float, timeout: float, draw: float) -> float | None:
    """The pause before try ``count + 1``, having ``waited`` seconds of at most ``timeout``
    (None: give up); ``draw`` is a number in [0, 1)."""
    if waited >= timeout:
        return None
    if count < len(SQLITE_SLEEPS_SECONDS):
        wait = SQLITE_SLEEPS_SECONDS[count]
    elif waited < POLL_UNTIL_SECONDS:
        low, high = POLL_SECONDS
        wait = low + (high - low) * draw
    else:
        wait = min(BACKOFF_CAP_SECONDS, waited / 2)
    return min(wait, timeout - waited)


class BusyHandler:
    """The handler of one connection (``apsw.Connection.set_busy_handler``). SQLite calls it
    with ``count`` 0 on a statement's first busy try; a connection is used by one thread at a
    time (``SqliteBackend._lock``)."""

    def __init__(self, timeout_ms: int) -> None:
        self.timeout = timeout_ms / 1000
        self.started = 0.0
        self.tries = 0  # every try that found the lock taken

    def __call__(self, count: int) -> bool:
        now = time.monotonic()
        if count == 0:
            self.started = now
        self.tries += 1
        wait = pause(count, now - self.started, self.timeout, random.random())
        if wait is None:
            return False
        time.sleep(wait)
        return True
