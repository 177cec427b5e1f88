"""Cross-process wake-up for the SQLite backend: SQLite has no LISTEN/NOTIFY, so we add one.

Each waiting worker binds a Linux abstract-namespace datagram socket (no file to clean up, no
108-byte path limit) and registers its address in ``workers.wake_address``. After an enqueue
commits, the producer sends one byte to every live worker's address. The worker sleeps in
``select()`` until a byte arrives or its poll interval ends, so an idle worker costs nothing and
a new job is claimed within about a millisecond. Sends are non-blocking and best effort: a full
buffer means the worker already has a wake-up pending, and a missed one is covered by polling.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable

#: How long a producer trusts its cached list of worker addresses before re-reading it.
ADDRESS_CACHE_SECONDS = 1.0


def _abstract_name(db_path: str, worker_id: str) -> str:
    digest = hashlib.sha1(f"{os.path.realpath(db_path)}|{worker_id}".encode()).hexdigest()[:20]
    return f"@jobq-{digest}"


def _sockaddr(address: str) -> str:
    # "@name" is the usual notation for an abstract socket; the kernel wants a leading NUL.
    return "\0" + address[1:] if address.startswith("@") else address


class SqliteListener:
    """The waiting side. ``address`` goes into the workers table."""

    def __init__(self, db_path: str, worker_id: str) -> None:
        self.address: str | None = _abstract_name(db_path, worker_id)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(_sockaddr(self.address))
        except OSError:
            # Abstract sockets are Linux-only: elsewhere we simply fall back to polling.
            self.address = None
        self._sock.setblocking(False)

    def wait(self, timeout: float) -> bool:
        if self.address is None:
            time.sleep(max(0.0, timeout))
            return False
        ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._sock.recv(64):  # drain: many enqueues, one wake-up
                pass
        return True

    def close(self) -> None:
        self._sock.close()


class WakeNotifier:
    """The producing side: nudges every live waiting worker after a commit."""

    def __init__(self, addresses: Callable[[float], list[str]]) -> None:
        self._load = addresses
        self._cache: list[str] = []
        self._loaded_at = float("-inf")
        self._sock: socket.socket | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")

    def notify(self, now: float) -> None:
        if time.monotonic() - self._loaded_at > ADDRESS_CACHE_SECONDS:
            try:
                self._cache = self._load(now)
            except Exception:  # noqa: BLE001 - a wake-up is best effort; polling covers a miss
                return
            self._loaded_at = time.monotonic()
        if not self._cache:
            return
        with self._lock:
            if self._sock is None or self._pid != os.getpid():
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
                self._pid = os.getpid()
            for address in self._cache:
                with contextlib.suppress(OSError):  # gone, or its buffer is full: both fine
                    self._sock.sendto(b"!", _sockaddr(address))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
