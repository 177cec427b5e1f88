"""One start/stop protocol for every background loop of a worker (heartbeat, rescuer, pruner).

The protocol, which ``Worker.run`` relies on to undo a half-done start-up:

- ``start()`` starts one daemon thread; calling it again does nothing (never a second thread).
- ``stop()`` may be called at any time, any number of times: before ``start()`` (the loop then
  never runs, and a later ``start()`` does nothing), twice, or from the loop's own thread.
  That is why a caller can register the ``stop`` for undoing *before* it calls ``start``.
- ``started`` is set once the thread runs (``wait_started(timeout)`` waits for it).

Limits: a loop runs once; it cannot be restarted after ``stop()``. Threads cannot be killed, so
``stop()`` waits at most ``timeout`` for a tick that is blocked (e.g. on a database that does
not answer) and then leaves the daemon thread behind, logging that it did.
"""

from __future__ import annotations

import logging
import random
import threading

from jobq.errors import JobqError
from jobq.worker.runs import one_line

log = logging.getLogger("jobq.worker")

#: How long ``stop()`` waits for the loop's thread to finish its tick.
STOP_TIMEOUT_SECONDS = 5.0


class Looper:
    """Runs ``tick()`` every ``interval`` seconds (with jitter) on a daemon thread until stopped.

    A tick that raises is logged and the loop goes on: a background loop must never die
    silently and take the worker's liveness with it.

    >>> class Tidy(Looper):
    ...     name = "tidy"
    ...     def tick(self) -> None:
    ...         tidy_up()
    >>> loop = Tidy(60.0)
    >>> loop.start()  # tidy_up() runs now, then every minute  # doctest: +SKIP
    >>> loop.wait_started(5)  # doctest: +SKIP
    True
    >>> loop.stop()
    """

    name = "looper"

    def __init__(self, interval: float, *, jitter: float = 0.1) -> None:
        self.interval = interval
        self.jitter = jitter
        self.started = threading.Event()
        """Set once the loop's thread runs (never set if the loop was stopped before it started)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Only start() and stop() take it: two concurrent start() calls must not both see no thread.
        self._lock = threading.Lock()

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Start the loop's thread, unless it was started or stopped already.

        Raises RuntimeError when no thread can be started (the loop then counts as not started).
        """
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            thread = threading.Thread(target=self._loop, name=f"jobq-{self.name}", daemon=True)
            thread.start()
            self._thread = thread

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Ask the loop to end and wait up to ``timeout`` s for its current tick. Safe at any time."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("%s: still in a tick after %.1f s; leaving its thread behind", self.name, timeout)

    def wait_started(self, timeout: float | None = None) -> bool:
        """Wait until the loop's thread runs; False if it did not within ``timeout`` s."""
        return self.started.wait(timeout)

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was asked: a long tick checks it between its steps."""
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        """True while the loop's thread is alive (started and not yet finished)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _loop(self) -> None:
        self.started.set()
        while not self._stop.is_set():
            try:
                self.tick()
            except JobqError as exc:
                # The database away (a restart, a lock held too long) is weather, not a bug: one
                # line, and the next tick tries again. A traceback here reads as a crash.
                log.warning("%s: %s (again in %.1f s)", self.name, one_line(exc), self.interval)
            except Exception:
                log.exception("%s: tick failed", self.name)
            spread = self.interval * self.jitter
            self._stop.wait(max(0.01, self.interval + random.uniform(-spread, spread)))
