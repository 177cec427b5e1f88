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
