"""Running jobq's operations on the application's own SQLite connection, in its transaction.

``Queue.enqueue(..., conn=c)`` and ``JobContext.complete(conn=c)`` pass an ``apsw.Connection``
or a stdlib ``sqlite3.Connection`` that the application opened on the same database file. The
operation's statements (the same ``ops`` generators as every other path) run in the caller's
current transaction; nothing here begins, commits or rolls back.

What differs between the two drivers, and what is checked first:

- **apsw** has no implicit transactions: the caller must have said ``BEGIN`` (or be inside
  ``with conn:``); a connection in autocommit mode would commit each statement on its own, so
  it is refused. Its row tracer is set aside while jobq's statements run (their rows are tuples).
- **sqlite3** (stdlib) is refused unless it runs the very SQLite library apsw runs (apsw built
  against the system's shared library, same version): see "two copies of SQLite" below. Then, in
  its default (legacy) mode, it begins a transaction implicitly before the
  first INSERT/UPDATE: a connection with no transaction open is fine then, the transaction jobq's
  first write opens is the caller's to commit. With ``isolation_level=None`` (or Python 3.12's
  ``autocommit=True``) and no transaction open, it is refused like apsw's. Its ``executemany``
  cannot return rows (jobq's inserts return ids), so each parameter set is one ``execute``.
  Named parameters (``:name``) are the same in both.
- **The same file**: the connection's main database must be this queue's file (compared by
  device and inode, so a symlink or another spelling of the path is the same file).

Two copies of SQLite in one process corrupt the database (sqlite.org/howtocorrupt.html, "multiple
copies of SQLite linked into the same application"). apsw bundles its own SQLite (3.5x); the
stdlib module links the system's (3.40 on Debian 12). SQLite's locks are POSIX advisory locks,
which never conflict within one process, and each copy keeps its own table of them: measured
here, a stdlib connection took the write lock (BEGIN IMMEDIATE, then an INSERT) while jobq's apsw
connection in the same process held it, and a worker whose handlers wrote through a stdlib
connection reported "the database file is corrupt" within seconds. A process using
``jobq.Queue`` always holds apsw connections to the file, so a stdlib connection there is refused
with one line saying so (``ConfigError``). SQLAlchemy and Django reach SQLite only through the
stdlib module: on SQLite, their transactions cannot take jobq's writes (docs/transactions.md).

Limits, stated openly: while the caller's
transaction holds SQLite's write lock (from its first write until it ends), no other connection
can write: workers wait, and a jobq call in the same process that does not pass ``conn`` waits for
that very transaction (up to the busy timeout, then ``StorageError``, which names this process as
the holder: ``holders.HELD_HERE``). Keep such transactions
short and pass ``conn`` to every jobq call inside them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import apsw

from jobq.backends import ops
from jobq.errors import ConfigError, StorageError

Runner = Callable[[ops.Command], ops.Rows]

WRONG_KIND = (
    "conn must be an apsw.Connection or a sqlite3.Connection open on {path}, not {kind} "
    "(SQLAlchemy and Django: pass their DB-API connection, see docs/transactions.md)"
)


TWO_COPIES = (
    "conn is a sqlite3.Connection, which runs a second copy of SQLite ({theirs}) in this process beside "
    "jobq's apsw ({ours}): the two do not lock each other out and corrupt the file "
    "(sqlite.org/howtocorrupt.html); open the application's connection with apsw (docs/transactions.md)"
)


def shares_apsws_sqlite() -> bool:
    """True when the stdlib ``sqlite3`` module and apsw run one and the same SQLite library (apsw
    built against the system's shared library, not its bundled amalgamation): only then do their
    connections in one process lock each other out."""
    return not apsw.using_amalgamation and sqlite3.sqlite_version == apsw.sqlite_lib_version()


def kind_of(conn: object) -> str:
    """``module.Class`` of ``conn``, for messages."""
    return f"{type(conn).__module__}.{type(conn).__qualname__}"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def caller_runner(conn: object, path: str, notify: set[str], finished: set[int] | None = None) -> Iterator[Runner]:
    """A runner for ``ops.drive`` on ``conn`` after checking it (kind, file, transaction); queues
    to wake are gathered in ``notify``, the jobs it finished in ``finished``. Driver errors become
    one-line StorageErrors."""
    if finished is None:
        finished = set()
    if isinstance(conn, apsw.Connection):
        with _apsw_runner(conn, path, notify, finished) as run:
            yield run
    elif isinstance(conn, sqlite3.Connection):
        if not shares_apsws_sqlite():
            raise ConfigError(TWO_COPIES.format(theirs=sqlite3.sqlite_version, ours=apsw.sqlite_lib_version()))
        with _sqlite3_runner(conn, path, notify, finished) as run:
            yield run
    else:
        raise ConfigError(WRONG_KIND.format(path=path, kind=kind_of(conn)))


@contextlib.contextmanager
def _apsw_runner(conn: apsw.Connection, path: str, notify: set[str], finished: set[int]) -> Iterator[Runner]:
    try:
        filename = conn.filename
        autocommit = conn.get_autocommit()
    except apsw.Error as exc:  # ConnectionClosedError above all
        raise StorageError(f"conn cannot be used: {exc}") from None
    if not filename or not _same_file(filename, path):
        raise ConfigError(f"conn is open on {filename or 'a memory database'}, not on this queue's {path}")
    if autocommit:
        raise ConfigError(
            "conn has no open transaction (apsw never begins one): BEGIN IMMEDIATE first, "
            "jobq joins your transaction and never commits it"
        )
    tracer = conn.row_trace
    conn.row_trace = None  # jobq's statements return plain tuples, whatever the application reads
    try:
        yield _runner(lambda sql, params: conn.execute(sql, params).fetchall(), notify, finished)
    except apsw.Error as exc:
        raise StorageError(f"{path}: {exc} (in your transaction: roll it back)") from None
    finally:
        conn.row_trace = tracer


@contextlib.contextmanager
def _sqlite3_runner(conn: sqlite3.Connection, path: str, notify: set[str], finished: set[int]) -> Iterator[Runner]:
    try:
        cur = conn.cursor()
        main = [row[2] for row in cur.execute("PRAGMA database_list").fetchall() if row[1] == "main"]
    except sqlite3.Error as exc:  # closed, or used from another thread than its own
        raise StorageError(f"conn cannot be used: {exc}") from None
    filename = main[0] if main else ""
    if not filename or not _same_file(filename, path):
        raise ConfigError(f"conn is open on {filename or 'a memory database'}, not on this queue's {path}")
    if not conn.in_transaction and _autocommits(conn):
        raise ConfigError(
            "conn is in autocommit mode with no transaction open: BEGIN first (or leave isolation_level "
            "at its default), jobq joins your transaction and never commits it"
        )
    cur.row_factory = None  # plain tuples, whatever the application's row_factory
    try:
        yield _runner(lambda sql, params: cur.execute(sql, params).fetchall(), notify, finished)
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: {exc} (in your transaction: roll it back)") from None
    finally:
        cur.close()


def _autocommits(conn: sqlite3.Connection) -> bool:
    """Would a statement outside a transaction commit on its own (no implicit BEGIN)?"""
    autocommit: Any = getattr(conn, "autocommit", -1)  # Python 3.12+: True, False or LEGACY (-1)
    if autocommit is True:
        return True
    if autocommit is False:
        return False  # always inside a transaction (never reached: in_transaction is True then)
    return conn.isolation_level is None


def _runner(execute: Callable[[str, Any], ops.Rows], notify: set[str], finished: set[int]) -> Runner:
    """Runs an operation's commands through ``execute`` (one statement, its rows); the queues to
    wake are collected in ``notify``, the jobs it finished in ``finished``."""

    def run(command: ops.Command) -> ops.Rows:
        if isinstance(command, ops.Exec):
            return execute(command.sql, command.params)
        if isinstance(command, ops.ExecMany):
            rows: ops.Rows = []
            for params in command.params:
                rows.extend(execute(command.sql, params))
            return rows
        notify.update(command.queues)
        finished.update(command.finished)
        return []

    return run
