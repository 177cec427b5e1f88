"""Helpers for testing code that uses jobq: a clock you move by hand, a way to run the queue dry.

>>> clock = FakeClock()
>>> q = jobq.Queue("sqlite:////tmp/test.db", clock=clock)   # doctest: +SKIP
>>> clock.advance(60)                                        # leases and backoff move with it

``jobq.testing.contract`` holds the backend contract suite, importable so that another backend
can run it (see its docstring).
"""

from __future__ import annotations

from collections.abc import Mapping

from jobq.queue import Queue
from jobq.worker import Worker
from jobq.worker.registry import Handler

__all__ = ["FakeClock", "drain"]


class FakeClock:
    """A clock the test moves by hand, so lease expiry and backoff need no sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def drain(queue: Queue, handlers: Mapping[str, Handler] | Handler, *, queues: list[str] | None = None) -> Worker:
    """Run a worker in this thread until nothing is due and nothing runs; return it (for its
    ``jobs_done`` / ``jobs_failed`` counts). Jobs delayed into the future are left waiting."""
    worker = Worker(queue, handlers, queues=queues, exit_when_idle=True)
    worker.run()
    return worker
