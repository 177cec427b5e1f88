"""pgqueuer on PostgreSQL: enqueue through ``SyncQueries``, and each worker runs pgqueuer's own
``QueueManager`` in drain mode (batches of 10, LISTEN/NOTIFY, its buffered acknowledgements)
with an async no-op entrypoint. Stopped at the run's time cap through ``qm.shutdown``."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

from bench.adapters.base import Adapter, Consumer
from bench.core import Record, is_lock_error, record_of

ENTRYPOINT = "noop"


class PgqConsumer(Consumer):
    def __init__(self, dsn: str) -> None:
        import psycopg
        from pgqueuer import PsycopgDriver, Queries, QueueManager

        # Connect and build the manager before the clock starts, on the loop that will run it.
        self.loop = asyncio.new_event_loop()
        self.records: list[Record] = []
        self.conn = self.loop.run_until_complete(psycopg.AsyncConnection.connect(dsn, autocommit=True))
        self.qm = QueueManager(Queries(PsycopgDriver(self.conn)))
        records = self.records

        @self.qm.entrypoint(ENTRYPOINT)
        async def noop(job: Any) -> None:
            records.append(record_of(json.loads(job.payload), time.time()))

    def run_drain(self, until: float) -> tuple[list[Record], int, str]:
        from pgqueuer.domain.types import QueueExecutionMode

        self.loop.call_later(max(0.0, until - time.time()), self.qm.shutdown.set)
        run = self.qm.run(dequeue_timeout=timedelta(seconds=1), batch_size=10, mode=QueueExecutionMode.drain)
        try:
            self.loop.run_until_complete(run)
        except Exception as exc:  # noqa: BLE001 - reported as the row's note
            return self.records, int(is_lock_error(exc)), f"{type(exc).__name__}: {exc}"[:300]
        return self.records, 0, ""

    def take(self) -> list[Record]:  # pragma: no cover - pgqueuer only runs its own loop
        raise NotImplementedError

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


class PgQueuerAdapter(Adapter):
    def __init__(self, options: dict[str, Any], env: dict[str, Any]) -> None:
        super().__init__(options, env)
        self.dsn = f"{env['dsn_base']}/{env['run']}"
        self._conn: Any = None

    @classmethod
    def unavailable(cls, options: dict[str, Any], env: dict[str, Any]) -> str | None:
        try:
            import pgqueuer  # noqa: F401
        except ImportError:
            return "pgqueuer is not installed (pip install -e '.[bench]')"
        return None if env.get("dsn_base") else "no PostgreSQL server"

    def setup(self) -> None:
        import psycopg
        from pgqueuer import PsycopgDriver, Queries
        from pgqueuer.db import SyncPsycopgDriver
        from pgqueuer.queries import SyncQueries

        async def install() -> None:
            async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                await Queries(PsycopgDriver(conn)).install()

        asyncio.run(install())
        self._conn = psycopg.connect(self.dsn, autocommit=True)
        self._queries = SyncQueries(SyncPsycopgDriver(self._conn))

    def enqueue(self, payload: dict[str, Any]) -> None:
        self._queries.enqueue(ENTRYPOINT, json.dumps(payload).encode())

    def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        n = len(payloads)
        self._queries.enqueue([ENTRYPOINT] * n, [json.dumps(p).encode() for p in payloads], [0] * n)

    def consumer(self, index: int) -> Consumer:
        return PgqConsumer(self.dsn)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
