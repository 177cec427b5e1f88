"""procrastinate on PostgreSQL: ``defer`` / ``batch_defer`` from the harness, and each worker runs
procrastinate's own worker (``run_worker_async(wait=False)``: it stops when the queue is empty)
with an async no-op task, concurrency 1, stopped at the run's time cap."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from bench.adapters.base import Adapter, Consumer
from bench.core import Record, is_lock_error

_records: list[Record] = []


def make_app(dsn: str) -> tuple[Any, Any]:
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop(n: int, t: float, path: str, pad: str) -> None:
        _records.append((n, t, time.time()))

    return app, noop


class ProcrastinateConsumer(Consumer):
    def __init__(self, dsn: str) -> None:
        # Open the app (its connection pool) before the clock starts, on the loop that runs it.
        self.app, _ = make_app(dsn)
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.app.open_async())

    def run_drain(self, until: float) -> tuple[list[Record], int, str]:
        worker = self.app.run_worker_async(wait=False, concurrency=1, install_signal_handlers=False)
        try:
            with contextlib.suppress(TimeoutError):
                self.loop.run_until_complete(asyncio.wait_for(worker, timeout=max(0.1, until - time.time())))
        except Exception as exc:  # noqa: BLE001 - reported as the row's note
            return list(_records), int(is_lock_error(exc)), f"{type(exc).__name__}: {exc}"[:300]
        return list(_records), 0, ""

    def take(self) -> list[Record]:  # pragma: no cover - procrastinate only runs its own loop
        raise NotImplementedError

    def close(self) -> None:
        self.loop.run_until_complete(self.app.close_async())
        self.loop.close()


class Procrastinate(Adapter):
    def __init__(self, options: dict[str, Any], env: dict[str, Any]) -> None:
        super().__init__(options, env)
        self.dsn = f"{env['dsn_base']}/{env['run']}"
        self._app: Any = None

    @classmethod
    def unavailable(cls, options: dict[str, Any], env: dict[str, Any]) -> str | None:
        try:
            import procrastinate  # noqa: F401
        except ImportError:
            return "procrastinate is not installed (pip install -e '.[bench]')"
        return None if env.get("dsn_base") else "no PostgreSQL server"

    def setup(self) -> None:
        self._app, self._task = make_app(self.dsn)
        self._app.open()
        self._app.schema_manager.apply_schema()

    def enqueue(self, payload: dict[str, Any]) -> None:
        self._task.defer(**payload)

    def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        self._task.batch_defer(*payloads)

    def consumer(self, index: int) -> Consumer:
        return ProcrastinateConsumer(self.dsn)

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
