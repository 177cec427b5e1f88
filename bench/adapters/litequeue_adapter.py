"""litequeue: ``put``, ``pop`` (one ``UPDATE ... RETURNING`` in an IMMEDIATE transaction) and
``done``; it sets WAL + synchronous=NORMAL itself. No wake-up: an idle worker polls every ms.
Its claim orders by message id through an index on ``status`` only, so it slows down as the
number of stored rows grows."""

from __future__ import annotations

import json
import time
from typing import Any

from bench.adapters.base import Adapter, Consumer
from bench.core import NotSupported, Record, record_of


def open_queue(path: str) -> Any:
    from litequeue import LiteQueue

    return LiteQueue(path, queue_name="bench", timeout=10.0)


class LqConsumer(Consumer):
    def __init__(self, path: str) -> None:
        self.q = open_queue(path)

    def take(self) -> list[Record]:
        message = self.q.pop()
        if message is None:
            return []
        claimed_at = time.time()
        self.q.done(message.message_id)
        return [record_of(json.loads(message.data), claimed_at)]

    def close(self) -> None:
        self.q.close()


class LiteQueueAdapter(Adapter):
    durability = "NORMAL"

    @classmethod
    def unavailable(cls, options: dict[str, Any], env: dict[str, Any]) -> str | None:
        try:
            import litequeue  # noqa: F401
        except ImportError:
            return "litequeue is not installed (pip install -e '.[bench]')"
        return None

    def setup(self) -> None:
        self._q = open_queue(self.sqlite_path)

    def enqueue(self, payload: dict[str, Any]) -> None:
        self._q.put(json.dumps(payload, separators=(",", ":")))

    def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        raise NotSupported

    def prefill(self, payloads: list[dict[str, Any]]) -> None:
        with self._q.transaction(mode="IMMEDIATE"):  # not timed: one transaction for the backlog
            for p in payloads:
                self._q.put(json.dumps(p, separators=(",", ":")))

    def consumer(self, index: int) -> Consumer:
        return LqConsumer(self.sqlite_path)

    def close(self) -> None:
        if getattr(self, "_q", None) is not None:
            self._q.close()
            self._q = None
