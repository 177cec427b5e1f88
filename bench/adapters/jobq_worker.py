"""jobq's own worker loop (``jobq.worker.Worker``) with a no-op handler: claims in batches,
runs handlers on its threads, group-commits the outcomes, sleeps on the backend's listener.
``batch`` (default 100; None: the Worker's default, one per free thread plus jobs claimed ahead
while jobs are short) and ``concurrency`` (default 1) are the Worker's own arguments."""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.adapters.base import Consumer
from bench.adapters.jobq_adapter import Jobq
from bench.core import Record, record_of


class WorkerConsumer(Consumer):
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        from jobq import Queue

        self.q = Queue(url)
        self.q.counts()  # connect before the clock starts
        self.options = options
        self.records: list[Record] = []

    def _worker(self, exit_when_idle: bool) -> Any:
        from jobq.worker import Worker

        records = self.records

        def noop(ctx: Any) -> None:
            records.append(record_of(ctx.job.payload, time.time()))

        return Worker(
            self.q,
            noop,
            concurrency=int(self.options.get("concurrency", 1)),
            batch=None if self.options.get("batch", 100) is None else int(self.options.get("batch", 100)),
            name="bench",
            exit_when_idle=exit_when_idle,
        )

    def run_drain(self, until: float) -> tuple[list[Record], int, str]:
        worker = self._worker(exit_when_idle=True)
        timer = threading.Timer(max(0.0, until - time.time()), worker.stop)
        timer.start()
        try:
            worker.run()
        except Exception as exc:  # noqa: BLE001 - reported as the row's note
            return self.records, 0, f"{type(exc).__name__}: {exc}"[:300]
        finally:
            timer.cancel()
        return self.records, 0, ""

    def run_until_stopped(self, stop: Any) -> tuple[list[Record], int, str]:
        worker = self._worker(exit_when_idle=False)
        watcher = threading.Thread(target=lambda: (stop.wait(), worker.stop()), daemon=True)
        watcher.start()
        try:
            worker.run()
        except Exception as exc:  # noqa: BLE001
            return self.records, 0, f"{type(exc).__name__}: {exc}"[:300]
        return self.records, 0, ""

    def take(self) -> list[Record]:  # pragma: no cover - the Worker runs its own loop
        raise NotImplementedError

    def close(self) -> None:
        self.q.close()


class JobqWorker(Jobq):
    @classmethod
    def unavailable(cls, options: dict[str, Any], env: dict[str, Any]) -> str | None:
        try:
            from jobq.worker import Worker  # noqa: F401
        except ImportError as exc:
            return f"jobq.worker.Worker is not available yet ({exc})"
        return super().unavailable(options, env)

    def consumer(self, index: int) -> Consumer:
        return WorkerConsumer(self.url, self.options)
