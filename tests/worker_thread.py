"""A worker run in a thread for the length of a ``with`` block, for tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from jobq.worker import Worker


@contextmanager
def running(worker: Worker, timeout: float = 30) -> Iterator[Worker]:
    """``worker.run()`` in a thread from when it has started; stopped and joined on the way out,
    also when the block fails."""
    thread = threading.Thread(target=worker.run, name="worker-main", daemon=True)
    thread.start()
    try:
        assert worker.started.wait(timeout)
        yield worker
    finally:
        worker.stop()
        thread.join(timeout)
    assert not thread.is_alive()


def stop_while_busy(worker: Worker, started: threading.Event, timeout: float = 60) -> None:
    """``worker.run()`` in a thread until ``started`` is set (a handler runs), then ``stop()``: the
    worker must have exited within ``timeout``. Forced and joined on the way out, also on failure."""
    thread = threading.Thread(target=worker.run, name="worker-main", daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        worker.stop()
        thread.join(timeout)
        assert not thread.is_alive()
    finally:
        worker.stop(force=True)
        thread.join(30)
