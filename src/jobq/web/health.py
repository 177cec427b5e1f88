"""What the apps do when the database misbehaves, without Streamlit: both apps read through one
:class:`WatchedQueue` per process (``_page.open_queue``), which

- **fails fast on a locked SQLite database**: the app's Queue is opened with a short
  ``busy_timeout`` (``APP_BUSY_TIMEOUT_MS_DEFAULT``), which bounds a write's whole wait for the
  lock, and the error names the process that holds the lock (``/proc/locks``) and what to do.
  Reads keep working: in WAL mode they never wait for the writer. On PostgreSQL the same bound is
  the URL's ``lock_timeout`` (a row locked by a session left inside its transaction froze the
  page for as long), and the error names the likely holders (``PostgresBackend.gave_up``).
- **keeps the last known figures when the database cannot be read** (PostgreSQL down, a file
  gone): every read runs on a small thread pool and is awaited at most ``READ_WAIT_SECONDS_DEFAULT``;
  a read that fails or does not answer in time returns the last result of the same call, and
  :meth:`WatchedQueue.status` says since when the figures are stale and why. While the database is
  down one read at a time probes it; the first one that answers makes the figures live again, so the
  apps recover by themselves. Actions are refused at once while it is down (never queued up).
- **notices a replaced database file** (SQLite: deleted and re-created, or another file moved in:
  a new inode at the path): it opens the new file, drops the figures of the old one and says so; a
  file deleted and not replaced is reported (the old open file would otherwise be shown forever).

A ``WatchedQueue`` forwards everything else to its current ``jobq.Queue``, so the pages keep
calling the Queue API; ``_page`` hands it out typed as ``Queue``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from jobq import JobqError, Queue, StorageError
from jobq.backends.sqlite.holders import holders_text
from jobq.queue import read_methods
from jobq.redact import redact_text, redact_url

APP_BUSY_TIMEOUT_MS_DEFAULT = 2_000
"""The apps' SQLite ``busy_timeout`` and PostgreSQL ``lock_timeout``: an action waits at most this long
for a lock another process holds."""
READ_WAIT_SECONDS_DEFAULT = 3.0
"""How long a page waits for one read before it shows the last known figures instead."""
REPLACED_NOTICE_SECONDS_DEFAULT = 120.0
"""How long the "database file replaced" notice stays on the page."""
FIRST_READ_WAIT_SECONDS_DEFAULT = 60.0
"""How long a read with nothing remembered to show instead may take (a busy machine is slow, not down)."""
REMEMBERED_READS_MAX = 512
"""Distinct reads (method and arguments) whose last result is kept for a stale page."""
READ_THREADS = 4
"""Reads in flight at once per process (a stuck read holds one until its own timeout)."""

#: The Queue methods the apps read through, remembered for a stale page: those marked ``@read`` on
#: ``Queue`` itself (``jobq.queue.read``). Anything else (actions) runs directly.
READS = read_methods()


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """How fresh the figures are, for the page's banner."""

    stale_since: float | None
    """When the last read succeeded, while reads fail (None: the figures are live)."""
    reason: str
    """Why the reads fail (plain text, password masked); "" when live."""
    replaced_at: float | None
    """When the database file was found replaced and reopened (shown for a while), else None."""


def app_url(url: str, busy_timeout_ms: int = APP_BUSY_TIMEOUT_MS_DEFAULT) -> str:
    """``url`` with a short wait for a lock unless it sets one: SQLite's ``busy_timeout``, and
    PostgreSQL's ``lock_timeout`` (not behind ``pooler=transaction``, which refuses it)."""
    # Not urlunsplit: it would turn sqlite:////abs/path into sqlite://abs/path.
    base, _, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    given = urllib.parse.parse_qs(query)
    if base.startswith("sqlite:"):
        option = "busy_timeout"
    elif base.startswith(("postgresql:", "postgres:")) and given.get("pooler") != ["transaction"]:
        option = "lock_timeout"
    else:
        return url
    if option in given:
        return url
    return f"{base}?{'&'.join(p for p in (query, f'{option}={busy_timeout_ms}') if p)}{hash_mark}{fragment}"


def file_identity(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of ``path``, or None when nothing is there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def locked_message(path: str, waited_seconds: float, proc: str = "/proc") -> str:
    """One line for an action refused because another process held the write lock."""
    who = holders_text(path, proc) or (
        "another process holds its write lock (a long transaction, or a sqlite3 shell left in BEGIN)"
    )
    return (
        f"the database is locked: {who}. Nothing was changed; the action gave up after {waited_seconds:g} s "
        "instead of freezing the page. Try again when that transaction ends, or end it (COMMIT / ROLLBACK, "
        "or stop that process)."
    )


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) and "locked" in str(exc)


class WatchedQueue:
    """A ``jobq.Queue`` for the apps (see the module docstring): fast failure on a locked database,
    the last known figures while the database cannot be read, and a replaced file reopened.

    ``opener(url, create)`` opens a Queue (``jobq.Queue`` by default); ``clock`` is for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        create: bool = False,
        opener: Callable[[str, bool], Queue] | None = None,
        read_wait_seconds: float = READ_WAIT_SECONDS_DEFAULT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._given_url = url
        self._url = app_url(url)
        self._create = create
        self._opener = opener or (lambda u, c: Queue(u, create=c))
        self._read_wait = read_wait_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._remembered: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._last_ok: float = clock()
        self._down_reason: str | None = None
        # True once a read failed outright (not merely slow): actions are then refused at once.
        self._failed = False
        self._probe: concurrent.futures.Future[Any] | None = None
        self._replaced_at: float | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(READ_THREADS, thread_name_prefix="jobq-app-read")
        self._queue = self._opener(self._url, create)
        self._path: str | None = getattr(self._queue.backend, "path", None)
        self._identity = file_identity(self._path) if self._path else None

    # -- what the page shows ------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The database URL as configured, password included: never show it (see ``display_url``)."""
        return self._given_url

    @property
    def display_url(self) -> str:
        """The configured URL with its password masked (without the app's own ``busy_timeout``)."""
        return redact_url(self._given_url)

    @property
    def queue(self) -> Queue:
        """The Queue currently open (a new one after the file was replaced)."""
        return self._queue

    def status(self) -> Status:
        """How fresh the figures are (checks the file first, so a deleted file shows at once)."""
        self._check_file()
        with self._lock:
            now = self._clock()
            replaced = self._replaced_at
            if replaced is not None and now - replaced > REPLACED_NOTICE_SECONDS_DEFAULT:
                replaced = self._replaced_at = None
            if self._down_reason is None:
                return Status(None, "", replaced)
            return Status(self._last_ok, self._down_reason, replaced)

    def wall_time(self) -> float:
        """Now, as the store's times are written (``Queue.wall_time``): reads nothing, so it
        answers while the database cannot be reached too."""
        return self._queue.wall_time()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._queue.close()

    # -- forwarding -----------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # Only called for what this class does not define: the Queue's API.
        attribute = getattr(self._queue, name)
        if not callable(attribute):
            return attribute
        if name in READS:
            return lambda *args, **kwargs: self._read(name, args, kwargs)
        return lambda *args, **kwargs: self._act(name, args, kwargs)

    def _act(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        gone = self._check_file()
        with self._lock:
            down = gone or (self._down_reason if self._failed else None)
        if down is not None:
            # Not attempted: against a server that is down it would hang for the pool's timeout.
            raise StorageError(f"not attempted: the database cannot be reached ({down}); try again when it is back")
        try:
            return getattr(self._queue, name)(*args, **kwargs)
        except StorageError as exc:
            return self._refused(exc)
        finally:
            # What was read before the action is not what a page must show after it: a slow
            # read then waits for the answer instead of showing the job as it was.
            with self._lock:
                self._remembered.clear()

    def _refused(self, exc: StorageError) -> Any:
        """Re-raise an action's storage error; a locked database's names the lock's holder."""
        path = self._path
        if path is not None and _is_locked(exc):
            give_up = float(getattr(self._queue.backend, "give_up_seconds", APP_BUSY_TIMEOUT_MS_DEFAULT / 1000))
            raise StorageError(locked_message(path, give_up)) from None
        raise exc

    def _read(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        gone = self._check_file()
        key = (name, repr((args, sorted(kwargs.items()))))
        if gone is not None:
            return self._stale(key, StorageError(gone))
        queue = self._queue
        with self._lock:
            probing = self._down_reason is not None and self._probe is not None and not self._probe.done()
            wait = self._read_wait if key in self._remembered else FIRST_READ_WAIT_SECONDS_DEFAULT
        if probing:  # down, and a probe is already waiting for the server: do not pile up reads
            return self._stale(key, None)
        future = self._pool.submit(lambda: getattr(queue, name)(*args, **kwargs))
        with self._lock:
            if self._down_reason is not None:
                self._probe = future
        future.add_done_callback(lambda done: self._settled(key, queue, done))
        try:
            return future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            self._mark_down(f"no answer within {wait:g} s", failed=False)
            return self._stale(key, None)
        except StorageError as exc:
            return self._stale(key, exc)

    def _settled(self, key: tuple[str, str], queue: Queue, done: concurrent.futures.Future[Any]) -> None:
        # Also runs for a read that answered after the page stopped waiting: it still counts.
        if done.cancelled() or queue is not self._queue:
            return
        exc = done.exception()
        if exc is None:
            with self._lock:
                self._remembered[key] = done.result()
                self._remembered.move_to_end(key)
                while len(self._remembered) > REMEMBERED_READS_MAX:
                    self._remembered.popitem(last=False)
                self._last_ok = self._clock()
                self._down_reason = None
                self._failed = False
        elif isinstance(exc, StorageError):
            self._mark_down(str(exc))

    def _mark_down(self, reason: str, *, failed: bool = True) -> None:
        with self._lock:
            self._down_reason = redact_text(reason, self._url)
            self._failed = self._failed or failed

    def _stale(self, key: tuple[str, str], exc: StorageError | None) -> Any:
        with self._lock:
            if exc is not None:
                self._down_reason = redact_text(str(exc), self._url)
                self._failed = True
            if key in self._remembered:
                return self._remembered[key]
            reason = self._down_reason or "the database cannot be read"
        raise StorageError(f"{reason} (and nothing read earlier to show instead)")

    # -- a replaced file ------------------------------------------------------------------------
    def _check_file(self) -> str | None:
        """Reopen a replaced file; the reason the file cannot be used (deleted), else None."""
        if self._path is None:
            return None
        now_identity = file_identity(self._path)
        if now_identity == self._identity:
            return None
        if now_identity is None:
            # The old file is still open and readable: reading it would show a database that is
            # gone as if it were live, so nothing is read from it until a file is back.
            reason = f"the database file {self._path} was deleted or moved away"
            self._mark_down(reason)
            return reason
        with self._lock:
            if file_identity(self._path) == self._identity:  # another session reopened it meanwhile
                return None
            try:
                fresh = self._opener(self._url, self._create)
            except JobqError as exc:
                reason = redact_text(f"the database file was replaced by one that cannot be opened: {exc}", self._url)
                self._down_reason = reason
                self._failed = True
                return reason
            old, self._queue = self._queue, fresh
            self._identity = file_identity(self._path)
            self._remembered.clear()  # the old file's figures are not this file's
            self._down_reason = None
            self._failed = False
            self._last_ok = self._replaced_at = self._clock()
        # Not closed here: a read of another session may still be running on it; the garbage
        # collector closes it once nothing uses it.
        del old
        return None
