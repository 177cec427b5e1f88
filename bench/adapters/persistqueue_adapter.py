"""persist-queue's SQLiteAckQueue (``get`` then ``ack``), JSON serialiser, WAL + NORMAL, each
process with its own queue object on the same directory. Its ``get`` is SELECT-then-UPDATE
guarded by an in-process lock only, so across processes the same job can be handed out twice:
the harness counts those duplicates. Its blocking ``get`` is woken by an in-process event only
(else a 10 s tick), so an idle worker polls every millisecond here."""

from __future__ import annotations

import os
import time
from typing import Any

from bench.adapters.base import Adapter, Consumer
from bench.core import NotSupported, Record, record_of


def open_queue(path: str, synchronous: str, resume: bool) -> Any:
    import persistqueue
    import persistqueue.serializers.json

    q = persistqueue.SQLiteAckQueue(
        path, multithreading=True, auto_commit=True, auto_resume=resume, serializer=persistqueue.serializers.json
    )
    for conn in {id(q._getter): q._getter, id(q._putter): q._putter}.values():
        conn.execute(f"PRAGMA synchronous={synchronous}")
    return q


class PqConsumer(Consumer):
    def __init__(self, path: str, synchronous: str) -> None:
        self.q = open_queue(path, synchronous, resume=False)

    def take(self) -> list[Record]:
        import persistqueue

        try:
            item = self.q.get(block=False, raw=True)
        except persistqueue.Empty:
            return []
        claimed_at = time.time()
        self.q.ack(id=item["pqid"])
        return [record_of(item["data"], claimed_at)]

    def close(self) -> None:
        self.q.close()


class PersistQueue(Adapter):
    safe = False  # duplicate deliveries across processes (SELECT then UPDATE)

    def __init__(self, options: dict[str, Any], env: dict[str, Any]) -> None:
        super().__init__(options, env)
        self.durability = options.get("synchronous", "NORMAL")
        self.path = os.path.join(env["workdir"], f"pq_{env['run']}")
        self._q: Any = None

    @classmethod
    def unavailable(cls, options: dict[str, Any], env: dict[str, Any]) -> str | None:
        try:
            import persistqueue  # noqa: F401
        except ImportError:
            return "persist-queue is not installed (pip install -e '.[bench]')"
        return None

    def setup(self) -> None:
        self._q = open_queue(self.path, self.durability, resume=True)

    def enqueue(self, payload: dict[str, Any]) -> None:
        self._q.put(payload)

    def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        raise NotSupported

    def consumer(self, index: int) -> Consumer:
        return PqConsumer(self.path, self.durability)

    def close(self) -> None:
        if self._q is not None:
            self._q.close()
            self._q = None
