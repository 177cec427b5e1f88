"""jobq's own worker loop (``jobq.worker.Worker``) with a no-op handler: claims in batches,
runs handlers on its threads, group-commits the outcomes, sleeps on the backend's listener.
``batch`` (default 100) and ``concurrency`` (default 1) are the Worker's own arguments."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from bench.adapters.base import Consumer
from bench.adapters.jobq_adapter import Jobq
from bench.core import Record, record_of

log = logging.getLogger("bench.observed")


class WorkerConsumer(Consumer):
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        from jobq import Queue

        self.q = Queue(url)
        self.q.counts()  # connect before the clock starts
        self.options = options
        self.records: list[Record] = []
        self._observer: Observer | None = Observer(url) if options.get("observe") else None

    def _worker(self, exit_when_idle: bool) -> Any:
        from jobq.worker import Worker

        records = self.records

        def noop(ctx: Any) -> None:
            records.append(record_of(ctx.job.payload, time.time()))

        def observed(ctx: Any) -> None:
            log.info("running")  # one JSON line per job, with the run's fields
            ctx.progress(1.0, "done")  # throttled: a job this short writes nothing
            records.append(record_of(ctx.job.payload, time.time()))

        return Worker(
            self.q,
            observed if self._observer else noop,
            concurrency=int(self.options.get("concurrency", 1)),
            batch=int(self.options.get("batch", 100)),
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
        if self._observer:
            self._observer.close()
        self.q.close()


class Observer:
    """What ``observe`` turns on around a worker: JSON logs (to /dev/null), and a Prometheus
    collector scraped every ``SCRAPE_SECONDS`` (Prometheus' default is 15 s: this is 15x that load).
    Traces are left out: they need an SDK the bench does not install (see docs/observability.md)."""

    SCRAPE_SECONDS = 1.0

    def __init__(self, url: str) -> None:
        from jobq import Queue
        from jobq.observability import logs
        from jobq.observability.metrics import JobqCollector

        self._sink = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
        handler = logging.StreamHandler(self._sink)
        handler.setFormatter(logs.JsonFormatter())
        handler.addFilter(logs.RunFieldsFilter())
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        self._handler = handler
        self._reader = Queue(url)
        self._collector = JobqCollector(self._reader)
        self._stop = threading.Event()
        self.scrapes = 0
        self._thread = threading.Thread(target=self._scrape, name="bench-scrape", daemon=True)
        self._thread.start()

    def _scrape(self) -> None:
        while not self._stop.wait(self.SCRAPE_SECONDS):
            list(self._collector.collect())
            self.scrapes += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        logging.getLogger().removeHandler(self._handler)
        self._sink.close()
        self._reader.close()


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
