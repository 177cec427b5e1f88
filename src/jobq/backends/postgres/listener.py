"""Wake-up on PostgreSQL: an idle worker LISTENs on a dedicated connection.

Enqueue, resubmit and release send ``NOTIFY jobq_wakeup_<schema>`` (payload: the queue) in their
transaction; PostgreSQL delivers it at commit, so a worker is never woken for a job it cannot see
yet. A missed notification (a connection lost meanwhile) is covered by the worker's polling.
Notifications are per database, so the channel names the schema: queues in two schemas of one
database never wake each other's workers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

Connection = psycopg.Connection[tuple[Any, ...]]

LISTENER_RECONNECT_PAUSE_SECONDS = 1.0


class PollingListener:
    """No wake-up line: ``wait`` sleeps, and the worker polls. Behind a transaction pooler with no
    ``listen_url``, LISTEN would be sent on a server connection other clients' transactions use
    next, and its notifications would never reach this worker."""

    address: str | None = None
    listening = False  # a waiter polls: nobody to register (Backend.register_waiter)

    def wait(self, timeout: float) -> bool:
        time.sleep(max(0.0, timeout))
        return False

    def close(self) -> None:
        pass


class PostgresListener:
    """An idle worker's wake-up line: ``LISTEN <channel>`` on a dedicated connection.

    ``wait`` returns True when a notification for one of its queues arrived, and also when the
    connection was lost (it reconnects; the worker should poll, a notification may have been
    missed meanwhile).
    """

    def __init__(self, url: str, kwargs: dict[str, Any], queues: Sequence[str], channel: str) -> None:
        self.address: str | None = None  # PostgreSQL routes notifications itself
        self._url = url
        self._channel = channel
        self._kwargs = kwargs
        self._queues = frozenset(queues)
        self._conn: Connection | None = None
        self._connect()

    def _connect(self) -> bool:
        try:
            conn = psycopg.connect(self._url, autocommit=True, **self._kwargs)
        except psycopg.Error:
            return False
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except psycopg.Error:
            conn.close()
            return False
        self._conn = conn
        return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True when work may be there (woken, or reconnected)."""
        if self._conn is None or self._conn.closed:
            if not self._connect():  # the server is still away: don't spin, let the worker poll
                time.sleep(min(max(0.0, timeout), LISTENER_RECONNECT_PAUSE_SECONDS))
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                remaining = max(0.0, deadline - time.monotonic())
                received, woken = self._receive(remaining, stop_after=1)
                if woken:
                    self._receive(0.0)  # many enqueues, one wake-up: swallow what already arrived
                    return True
                if not received or remaining <= 0:
                    return False
        except psycopg.Error:
            self._drop()
            self._connect()
            return True

    def _receive(self, timeout: float, stop_after: int | None = None) -> tuple[bool, bool]:
        """(anything received, anything for our queues). The generator holds the connection's
        lock until it is closed, so close it before touching the connection again."""
        assert self._conn is not None
        received = woken = False
        gen = self._conn.notifies(timeout=timeout, stop_after=stop_after)
        try:
            for notify in gen:
                received = True
                woken = woken or not notify.payload or notify.payload in self._queues
        finally:
            gen.close()
        return received, woken

    def close(self) -> None:
        self._drop()


class FinishListener:
    """``Queue.wait``'s line: ``LISTEN <done channel>`` on a dedicated connection, woken when a
    notification names job ``job_id`` (payloads are comma-separated ids of finished jobs)."""

    address: str | None = None  # a Listener; nothing to register

    def __init__(self, url: str, kwargs: dict[str, Any], channel: str, job_id: int) -> None:
        self._id = str(job_id)
        self._conn: Connection | None = None
        try:
            conn = psycopg.connect(url, autocommit=True, **kwargs)
        except psycopg.Error:
            return  # the caller polls
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error:
            conn.close()
            return
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        """True when the job was named (or the line broke: the caller reads the job again)."""
        if self._conn is None or self._conn.closed:
            time.sleep(max(0.0, timeout))
            return False
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                remaining = max(0.0, deadline - time.monotonic())
                gen = self._conn.notifies(timeout=remaining, stop_after=1)
                named = received = False
                try:
                    for notify in gen:
                        received = True
                        named = named or self._id in notify.payload.split(",")
                finally:
                    gen.close()
                if named:
                    return True
                if not received or remaining <= 0:
                    return False
        except psycopg.Error:
            self.close()
            return True

    @property
    def listening(self) -> bool:
        """Whether its LISTEN is in place (else the caller polls, and needs no registration)."""
        return self._conn is not None and not self._conn.closed

    def fileno(self) -> int:
        """The socket that becomes readable on a wake-up (-1: none, poll), for asyncio's
        ``add_reader`` (``jobq.AsyncQueue.wait``); ``wait(0)`` then takes the wake-up."""
        return self._conn.fileno() if self._conn is not None and not self._conn.closed else -1

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
