"""huey's SqliteHuey, through its own task API: ``task(payload)`` enqueues, and a worker does what
huey's consumer does (``huey.dequeue()`` then ``huey.execute(task)``). huey deletes the row at
dequeue, so a crash between dequeue and the end of the task loses the job (at-most-once). Its
SQLite storage has no wake-up: an idle worker polls every millisecond here (huey's own consumer
polls every 0.1 s and backs off, which gives much worse latency)."""

from __future__ import annotations

import time
from typing import Any

from bench.adapters.base import Adapter, Consumer
from bench.core import NotSupported, Record, record_of

_records: list[Record] = []


def noop(payload: dict[str, Any]) -> None:
    """The job: record that it ran (in this worker process)."""
    _records.append(record_of(payload, time.time()))


def make_huey(path: str, synchronous: str) -> Any:
    from huey import SqliteHuey
    from huey.storage import SqliteStorage

    class Storage(SqliteStorage):  # huey only offers FULL (default) or OFF; NORMAL needs a subclass
        def _create_connection(self) -> Any:
            conn = super()._create_connection()
            conn.execute(f"pragma synchronous={synchronous}")
            return conn

    huey = SqliteHuey("bench", filename=path, storage_class=Storage if synchronous != "FULL" else None)
    task = huey.task(name="noop")(noop)
    return huey, task


class HueyConsumer(Consumer):
    def __init__(self, path: str, synchronous: str) -> None:
        self.huey, _ = make_huey(path, synchronous)

    def take(self) -> list[Record]:
        task = self.huey.dequeue()
        if task is None:
            return []
        self.huey.execute(task)
        out = list(_records)
        _records.clear()
        return out


class HueyAdapter(Adapter):
    safe = False  # at-most-once: deleted at dequeue

    def __init__(self, options: dict[str, Any], env: dict[str, Any]) -> None:
        super().__init__(options, env)
        self.durability = options.get("synchronous", "FULL")
        self._huey: Any = None

    @classmethod
    def unavailable(cls, options: dict[str, Any], env: dict[str, Any]) -> str | None:
        try:
            import huey  # noqa: F401
        except ImportError:
            return "huey is not installed (pip install -e '.[bench]')"
        return None

    def setup(self) -> None:
        self._huey, self._task = make_huey(self.sqlite_path, self.durability)

    def enqueue(self, payload: dict[str, Any]) -> None:
        self._task(payload)

    def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        raise NotSupported

    def prefill(self, payloads: list[dict[str, Any]]) -> None:
        # Not timed: huey has no batch enqueue, so write its serialised tasks in one transaction.
        storage = self._huey.storage
        blobs = [self._huey.serialize_task(self._task.s(p)) for p in payloads]
        with storage.db(commit=True) as curs:
            curs.executemany(
                "insert into task (queue, data, priority) values (?, ?, ?)", [(storage.name, b, 0) for b in blobs]
            )

    def consumer(self, index: int) -> Consumer:
        return HueyConsumer(self.sqlite_path, self.durability)

    def close(self) -> None:
        if self._huey is not None:
            self._huey.storage.close()
