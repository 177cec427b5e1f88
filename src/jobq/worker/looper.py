"""One start/stop protocol for every background loop (heartbeat, rescuer, pruner)."""

from __future__ import annotations

import logging
import random
import threading

log = logging.getLogger("jobq.worker")


class Looper:
    """Runs ``tick()`` every ``interval`` seconds (with jitter) on a daemon thread until stopped.

    A tick that raises is logged and the loop goes on: a background loop must never die
    silently and take the worker's liveness with it.
    """

    name = "looper"

    def __init__(self, interval: float, *, jitter: float = 0.1) -> None:
        self.interval = interval
        self.jitter = jitter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"jobq-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("%s: tick failed", self.name)
            spread = self.interval * self.jitter
            self._stop.wait(max(0.01, self.interval + random.uniform(-spread, spread)))
