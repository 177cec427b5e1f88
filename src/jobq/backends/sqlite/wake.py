"""Cross-process wake-up for the SQLite backend: SQLite has no LISTEN/NOTIFY, so we add one.

Each waiting worker binds a Linux abstract-namespace datagram socket (no file to clean up, no
108-byte path limit) and registers its address in ``workers.wake_address``. After an enqueue
commits, the producer sends one byte to every live worker's address. The worker sleeps in
``select()`` until a byte arrives or its poll interval ends, so an idle worker costs nothing and
a new job is claimed within about a millisecond. Sends are non-blocking and best effort: a full
buffer means the worker already has a wake-up pending, and a missed one is covered by polling.

Limits, stated openly: an abstract socket has no permissions, so any local user can send to a
worker's address. A flood costs the worker little: wake-ups (each one a claim transaction) are
rationed to one per ``WAKE_COALESCE_SECONDS`` after a burst of ``WAKE_BURST``, however many
datagrams arrive (measured: an idle worker under a flood went from 57% to 10% CPU). The other way
round, a producer only ever sends to addresses of jobq's own form (``@jobq-<20 hex digits>``), so
a hand-written ``workers`` row cannot aim its datagrams at some other socket (``/dev/log``,
another program's abstract name).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable

#: How long a producer trusts its cached list of worker addresses before re-reading it.
ADDRESS_CACHE_SECONDS = 1.0
#: Wake-ups a listener reports are rationed to one per this period on average: each one is a
#: claim transaction, and a burst of datagrams (many enqueues, or a local user flooding the
#: address) would otherwise cost one per datagram (a flood kept an idle worker at 57% CPU; with
#: this ration, about 200 claim passes a second, 10%).
WAKE_COALESCE_SECONDS = 0.005
#: ... with this many in a row allowed after a quiet spell, so that a steady producer near that
#: rate (the latency benchmark enqueues every 5 ms) is not held back by the jitter of its
#: commits: a plain 5 ms gap between wake-ups added 2 ms to its median latency.
WAKE_BURST = 4
_DRAIN_MAX_DATAGRAMS = 64
_ADDRESS_DIGEST_CHARS = 20
#: Exactly what ``_abstract_name`` produces: the only addresses a producer sends to.
_JOBQ_ADDRESS = re.compile(rf"@jobq-[0-9a-f]{{{_ADDRESS_DIGEST_CHARS}}}")


def _abstract_name(db_path: str, worker_id: str) -> str:
    digest = hashlib.sha1(f"{os.path.realpath(db_path)}|{worker_id}".encode()).hexdigest()
    return f"@jobq-{digest[:_ADDRESS_DIGEST_CHARS]}"


def is_jobq_address(address: object) -> bool:
    """True for a wake-up address of jobq's own form, ``@jobq-`` and 20 lower-case hex digits."""
    return isinstance(address, str) and _JOBQ_ADDRESS.fullmatch(address) is not None


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
        # A token bucket: wake-ups in hand (at most WAKE_BURST), one more per WAKE_COALESCE_SECONDS.
        self._credit = float(WAKE_BURST)
        self._credit_at = time.monotonic()

    def _refill(self) -> float:
        now = time.monotonic()
        self._credit = min(float(WAKE_BURST), self._credit + (now - self._credit_at) / WAKE_COALESCE_SECONDS)
        self._credit_at = now
        return now

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True when woken. However many datagrams arrive, it returns
        True at most ``WAKE_BURST`` + t / ``WAKE_COALESCE_SECONDS`` times in t seconds."""
        if self.address is None:
            time.sleep(max(0.0, timeout))
            return False
        deadline = time.monotonic() + max(0.0, timeout)
        ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if not ready:
            return False
        now = self._refill()
        if self._credit < 1:
            # Rationed: let the burst gather, then report it once. Datagrams arriving meanwhile
            # queue up in the socket (when it is full, a sender only drops more of the same).
            hold = (1 - self._credit) * WAKE_COALESCE_SECONDS
            if now + hold > deadline:
                time.sleep(max(0.0, deadline - now))
                return False  # the caller polls at its timeout anyway; the datagrams stay queued
            time.sleep(hold)
            self._refill()
        with contextlib.suppress(BlockingIOError, InterruptedError):
            # Drain: many enqueues, one wake-up. Bounded, so a flood refilling the queue as fast as
            # it empties cannot keep us here (Linux queues about 10 datagrams per socket).
            for _ in range(_DRAIN_MAX_DATAGRAMS):
                self._sock.recv(64)
        self._credit = max(0.0, self._credit - 1)
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

    def notify(self, now: float, load: Callable[[float], list[str]] | None = None) -> None:
        """Wake every live waiting worker. ``load`` reads the addresses instead of the default
        loader when the cache is stale (an application's transaction reads them on its own
        connection: jobq's would wait for the write lock that transaction holds)."""
        if time.monotonic() - self._loaded_at > ADDRESS_CACHE_SECONDS:
            try:
                # Anyone who can write the database can write a workers row: send only to
                # addresses of jobq's own form, never to a path or another program's socket.
                found = (load or self._load)(now)
                self._cache = list(dict.fromkeys(a for a in found if is_jobq_address(a)))
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


# -- waiting for a job to finish (``Queue.wait``) ------------------------------------------------
# Each waiter binds an abstract address of its own (random: two waiters on one job each get theirs)
# and announces it with a file in ``<database>-waiters/`` named ``<job id>-<its token>`` while it
# waits. The process that finishes jobs reads that directory once per finishing transaction (only
# when someone waits at all: an empty directory is one scandir, nothing per job) and sends one
# datagram to each waiter of a job it finished, after the commit. A waiter that crashed leaves its
# file behind: senders then pay a refused send (~3 us) for its job only, until the file is removed.
FINISH_WAITERS_SUFFIX = "-waiters"
_WAITER_TOKEN_BYTES = 10
_WAITER_ENTRY = re.compile(rf"([0-9]+)-([0-9a-f]{{{2 * _WAITER_TOKEN_BYTES}}})")


def _finish_address(token: str) -> str:
    return f"@jobq-done-{token}"


def _waiters_dir(db_path: str) -> str:
    return os.path.realpath(db_path) + FINISH_WAITERS_SUFFIX


class FinishWaiter:
    """Waits for a datagram saying job ``job_id`` finished. ``wait(timeout)`` returns True when
    one came (False when it could not listen: the caller then polls at its own pace)."""

    address: str | None = None  # a Listener; nothing to register

    def __init__(self, db_path: str, job_id: int) -> None:
        token = os.urandom(_WAITER_TOKEN_BYTES).hex()
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._flag: str | None = None
        try:
            self._sock.bind(_sockaddr(_finish_address(token)))
        except OSError:
            # Not Linux (no abstract sockets): poll instead.
            self._sock.close()
            self._sock = None
            return
        self._sock.setblocking(False)
        folder = _waiters_dir(db_path)
        try:
            os.makedirs(folder, exist_ok=True)
            self._flag = os.path.join(folder, f"{job_id}-{token}")
            with open(self._flag, "x"):
                pass
        except OSError:
            self._flag = None  # cannot announce: the senders will not send, the caller polls

    @property
    def listening(self) -> bool:
        return self._sock is not None and self._flag is not None

    def wait(self, timeout: float) -> bool:
        if self._sock is None:
            time.sleep(max(0.0, timeout))
            return False
        ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if ready:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                for _ in range(_DRAIN_MAX_DATAGRAMS):
                    self._sock.recv(64)
        return bool(ready)

    def fileno(self) -> int:
        """The socket that becomes readable on a wake-up (-1: none, poll), for asyncio's
        ``add_reader`` (``jobq.AsyncQueue.wait``); ``wait(0)`` then takes the wake-up."""
        return self._sock.fileno() if self._sock is not None else -1

    def close(self) -> None:
        if self._flag is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._flag)
            self._flag = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class FinishNotifier:
    """The finishing side: tells the waiters of the jobs it finished, if any."""

    def __init__(self, db_path: str) -> None:
        self._path = db_path
        self._folder = _waiters_dir(db_path)
        self._sock: socket.socket | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def _waiters(self) -> list[tuple[int, str]]:
        """(job id, token) of every waiter announced (none when the folder is missing)."""
        if not os.access(self._folder, os.F_OK):
            # No folder, no waiter, found without the scan's FileNotFoundError (built and caught
            # after every completion where nobody ever waited: ~1.7 us of ~2.4, issue 13). As
            # race-free as the scan: a waiter creates the folder and its file before it reads the
            # job, and this runs after the finish committed, so a waiter this misses reads it.
            return []
        try:
            with os.scandir(self._folder) as entries:
                found = [_WAITER_ENTRY.fullmatch(entry.name) for entry in entries]
        except OSError:
            return []
        return [(int(m.group(1)), m.group(2)) for m in found if m is not None]

    def anyone_waits(self) -> bool:
        return bool(self._waiters())

    def notify(self, job_ids: Iterable[int]) -> None:
        waiters = self._waiters()
        if not waiters:
            return
        wanted = set(job_ids)
        tokens = [token for job_id, token in waiters if job_id in wanted]
        if not tokens:
            return
        with self._lock:
            if self._sock is None or self._pid != os.getpid():
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
                self._pid = os.getpid()
            for token in tokens:
                with contextlib.suppress(OSError):  # a waiter gone meanwhile: refused
                    self._sock.sendto(b"!", _sockaddr(_finish_address(token)))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
