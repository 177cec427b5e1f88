"""The transactions a process begins on SQLite, per thread: counted through apsw's statement trace
on every connection opened while recording (jobq opens one per thread)."""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import apsw


@dataclasses.dataclass
class Transactions:
    writes: list[str] = dataclasses.field(default_factory=list)
    """The thread name of each write transaction (BEGIN IMMEDIATE, or a write statement sent alone
    in autocommit: either takes SQLite's one write lock), in order."""
    reads: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    """Read transactions (BEGIN) per thread name."""


@contextmanager
def transactions() -> Iterator[Transactions]:
    """Record the transactions of connections opened inside the block (not of those already open)."""
    seen = Transactions()

    def hook(conn: apsw.Connection) -> None:
        def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
            if sql.startswith("BEGIN IMMEDIATE") or (
                sql.lstrip().startswith(("INSERT", "UPDATE", "DELETE")) and cursor.connection.get_autocommit()
            ):
                seen.writes.append(threading.current_thread().name)
            elif sql == "BEGIN":
                seen.reads[threading.current_thread().name] += 1
            return True

        conn.exec_trace = trace

    apsw.connection_hooks.append(hook)
    try:
        yield seen
    finally:
        apsw.connection_hooks.remove(hook)


def vm_steps(conn: apsw.Connection, call: Callable[[], Any]) -> int:
    """SQLite's virtual-machine steps (in hundreds, from a progress handler) that ``call`` costs
    on ``conn``: deterministic where timings are noise."""
    ticks = [0]

    def tick() -> bool:
        ticks[0] += 1
        return False  # go on

    conn.set_progress_handler(tick, 100, id="vm_steps")
    try:
        call()
    finally:
        conn.set_progress_handler(None, id="vm_steps")
    return ticks[0]
