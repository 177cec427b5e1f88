"""Rows written by hand as they could be before a schema check existed: the write-time checks of
``queue_controls`` (SQLite schema 11, PostgreSQL schema 13) are dropped, the row is written and
the checks are put back in one transaction. PostgreSQL's constraint comes back ``NOT VALID``, as
the migration adds it to a table with such a row; SQLite's triggers check only new writes. So a
test can show what jobq does with a row that an older jobq's database already held.
``write_by_hand``: any statements, as an operator's ``sqlite3``/``psql`` would run them."""

from __future__ import annotations

from typing import Any


def write_by_hand(url: str, *statements: str) -> None:
    """``statements`` in one transaction on a connection of their own, as ``sqlite3``/``psql`` would."""
    if url.startswith("sqlite:///"):
        # apsw, the library jobq's connections use, never the stdlib sqlite3 module in the same
        # process: that is a second copy of SQLite, and closing its file drops the other copy's
        # POSIX locks on the file (they are per process). jobq's connection then went on reading
        # an old snapshot of the WAL. A separate process (the sqlite3 CLI) is fine.
        import apsw

        conn = apsw.Connection(url.removeprefix("sqlite:///"))
        conn.set_busy_timeout(10_000)
        try:
            with conn:
                for statement in statements:
                    conn.execute(statement)
        finally:
            conn.close()
        return
    from pg import raw_connect

    pg: Any
    with raw_connect(url, autocommit=True) as pg, pg.transaction():
        for statement in statements:
            pg.execute(statement)


def write_past_controls_checks(url: str, sql: str) -> None:
    if url.startswith("sqlite:///"):
        from jobq.backends.sqlite.schema import QUEUE_CONTROLS_CHECKS as SQLITE_CHECKS

        drop = ["DROP TRIGGER queue_controls_check_insert", "DROP TRIGGER queue_controls_check_update"]
        write_by_hand(url, *drop, sql, *SQLITE_CHECKS)
        return
    from jobq.backends.postgres.schema import QUEUE_CONTROLS_CHECKS as PG_CHECKS

    write_by_hand(url, "ALTER TABLE queue_controls DROP CONSTRAINT queue_controls_enforceable", sql, *PG_CHECKS)


#: Writes by hand of a status or a key scope that is not one: each backend refuses every one
#: (SQLite's CHECKs, PostgreSQL's domains) and the row stays as it was.
NOT_A_STATUS_OR_KEY_SCOPE = (
    "UPDATE jobs SET status = 'DONE'",
    "UPDATE jobs SET status = 'pending'",
    "UPDATE jobs SET key_scope = 'forever'",
    "INSERT INTO jobs (payload, run_at, created_at, updated_at, status) VALUES ('1', 0, 0, 0, 'NEW')",
    "INSERT INTO jobs (payload, run_at, created_at, updated_at, key_scope) VALUES ('1', 0, 0, 0, 'none')",
)
