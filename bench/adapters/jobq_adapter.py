"""jobq through its public API, on SQLite (``synchronous`` option) or PostgreSQL (``dsn``).

``mode``: ``"per-job"`` is ``q.claim(worker_id)`` then ``q.complete(job)``, one job per call;
``"batched"`` is ``q.claim_many(worker_id, 100)`` then ``q.complete_many(...)``. An idle worker
sleeps on the backend's listener (registered with its wake address), like jobq's own worker.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

from bench.adapters.base import Adapter, Consumer
from bench.core import Record, record_of

BATCH = 100


class JobqConsumer(Consumer):
    def __init__(self, url: str, batched: bool, index: int) -> None:
        from jobq import Queue, WorkerInfo

        self.q = Queue(url)
        self.batched = batched
        self.worker_id = f"bench-{os.getpid()}-{index}-{uuid.uuid4().hex[:8]}"
        self.listener = self.q.listener(self.worker_id, ["default"])
        now = time.time()
        self.q.register_worker(
            WorkerInfo(
                id=self.worker_id,
                name="bench",
                host=socket.gethostname(),
                pid=os.getpid(),
                queues=("default",),
                started_at=now,
                last_seen_at=now,
                wake_address=self.listener.address,
            )
        )

    def take(self) -> list[Record]:
        if self.batched:
            jobs = self.q.claim_many(self.worker_id, BATCH)
            claimed_at = time.time()
            if jobs:
                self.q.complete_many([(j, None) for j in jobs])
            return [record_of(j.payload, claimed_at) for j in jobs]
        job = self.q.claim(self.worker_id)
        if job is None:
            return []
        claimed_at = time.time()
        self.q.complete(job)
        return [record_of(job.payload, claimed_at)]

    def wait(self, timeout: float) -> None:
        self.listener.wait(timeout)

    def close(self) -> None:
        self.listener.close()
        self.q.worker_stopped(self.worker_id)
        self.q.close()


class Jobq(Adapter):
    def __init__(self, options: dict[str, Any], env: dict[str, Any]) -> None:
        super().__init__(options, env)
        self.batched = options.get("mode", "per-job") == "batched"
        if options.get("backend") == "postgres":
            self.url = f"{env['dsn_base']}/{env['run']}"
        else:
            self.durability = options.get("synchronous", "FULL")
            query = "" if self.durability == "FULL" else f"?synchronous={self.durability}"
            self.url = f"sqlite:///{self.sqlite_path}{query}"
        self._q: Any = None

    @classmethod
    def unavailable(cls, options: dict[str, Any], env: dict[str, Any]) -> str | None:
        if options.get("backend") == "postgres":
            if not env.get("dsn_base"):
                return "no PostgreSQL server"
            try:
                import jobq.backends.postgres  # noqa: F401
            except ImportError as exc:
                return f"jobq's PostgreSQL backend is not available yet ({exc})"
        return None

    @property
    def q(self) -> Any:
        if self._q is None:
            from jobq import Queue

            self._q = Queue(self.url)
        return self._q

    def setup(self) -> None:
        self.q.counts()  # opens (and migrates) the fresh store

    def enqueue(self, payload: dict[str, Any]) -> None:
        self.q.enqueue(payload)

    def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        self.q.enqueue_many(payloads)

    def consumer(self, index: int) -> Consumer:
        return JobqConsumer(self.url, self.batched, index)

    def close(self) -> None:
        if self._q is not None:
            self._q.close()
            self._q = None
