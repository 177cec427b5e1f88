"""Running jobq's operations on the application's own psycopg connection, in its transaction.

``Queue.enqueue(..., conn=c)`` and ``JobContext.complete(conn=c)`` pass a ``psycopg.Connection``
the application opened. The operation's statements (the same ``ops`` generators as every other
path) run in the caller's current transaction on a cursor of their own (plain tuples, whatever
the connection's row factory); nothing here begins, commits or rolls back, and nothing is retried:
a deadlock or a lost connection is the caller's to handle, as for any of its own statements.
NOTIFY is transactional in PostgreSQL: workers are woken at the caller's COMMIT, never on a rollback.

Checked first, each a one-line error: the kind (a psycopg 3 ``Connection``: an ``AsyncConnection``
is refused, and so are wrappers such as SQLAlchemy's and Django's, whose DB-API connection is the
one to pass); a closed connection; a transaction that already failed (``INERROR``: roll it back);
a connection in autocommit mode with no transaction open (each statement would commit on its own);
and that it reaches this queue's database (the same database name on the same running server,
``current_database()`` and ``pg_postmaster_start_time()``, read once per connection).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from jobq.errors import ConfigError, StorageError

Identity = tuple[Any, ...]
Q_IDENTITY = "SELECT current_database(), pg_postmaster_start_time()"

WRONG_KIND = (
    "conn must be a psycopg.Connection (psycopg 3) to {where}, not {kind} "
    "(SQLAlchemy and Django: pass their DB-API connection, see docs/transactions.md)"
)


def identity(conn: psycopg.Connection[Any]) -> Identity:
    """Which database on which running server ``conn`` reaches (one round trip)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(Q_IDENTITY).fetchone()
    return tuple(row) if row else ()


class CallerCheck:
    """Checks an application's connection before jobq's statements join its transaction.

    Args:
        where: ``host:port/dbname`` of this queue, for messages.
        ours: reads this queue's own identity on a connection of jobq's (called again once when
            a connection seems to differ: the server may have restarted since).
    """

    def __init__(self, where: str, ours: Callable[[], Identity]) -> None:
        self.where = where
        self._ours = ours
        self._our_identity: Identity | None = None
        # Connections already found to reach our database: one round trip per connection, not per call.
        self._known: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._known_async: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

    def check(self, conn: object) -> psycopg.Connection[Any]:
        if isinstance(conn, psycopg.AsyncConnection):
            raise ConfigError(
                f"conn is a psycopg.AsyncConnection: pass a psycopg.Connection to {self.where} "
                "(or use jobq.AsyncQueue, which takes an AsyncConnection)"
            )
        if not isinstance(conn, psycopg.Connection):
            raise ConfigError(
                WRONG_KIND.format(where=self.where, kind=f"{type(conn).__module__}.{type(conn).__name__}")
            )
        self._check_state(conn)
        if conn not in self._known:
            self._same_database(conn)
            self._known.add(conn)
        return conn

    async def acheck(self, conn: object) -> psycopg.AsyncConnection[Any]:
        """``check`` for ``jobq.AsyncQueue``: the same rules for a ``psycopg.AsyncConnection``."""
        if not isinstance(conn, psycopg.AsyncConnection):
            kind = f"{type(conn).__module__}.{type(conn).__name__}"
            raise ConfigError(f"conn must be a psycopg.AsyncConnection to {self.where} (AsyncQueue), not {kind}")
        self._check_state(conn)
        if conn not in self._known_async:
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(Q_IDENTITY)
                row = await cur.fetchone()
            theirs = tuple(row) if row else ()
            if self._our_identity is None or theirs != self._our_identity:
                self._our_identity = await asyncio.to_thread(self._ours)
            if theirs != self._our_identity:
                raise ConfigError(
                    f"conn reaches database {theirs[0] if theirs else '?'} of another server or name, not {self.where}"
                )
            self._known_async.add(conn)
        return conn

    def _check_state(self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
        if conn.closed:
            raise StorageError("conn is closed")
        status = conn.info.transaction_status
        if status == TransactionStatus.INERROR:
            raise StorageError("conn's transaction has failed (an earlier statement raised): roll it back first")
        if status == TransactionStatus.ACTIVE:
            raise StorageError("conn is busy with another command")
        if status == TransactionStatus.UNKNOWN:
            raise StorageError("conn's connection is broken")
        if status == TransactionStatus.IDLE and conn.autocommit:
            raise ConfigError(
                "conn is in autocommit mode with no transaction open: use `with conn.transaction():`, "
                "jobq joins your transaction and never commits it"
            )

    def _same_database(self, conn: psycopg.Connection[Any]) -> None:
        theirs = identity(conn)
        if self._our_identity is None or theirs != self._our_identity:
            self._our_identity = self._ours()  # read afresh: the server may have restarted since
        if theirs != self._our_identity:
            raise ConfigError(
                f"conn reaches database {theirs[0] if theirs else '?'} of another server or name, not {self.where}"
            )
