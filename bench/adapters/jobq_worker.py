"""jobq's own worker loop (``jobq.worker.Worker``) with a no-op handler: claims in batches,
runs handlers on its threads, group-commits the outcomes, sleeps on the backend's listener.
``batch`` (default 100; None: the Worker's default, one per free thread plus jobs claimed ahead
while jobs are short) and ``concurrency`` (default 1) are the Worker's own arguments."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from bench.adapters.base import Consumer
from bench.adapters.jobq_adapter import Jobq
from bench.core import Record, cpu_seconds, record_of


class WorkerConsumer(Consumer):
    def __init__(self, url: str, options: dict[str, Any], index: int = 0) -> None:
        from jobq import Queue

        self.q = Queue(url)
        self.q.counts()  # connect before the clock starts
        self.options = options
        self.records: list[Record] = []
        observe = options.get("observe")
        # ``observe``: True for every part, or a list of parts (``logs``, ``progress``,
        # ``exporter``) to measure one alone (bench/overhead.py).
        parts = set(Observer.PARTS if observe is True else observe or ())
        self._observer: Observer | None = Observer(url, index == 0, parts) if parts else None
        self._progress = "progress" in parts

    def _worker(self, exit_when_idle: bool) -> Any:
        from jobq.worker import Worker

        records = self.records

        def noop(ctx: Any) -> None:
            records.append(record_of(ctx.job.payload, time.time()))

        def observed(ctx: Any) -> None:
            ctx.progress(1.0, "done")  # throttled: a job this short writes nothing
            records.append(record_of(ctx.job.payload, time.time()))

        return Worker(
            self.q,
            observed if self._progress else noop,
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

    def settle(self) -> None:
        if self._observer:
            self._observer.settle()

    def side_cpu_seconds(self) -> float:
        """The exporter's CPU, counted with this worker's (bench.core.worker_main)."""
        return self._observer.side_cpu_seconds() if self._observer else 0.0

    def close(self) -> None:
        if self._observer:
            self._observer.close()
        self.q.close()


class Observer:
    """What ``observe`` turns on, as it runs in production: every worker process logs JSON (to
    /dev/null) and its handler reports progress; the first one also starts ``jobq metrics`` in a
    process of its own and scrapes it every ``SCRAPE_SECONDS`` (Prometheus' default is 15 s: this
    is 15 times that load). Traces are left out: they need an SDK the bench does not install.

    The scraper stands for Prometheus, a process of its own: its thread's CPU (the HTTP client)
    is taken out of the worker's (``client_cpu``), and ``settle`` reads the regular scrapes
    instead of adding its own (four a second made the exporter serve five times the stated
    load while the run was being settled)."""

    SCRAPE_SECONDS = 1.0
    START_SECONDS = 60.0
    SETTLE_SECONDS = 10.0
    """Long enough for two regular scrapes more than FOLLOW_SECONDS apart after the follower caught up."""
    FOLLOW_SECONDS = 1.2
    """A little more than the exporter's follower interval (``METRICS_FOLLOW_SECONDS_DEFAULT``)."""
    PARTS = ("logs", "progress", "exporter")

    def __init__(self, url: str, first: bool, parts: set[str]) -> None:
        from jobq.observability import logs

        self._sink = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
        self._handler: logging.Handler | None = None
        if "logs" in parts:
            handler = logging.StreamHandler(self._sink)
            handler.setFormatter(logs.JsonFormatter())
            handler.addFilter(logs.RunFieldsFilter())
            root = logging.getLogger()
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            self._handler = handler
        exporter = first and "exporter" in parts
        self._stop = threading.Event()
        self._exporter: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.scrapes = 0
        self.client_cpu = 0.0
        """CPU seconds the scraping thread spent (the HTTP client: Prometheus' work, not jobq's)."""
        self._latest = threading.Condition()
        self._text: str | None = None
        self._texts = 0  # scrapes read by the scraping thread, under _latest
        if exporter:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self._port = int(s.getsockname()[1])
            command = "import sys; from jobq.cli import main; sys.exit(main())"
            self._exporter = subprocess.Popen(
                [sys.executable, "-c", command, "metrics", "--db", url, "--port", str(self._port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            # Serving before the clock starts: its start-up (imports) is not the run's cost.
            deadline = time.monotonic() + self.START_SECONDS
            while not self._scrape_once():
                if time.monotonic() > deadline or self._exporter.poll() is not None:
                    raise RuntimeError("jobq metrics did not start serving")
                time.sleep(0.05)
            self._thread = threading.Thread(target=self._scrape, name="bench-scrape", daemon=True)
            self._thread.start()

    def _scrape_once(self) -> bool:
        return self._fetch() is not None

    def _fetch(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self._port}/metrics", timeout=10) as r:
                text: str = r.read().decode()
        except OSError:
            return None  # not listening yet
        self.scrapes += 1
        return text

    def settle(self) -> None:
        """Wait (a few seconds at most) until the exporter has counted every event and every
        completion of the run: its follower reads them once a second, and the run's CPU must
        include that work (waiting for the events alone left the last second's completions
        out, most of a short run's). Read from the regular scrapes only: a count of the store
        here would be this process's CPU, inside the measured run, and scrapes of its own would
        add load the row does not claim."""
        if self._exporter is None:
            return
        deadline = time.monotonic() + self.SETTLE_SECONDS
        seen: tuple[float, float] | None = None  # (completed, since when) once nothing runs
        seen_text = self._texts
        while time.monotonic() < deadline:
            with self._latest:
                self._latest.wait_for(
                    lambda last=seen_text: self._texts != last, timeout=max(0.0, deadline - time.monotonic())
                )
                seen_text, text = self._texts, self._text or ""
            # The scrape itself counts nothing (serve() leaves that to the follower): "behind
            # 0" means the follower has read up to the newest event.
            if "\njobq_metrics_events_behind 0.0\n" in text and _sum(text, "jobq_jobs_processing{") == 0:
                done = _sum(text, "jobq_completed_total{")
                if seen is None or seen[0] != done:
                    seen = (done, time.monotonic())
                elif time.monotonic() - seen[1] > self.FOLLOW_SECONDS:  # a follower round added none
                    return

    def _scrape(self) -> None:
        while not self._stop.wait(self.SCRAPE_SECONDS):
            before = time.thread_time()
            text = self._fetch()
            self.client_cpu += time.thread_time() - before
            if text is not None:
                with self._latest:
                    self._text, self._texts = text, self._texts + 1
                    self._latest.notify_all()

    def side_cpu_seconds(self) -> float:
        """CPU seconds the exporter process used so far (user + system, all its threads)."""
        if self._exporter is None:
            return 0.0
        try:
            exporter = cpu_seconds(self._exporter.pid)
        except OSError:
            exporter = 0.0  # already gone
        # The scraping thread's CPU is in this process's own figure: taken out here, as if
        # Prometheus scraped from a process of its own.
        return exporter - self.client_cpu

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        if self._exporter:
            self._exporter.terminate()
            self._exporter.wait(timeout=30)
        if self._handler:
            logging.getLogger().removeHandler(self._handler)
        self._sink.close()


def _sum(text: str, prefix: str) -> float:
    """The sum over labels of one metric in a scrape (``prefix``: its name and ``{``)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


class JobqWorker(Jobq):
    @classmethod
    def unavailable(cls, options: dict[str, Any], env: dict[str, Any]) -> str | None:
        try:
            from jobq.worker import Worker  # noqa: F401
        except ImportError as exc:
            return f"jobq.worker.Worker is not available yet ({exc})"
        return super().unavailable(options, env)

    def consumer(self, index: int) -> Consumer:
        return WorkerConsumer(self.url, self.options, index)
