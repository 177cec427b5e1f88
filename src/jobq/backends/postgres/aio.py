"""PostgreSQL from asyncio, natively: ``jobq.AsyncQueue``'s store and its finish listener.

- ``AsyncPostgresStore`` is ``SqlStore`` (every operation written once, in ``store.py`` over the
  ``ops`` generators) with a ``_run_plan`` that returns a coroutine: each store method then
  hands back an awaitable that runs the very same plan of transactions (``store.Plan``: a claim
  under flow control takes two, a rescue reads before it writes), each operation driven on a
  ``psycopg.AsyncConnection`` from a ``psycopg_pool.AsyncConnectionPool``. No thread, no second
  copy of any rule: the one-statement forms, the retries after a deadlock or a lost connection and
  the settling of an unknown outcome are ``PostgresBackend._run``'s, step by step.
- ``AsyncFinishHub`` is ``AsyncQueue.wait``'s line: one ``LISTEN`` on the schema's done channel
  per ``AsyncQueue`` (not one per waiter), read by a task on the loop, which resolves the futures
  of the waiters of the ids each notification names.

The URL's options apply as for the blocking backend: the schema (the dialect's qualified tables
and channels), ``pooler=transaction`` (no prepared statements unless ``prepare_threshold`` says
so; no LISTEN through the pooler: waiters poll, or listen on ``listen_url`` when it is given).

Limits: the pool belongs to the event loop it was opened in (psycopg's rule). Used from another
loop once the first one is closed (``asyncio.run`` per call), the store opens a fresh pool; used
from two live loops at once, it raises ConfigError.
"""

from __future__ import annotations

import asyncio
import random
import select
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from jobq.backends import ops
from jobq.backends.common import process_id
from jobq.backends.postgres import (
    DEADLOCK_RETRIES,
    POOL_MIN_SIZE,
    Q_NOTIFY,
    AloneStatements,
    PostgresBackend,
    PostgresDialect,
    _aroll_back_open,
    _Attempt,
    _connect_kwargs,
    _is_server_error,
    _Lost,
    _lost_again,
    _one_more_loss,
    aexecute_several,
    alone_statement,
    outcome_unknown,
    storage_error,
)
from jobq.backends.statements import Params
from jobq.backends.store import MakeOp, SqlStore, Work
from jobq.errors import ConfigError, StorageError

T = TypeVar("T")
AsyncConnection = psycopg.AsyncConnection[tuple[Any, ...]]
AsyncCursor = psycopg.AsyncCursor[tuple[Any, ...]]


class AsyncPooledConnection(AloneStatements, psycopg.AsyncConnection[tuple[Any, ...]]):
    """``postgres.PooledConnection`` for asyncio: one cursor for all of jobq's statements on it,
    but the one-statement writes sent alone (``arun_alone``)."""

    _statement_cursor: AsyncCursor | None = None

    @classmethod
    async def connect(cls, *args: Any, **kwargs: Any) -> Self:
        started = time.monotonic()  # as PooledConnection.connect
        conn = await super().connect(*args, **kwargs)
        conn.connecting_since = started
        return conn

    def statement_cursor(self) -> AsyncCursor:
        cur = self._statement_cursor
        if cur is None:
            # Binary results, as the blocking store's (see PooledConnection).
            cur = self._statement_cursor = self.cursor(binary=True)
        return cur

    async def arun_alone(self, statement: str, params: Params, attempt: _Attempt) -> list[tuple[Any, ...]]:
        """``PooledConnection.run_alone``, its waits awaited (``AloneStatements._alone_steps``)."""
        steps = self._alone_steps(statement, params, attempt)
        async with self.lock:
            try:
                wait = next(steps)
                while True:
                    wait = steps.send(await self.wait(wait))
            except StopIteration as done:
                rows: list[tuple[Any, ...]] = done.value
                return rows


ASYNC_POOL_MAX_SIZE = 8
"""Connections of an ``AsyncQueue``'s pool: each call holds one for one transaction (mostly one
round trip), so a few serve many concurrent requests; more wait for one (the URL's ``pool_timeout``)."""
LISTEN_RETRY_SECONDS = 1.0
"""After the finish listener could not connect, waiters poll this long before it tries again."""


def arunner(cur: AsyncCursor, channel: str, done_sql: str = "") -> Callable[[ops.Command], Awaitable[ops.Rows]]:
    """``postgres._runner`` for an asyncio cursor: runs one command of an operation on ``cur``."""

    async def run(command: ops.Command) -> ops.Rows:
        if isinstance(command, ops.Exec):
            if command.several:
                return await aexecute_several(cur, command)
            await cur.execute(command.sql, command.params or None)
            return await cur.fetchall() if cur.rownumber is not None else []
        if isinstance(command, ops.ExecMany):
            if not command.params:
                return []
            if len(command.params) == 1:
                await cur.execute(command.sql, command.params[0])
                return await cur.fetchall() if cur.rownumber is not None else []
            await cur.executemany(command.sql, command.params, returning=True)
            rows: ops.Rows = []
            while True:
                if cur.rownumber is not None:
                    rows.extend(await cur.fetchall())
                if not cur.nextset():
                    return rows
        for queue in sorted(command.queues):  # delivered at commit
            await cur.execute(Q_NOTIFY, (channel, queue))
        if command.finished and done_sql:  # only for jobs someone waits for (postgres._runner)
            await cur.execute(done_sql, {"ids": sorted(command.finished)})
        return []

    return run


def _input_waiting(conn: AsyncConnection) -> bool:
    """Whether the server sent anything on this idle connection (a poll, not a round trip)."""
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return bool(readable)


async def _asend_all(
    op: ops.Op[T], command: ops.Command, run: Callable[[ops.Command], Awaitable[ops.Rows]], *, only_alone: bool = False
) -> T:
    """``postgres._send_all`` awaited."""
    while True:
        try:
            command = op.send(await run(command))
        except StopIteration as stop:
            result: T = stop.value
            return result
        if only_alone and not (isinstance(command, ops.Exec) and command.alone):
            raise RuntimeError("an operation yielded a command in a transaction after one it sent alone")


async def adrive_transaction(
    conn: AsyncPooledConnection, make: MakeOp[T], attempt: _Attempt, channel: str, done_sql: str, *, write: bool = True
) -> T:
    """``postgres._drive`` on an ``AsyncConnection`` (autocommit): a command sent ``alone`` is its
    own transaction (one round trip; several may follow one another), anything else runs in
    BEGIN ... COMMIT; a read sends each statement alone (``postgres._drive`` says why)."""
    op = make()
    try:
        command = next(op)
    except StopIteration as stop:
        empty: T = stop.value
        return empty
    run = arunner(conn.statement_cursor(), channel, done_sql)
    if not write:
        return await _asend_all(op, command, run)
    if isinstance(command, ops.Exec) and command.alone:
        if _input_waiting(conn):  # the server ended this idle connection: find out before sending
            await conn.execute("SELECT 1")

        async def run_alone(command: ops.Command) -> ops.Rows:
            # As postgres._drive: a one-statement write without the cursor (arun_alone).
            statement = alone_statement(command)
            if statement is not None:
                return await conn.arun_alone(*statement, attempt)
            attempt.committing = True
            return await run(command)

        # A keyed enqueue that lost a race sends its statement again, alone too.
        return await _asend_all(op, command, run_alone, only_alone=True)
    # postgres._in_transaction: BEGIN with the first statement, the wake-ups with COMMIT.
    deferred: list[ops.Command] = []

    async def run_or_defer(command: ops.Command) -> ops.Rows:
        if isinstance(command, ops.Notify):
            deferred.append(command)
            return []
        return await run(command)

    cur = conn.statement_cursor()
    try:
        rows = await _abegin_with(conn, command, run_or_defer)
        try:
            command = op.send(rows)
        except StopIteration as stop:
            result: T = stop.value
        else:
            result = await _asend_all(op, command, run_or_defer)
        attempt.committing = True
        if deferred:
            async with conn.pipeline():
                for notify in deferred:
                    await run(notify)
                await cur.execute(b"COMMIT")
        else:
            await cur.execute(b"COMMIT")
    except BaseException:
        await _aroll_back_open(conn)
        raise
    return result


async def _abegin_with(
    conn: AsyncPooledConnection, command: ops.Command, run: Callable[[ops.Command], Awaitable[ops.Rows]]
) -> ops.Rows:
    """``postgres._begin_with`` awaited."""
    cur = conn.statement_cursor()
    plain = isinstance(command, ops.Exec) and not command.several
    if not plain and not (isinstance(command, ops.ExecMany) and command.params):
        await cur.execute(b"BEGIN")
        return await run(command)
    async with conn.pipeline():  # its end syncs it: the results reach the cursor (the last one's)
        await cur.execute(b"BEGIN")
        if isinstance(command, ops.ExecMany):
            await cur.executemany(command.sql, command.params, returning=True)  # syncs the pipeline itself
        elif isinstance(command, ops.Exec):
            await cur.execute(command.sql, command.params or None)
    rows: ops.Rows = []
    while True:  # an ExecMany's every parameter set
        if cur.rownumber is not None:
            rows.extend(await cur.fetchall())
        if not cur.nextset():
            return rows


class AsyncPostgresStore(SqlStore):
    """Every ``SqlStore`` method as a coroutine on an ``AsyncConnectionPool`` (module docstring).

    Each method returns what ``SqlStore``'s returns, as a coroutine: ``await store.claim(...)``,
    also when it needs no transaction (an empty batch)."""

    single_host = False
    dialect: PostgresDialect

    def __init__(self, backend: PostgresBackend) -> None:
        self.url = backend.url
        self.dialect = backend.dialect
        self._backend = backend
        self._conninfo = backend.options.libpq_url
        self._kwargs = _connect_kwargs(
            self._conninfo,
            backend.options.prepare_threshold,
            session=not backend.options.behind_transaction_pooler,
            lock_timeout_ms=backend.options.lock_timeout_ms,
        )
        self._pool: AsyncConnectionPool[AsyncPooledConnection] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = -1

    def _run_plan(self, work: Work[T]) -> T:
        # A coroutine in place of the result: every SqlStore method returns it for its caller to await.
        return self._arun_plan(work)  # type: ignore[return-value]

    async def _arun_plan(self, work: Work[T]) -> T:
        """``SqlStore._run_plan`` awaited: the same plan, each transaction run by ``_arun``."""
        if isinstance(work, tuple):
            make, write, on_unknown = work
            return await self._arun(make, write=write, on_unknown=on_unknown)
        try:
            make, write, on_unknown = next(work)
            while True:
                try:
                    done = await self._arun(make, write=write, on_unknown=on_unknown)
                except StorageError as exc:
                    make, write, on_unknown = work.throw(exc)
                else:
                    make, write, on_unknown = work.send(done)
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _get_pool(self) -> AsyncConnectionPool[AsyncPooledConnection]:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop and self._pid == process_id():
            return self._pool
        # A pool whose loop is gone (asyncio.run per call) is dropped: its connections close as
        # they are collected. One whose loop still runs cannot be shared (psycopg's rule).
        if (
            self._pool is not None
            and self._pid == process_id()
            and self._loop is not None
            and not self._loop.is_closed()
        ):
            raise ConfigError(
                "this AsyncQueue's connections belong to another running event loop: open one AsyncQueue per loop"
            )
        pool: AsyncConnectionPool[AsyncPooledConnection] = AsyncConnectionPool(
            self._conninfo,
            connection_class=AsyncPooledConnection,
            kwargs={"autocommit": True, **self._kwargs},
            min_size=POOL_MIN_SIZE,
            max_size=ASYNC_POOL_MAX_SIZE,
            timeout=self._backend.options.pool_timeout_seconds,
            name="jobq-async",
            open=False,
        )
        await pool.open(wait=False)
        self._pool, self._loop, self._pid = pool, loop, process_id()
        self._backend.start_lock_watch()
        return pool

    @property
    def pool(self) -> AsyncConnectionPool[AsyncPooledConnection] | None:
        """The pool in use (None before the first call): for tests and diagnostics."""
        return self._pool

    async def _arun(self, make: MakeOp[T], *, write: bool, on_unknown: MakeOp[T] | None = None) -> T:
        """``PostgresBackend._run`` awaited: the same retries, the same settling of an unknown outcome."""
        lost: _Lost | None = None
        deadlocks = 0
        while True:
            pool = await self._get_pool()
            attempt = _Attempt()
            conn: AsyncPooledConnection | None = None
            try:
                conn = await pool.getconn()  # not pool.connection(): see PostgresBackend._run
                running = self._backend.in_flight  # as PostgresBackend._run
                running[conn] = time.monotonic()
                try:
                    d = self.dialect
                    return await adrive_transaction(conn, make, attempt, d.channel, d.sql["notify_waited"], write=write)
                finally:
                    del running[conn]
                    await pool.putconn(conn)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                deadlocks += 1
                if deadlocks > DEADLOCK_RETRIES:
                    raise storage_error(exc, self.url) from None
                await asyncio.sleep(0.01 * deadlocks * (0.5 + random.random()))
            except PoolTimeout:
                raise await asyncio.to_thread(self._backend._cannot_connect) from None
            except psycopg.errors.LockNotAvailable:  # as PostgresBackend._run
                raise await asyncio.to_thread(self._backend.gave_up) from None
            except psycopg.OperationalError as exc:
                if write and attempt.committing and on_unknown is not None:
                    await pool.check()
                    return await self._arun(on_unknown, write=True)
                if _lost_again(lost, conn) or (write and attempt.committing) or _is_server_error(exc):
                    if write and attempt.committing:
                        raise outcome_unknown(exc, self.url) from None
                    raise storage_error(exc, self.url) from None
                lost = _one_more_loss(lost)
                await pool.check()
            except psycopg.errors.IdleInTransactionSessionTimeout as exc:  # see PostgresBackend._run
                if _lost_again(lost, conn):
                    raise storage_error(exc, self.url) from None
                lost = _one_more_loss(lost)
                await pool.check()
            except psycopg.Error as exc:
                raise storage_error(exc, self.url) from None

    def finish_hub(self) -> AsyncFinishHub | None:
        """``AsyncQueue.wait``'s line: LISTEN on ``listen_url`` when given, else on the main URL;
        behind a transaction pooler without it, None (waiters poll), as ``finish_waiter``."""
        channel = self.dialect.done_channel
        options = self._backend.options
        if options.listen_url is not None:
            return AsyncFinishHub(options.listen_url, _connect_kwargs(options.listen_url), channel)
        if options.behind_transaction_pooler:
            return None
        return AsyncFinishHub(self._conninfo, self._kwargs, channel)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._loop is asyncio.get_running_loop() and self._pid == process_id():
            await pool.close(timeout=5.0)

    def close(self) -> None:  # the Protocol's; AsyncQueue calls aclose
        self._pool = None


class AsyncFinishHub:
    """One ``LISTEN <done channel>`` connection for all of an ``AsyncQueue``'s waiters.

    ``subscribe(job_id)`` returns once the LISTEN is in place: a finish committed after it returns
    resolves the future it gives (None: no line, poll). A lost connection resolves every future
    (the waiters read their jobs again; the next ``subscribe`` reconnects)."""

    def __init__(self, url: str, kwargs: dict[str, Any], channel: str) -> None:
        self._url = url
        self._kwargs = kwargs
        self._channel = channel
        self._conn: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[int, set[asyncio.Future[None]]] = {}
        self._retry_at = 0.0

    async def subscribe(self, job_id: int) -> asyncio.Future[None] | None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop (asyncio.run per call): start over on it
            self._conn, self._task, self._lock, self._loop, self._waiters = None, None, asyncio.Lock(), loop, {}
        assert self._lock is not None
        async with self._lock:
            if self._conn is None and loop.time() >= self._retry_at:
                await self._connect(loop)
        if self._conn is None:
            return None
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        return future

    def unsubscribe(self, job_id: int, future: asyncio.Future[None] | None) -> None:
        if future is None:
            return
        waiting = self._waiters.get(job_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiters[job_id]

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            conn: AsyncConnection = await psycopg.AsyncConnection.connect(self._url, autocommit=True, **self._kwargs)
        except psycopg.Error:
            self._retry_at = loop.time() + LISTEN_RETRY_SECONDS
            return
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except psycopg.Error:
            await conn.close()
            self._retry_at = loop.time() + LISTEN_RETRY_SECONDS
            return
        self._conn = conn
        self._task = loop.create_task(self._pump(conn))

    async def _pump(self, conn: AsyncConnection) -> None:
        try:
            async for notify in conn.notifies():
                for part in notify.payload.split(","):
                    if part.isdigit():
                        for future in self._waiters.pop(int(part), ()):
                            if not future.done():
                                future.set_result(None)
        except psycopg.Error:
            pass
        finally:
            if self._conn is conn:
                self._conn = None
            for futures in self._waiters.values():  # the line broke: everyone reads again
                for future in futures:
                    if not future.done():
                        future.set_result(None)
            self._waiters.clear()

    async def aclose(self) -> None:
        task, conn = self._task, self._conn
        self._task = self._conn = None
        if task is not None and self._loop is asyncio.get_running_loop():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if conn is not None and self._loop is asyncio.get_running_loop():
            await conn.close()
