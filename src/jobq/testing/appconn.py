"""An application's own database connection, as the tests of ``conn=`` use it.

One small wrapper per driver (apsw, stdlib sqlite3, psycopg) so that a test can say "begin,
write a row of the application's, commit or roll back" once for every kind of connection that
``Queue.enqueue(..., conn=)`` and ``JobContext.complete(conn=)`` accept. Application SQL is
written with ``?`` placeholders and translated for psycopg.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import apsw

APP_TABLE_SQL = "CREATE TABLE IF NOT EXISTS app_rows (job_id BIGINT, note TEXT)"
"""The application's table of the tests: one row per job its handler ran (no unique constraint,
so that a duplicate would show)."""


class AppConnection:
    """A connection the application opened itself; ``conn`` is what it passes to jobq."""

    kind = "?"
    conn: Any

    def begin(self) -> None:
        """Open a transaction (where the driver does not open one implicitly)."""

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.conn.close()

    def rows(self, job_id: int) -> int:
        """How many application rows ``job_id`` has (read outside any open transaction)."""
        return int(self.execute("SELECT count(*) FROM app_rows WHERE job_id = ?", (job_id,))[0][0])

    def __repr__(self) -> str:
        return f"<{self.kind} connection>"


class ApswApp(AppConnection):
    """apsw: no implicit transactions, ``BEGIN IMMEDIATE`` said explicitly (see FIELD-NOTES)."""

    kind = "apsw"

    def __init__(self, path: str, busy_timeout_ms: int = 10_000) -> None:
        self.conn = apsw.Connection(path)
        self.conn.set_busy_timeout(busy_timeout_ms)

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.conn.execute(sql, params).fetchall()
        return rows

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if not self.conn.get_autocommit():
            self.conn.execute("ROLLBACK")


class Sqlite3App(AppConnection):
    """The stdlib module in its default mode: a transaction begins before the first write."""

    kind = "sqlite3"

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.conn.execute(sql, params).fetchall()
        return rows

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()


class PsycopgApp(AppConnection):
    """psycopg 3 in its default mode: a transaction begins with the first statement."""

    kind = "psycopg"

    def __init__(self, url: str) -> None:
        import psycopg

        from jobq.backends.postgres.url import split_url

        # The application's own connection: libpq's URL without jobq's options (schema, pooler,
        # listen_url), and no prepared statements, which a transaction pooler cannot keep.
        self.conn = psycopg.connect(split_url(url).libpq_url, prepare_threshold=None)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description is not None else []

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()


def app_connections(url: str) -> list[AppConnection]:
    """One fresh application connection of every kind jobq accepts for the store at ``url``,
    each with the application's table created (committed)."""
    if url.startswith(("postgresql://", "postgres://")):
        made: list[AppConnection] = [PsycopgApp(url)]
    else:
        from jobq.backends.sqlite.caller import shares_apsws_sqlite

        path = url.removeprefix("sqlite:///")
        # A stdlib connection beside jobq's apsw one is accepted only when both run one SQLite
        # library (see jobq.backends.sqlite.caller): two copies in one process corrupt the file.
        made = [ApswApp(path), *([Sqlite3App(path)] if shares_apsws_sqlite() else [])]
    for app in made:
        app.execute(APP_TABLE_SQL)
        if not isinstance(app, ApswApp):
            app.commit()
    return made
