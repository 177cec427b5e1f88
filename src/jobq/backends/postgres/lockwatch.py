"""Who a transaction is waiting for (PostgreSQL): named once it has waited a while.

A jobq write behind a row lock held by another session waits for as long as that session holds
it: an application's connection left open inside a transaction (``SELECT ... FOR UPDATE`` in
``psql``, a process frozen mid-transaction) made ``jobq cancel 5`` hang for as long, in silence.
The server knows whom a backend waits for (``pg_blocking_pids``); the client knows its own
connection's backend. So each transaction jobq runs is noted while it runs (a dict entry: no
round trip), and one thread per process looks at them every ``CHECK_SECONDS``: one that has run
``LOCK_WAIT_NOTICE_SECONDS`` is asked about on a connection of the thread's own, and if it waits
for a lock, a warning on ``jobq.postgres`` names the holders, once (the CLI prints it, a worker
logs it). SQLite's writes say the same from ``/proc/locks`` (``SqliteBackend._locked``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

log = logging.getLogger("jobq.postgres")

#: A transaction that has run this long is asked about; one waiting for a lock is named, once.
LOCK_WAIT_NOTICE_SECONDS = 2.0
#: How often the thread looks at the transactions in flight.
CHECK_SECONDS = 1.0
#: The holder's last statement is shown up to this many characters.
STATEMENT_SHOWN_CHARS = 100


def _holder_columns(a: str) -> str:
    """What ``describe_holder`` reads of a session, the ``pg_stat_activity`` row ``a``."""
    return (
        f"{a}.state, {a}.usename, {a}.application_name, host({a}.client_addr), "
        f"extract(epoch FROM now() - {a}.state_change)::double precision, {a}.query"
    )


def _holds_a_queue_lock(a: str) -> str:
    """Whether session ``a`` holds a lock on a table of the queue's schema (``%(schema)s``)."""
    return (
        "EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE l.pid = {a}.pid AND l.granted AND n.nspname = %(schema)s)"
    )


Q_BLOCKERS = f"""
SELECT p.pid, {_holder_columns("a")}
FROM unnest(pg_blocking_pids(%s)) AS p(pid)
LEFT JOIN pg_stat_activity a ON a.pid = p.pid
ORDER BY p.pid
"""


# After a statement gave up at the URL's lock_timeout, whom it waited for is no longer known:
# the sessions of this database inside a transaction older than that wait, holding a lock on a
# table of the queue's schema (a row lock shows as its table's ROW SHARE / ROW EXCLUSIVE lock).
Q_LIKELY_HOLDERS = f"""
SELECT a.pid, {_holder_columns("a")}
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND a.xact_start < now() - make_interval(secs => %(waited)s)
  AND {_holds_a_queue_lock("a")}
ORDER BY a.xact_start
LIMIT 3
"""


# Sessions of this database that have made another wait for a lock at least %(waited)s seconds,
# and hold a lock on a table of the queue's schema: whoever holds up the queue's writes now.
Q_BLOCKING = f"""
SELECT b.pid, {_holder_columns("b")}
FROM pg_stat_activity b
WHERE b.datname = current_database() AND b.pid <> pg_backend_pid()
  AND b.pid IN (
      SELECT unnest(pg_blocking_pids(w.pid)) FROM pg_stat_activity w
      WHERE w.datname = current_database() AND w.wait_event_type = 'Lock'
        AND w.state = 'active' AND w.query_start < now() - make_interval(secs => %(waited)s))
  AND {_holds_a_queue_lock("b")}
ORDER BY b.xact_start
LIMIT 5
"""


def gave_up_text(conn: psycopg.Connection[Any] | None, schema: str, waited: float | None) -> str:
    """What a call that gave up at ``lock_timeout`` says about the lock: the likely holders, read
    on ``conn`` (None, or a failed read: none named). ``waited``: the URL's ``lock_timeout`` in
    seconds (None: one set otherwise, e.g. by ``PGOPTIONS``)."""
    rows: list[Any] = []
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            rows = conn.execute(Q_LIKELY_HOLDERS, {"waited": waited or 0.0, "schema": schema}).fetchall()
    who = "; or by ".join(describe_holder(row) for row in rows) or (
        "another session inside a long transaction (pg_stat_activity lists those 'idle in transaction')"
    )
    after = f"after {waited:g} s" if waited is not None else "at the session's lock_timeout"
    return (
        f"gave up {after} waiting for a lock held, most likely, by {who}. Nothing was changed; "
        "try again when that transaction ends"
    )


class LockWatch:
    """The transactions in flight (``running``: connection -> when it began, written by the
    threads that run them) and the thread that names what a long one waits for."""

    def __init__(self, running: dict[object, float], connect: Callable[[], psycopg.Connection[Any]]) -> None:
        self.running = running
        self.pid = os.getpid()
        self._connect = connect
        self._asked: dict[tuple[int, float], float] = {}  # (connection's id, began) -> asked at
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobq-lock-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def _loop(self) -> None:
        while not self._stop.wait(CHECK_SECONDS):
            try:
                self.check(time.monotonic())
            except Exception:  # a watch that fails must not end the process's watching for good
                log.debug("lock watch: check failed", exc_info=True)

    def check(self, now: float) -> None:
        """Ask about each transaction that has run ``LOCK_WAIT_NOTICE_SECONDS`` (again each such
        span while it waits for nothing); name the holders of the first lock one waits for."""
        running = list(self.running.items())
        keys = {(id(conn), began) for conn, began in running}
        self._asked = {k: at for k, at in self._asked.items() if k in keys}
        due = [
            (conn, began)
            for conn, began in running
            if now - began >= LOCK_WAIT_NOTICE_SECONDS
            and now - self._asked.get((id(conn), began), began) >= LOCK_WAIT_NOTICE_SECONDS
        ]
        if not due:
            return
        with self._connect() as watcher:
            for conn, began in due:
                self._asked[(id(conn), began)] = float("inf")  # told or not, asked: see below
                pid = _backend_pid(conn)
                if pid is None or conn not in self.running:
                    continue
                holders = watcher.execute(Q_BLOCKERS, (pid,)).fetchall()
                if not holders:
                    self._asked[(id(conn), began)] = now  # slow, not waiting: ask again later
                    continue
                log.warning(
                    "a transaction has waited %g s for a lock held by %s; it waits as long as that is held",
                    round(now - began, 1),
                    "; and by ".join(describe_holder(row) for row in holders),
                )


def _backend_pid(conn: object) -> int | None:
    """The server process of ``conn`` (libpq's own record: no round trip), None once closed."""
    pgconn = getattr(conn, "pgconn", None)
    pid = getattr(pgconn, "backend_pid", 0)
    return int(pid) if pid else None


def describe_holder(row: Sequence[Any]) -> str:
    """One holder of a lock: its server process and what it is doing, and how to end it.
    ``row``: its pid, then ``_holder_columns``; a role without ``pg_read_all_stats`` sees another
    role's sessions without their state or statement (NULL, or "<insufficient privilege>")."""
    pid, state, user, application, client, in_state, query = row
    who = [f"application {application!r}" if application else None, f"user {user}" if user else None]
    who.append(f"from {client}" if client else ("on a local socket" if user else None))
    named = ", ".join(w for w in who if w)
    text = f"PostgreSQL backend pid {pid}" + (f" ({named})" if named else "")
    if state:
        text += f", {state}" + (f" for {in_state:.0f} s" if in_state is not None else "")
    if query and not query.startswith("<"):
        shown = " ".join(str(query).split())
        if len(shown) > STATEMENT_SHOWN_CHARS:
            shown = shown[: STATEMENT_SHOWN_CHARS - 3] + "..."
        text += f" (its last statement: {shown})"
    if state in ("idle in transaction", "idle in transaction (aborted)"):
        text += f": end that transaction (COMMIT or ROLLBACK), or SELECT pg_terminate_backend({pid})"
    return text
