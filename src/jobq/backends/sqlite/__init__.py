"""SQLite backend, through apsw (which bundles a current SQLite).

Design and limits, stated openly:

- One machine only. WAL mode needs shared memory between the processes, so the database must be
  on a local filesystem (never NFS/SMB). For several machines use the PostgreSQL backend.
- One writer at a time: every read-then-write is one ``BEGIN IMMEDIATE`` transaction, so a claim
  needs no locking hint and two processes can never take the same job. ``busy_timeout`` makes a
  writer wait for the lock; a retry loop around the whole transaction covers the rare
  ``SQLITE_BUSY`` that still escapes (measured: 1-2 per 20,000 jobs at 2-4 processes). Without a
  ``?busy_timeout=`` in the URL a write gives up after ``LOCKED_GIVE_UP_SECONDS``; with one, that
  is the whole wait (the apps ask for 2 s, so an action on a locked database fails fast).
- Opening a database whose schema is current takes no write lock (a read checks the version), so
  a viewer opens while another process holds the write lock.
- Durability: ``synchronous=FULL`` by default, so a committed (acknowledged) job survives power
  loss; ``?synchronous=NORMAL`` in the URL trades the last commits on power loss for speed (it
  never corrupts). Batched claims and group-committed completions amortise the fsync.
- SQLite >= 3.51.3 is required: older libraries have the WAL-reset bug (sqlite.org/wal.html),
  which can corrupt a database written by several processes at once: exactly a job queue.
- The schema sticks to what the Debian ``sqlite3`` 3.40 shell can read and update; a trigger
  records status changes made by hand (rows whose ``rev`` did not move) as events.
- Connections are never carried across ``fork()``: a forked child reopens on first use.
- One connection per backend object, serialised by a lock: SQLite runs one writer at a time
  anyway, and a connection per thread would leak with Streamlit's thread-per-run model.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import apsw

from jobq.backends import ops
from jobq.backends.base import Clock, Completion, NewJob, QueueCopy
from jobq.backends.sqlite.caller import caller_runner
from jobq.backends.sqlite.holders import HeldSeen, held_up_by, holders_text
from jobq.backends.sqlite.schema import MIGRATIONS, NEXT_JOB_ID_SQL, SCHEMA_VERSION
from jobq.backends.sqlite.wake import FinishNotifier, FinishWaiter, SqliteListener, WakeNotifier
from jobq.backends.statements import LOWER_FUNCTION, STATIC_FRAGMENTS, Dialect, Params, load_statements
from jobq.backends.store import MakeOp, SqlStore, _nonce
from jobq.errors import ConfigError, StorageError, StoreReplaced
from jobq.job import Job
from jobq.redact import redact_url

__all__ = ["SCHEMA_VERSION", "WAL_SIZE_LIMIT_BYTES", "SqliteBackend", "parse_sqlite_url"]

T = TypeVar("T")

log = logging.getLogger("jobq.sqlite")

SQLITE_MIN_VERSION = (3, 51, 3)
SYNCHRONOUS_DEFAULT = "FULL"
#: Give up on a write that stayed locked this long, with a clear error instead of a hang.
LOCKED_GIVE_UP_SECONDS = 120.0
#: A write that has waited this long for the lock says so, once, naming the holder (a warning on
#: the ``jobq.sqlite`` logger: the CLI prints it, a worker logs it): the default wait runs up to
#: ``LOCKED_GIVE_UP_SECONDS`` behind a frozen process or an open ``sqlite3`` shell, in silence.
#: The first chance comes when SQLite's busy handler gives up (``busy_timeout``).
LOCK_WAIT_NOTICE_SECONDS = 2.0
#: SQLite's own wait for the lock, in each try of ``_locked``'s loop: the notice's time, so that
#: the loop regains control to say it then (at 10 s it came only after 10 s). A write under
#: ordinary contention waits milliseconds; one that waits 2 s is held up, and the loop's further
#: tries cost nothing that matters beside that.
BUSY_TIMEOUT_MS_DEFAULT = int(LOCK_WAIT_NOTICE_SECONDS * 1000)
#: The WAL is truncated back to this size after a checkpoint resets it.
WAL_SIZE_LIMIT_BYTES = 8 * 1024 * 1024
#: Opens that found the file replaced before their first read, before giving up.
REPLACED_WHILE_OPENING_TRIES = 5
#: How often a process checks that the path still names the file it has open (a ``stat``, made
#: by the first transaction after this long): one removed or replaced by hand is then let go.
FILE_CHECK_SECONDS = 1.0
#: Workers not seen for this long get no wake-up datagrams.
WAKE_ADDRESS_MAX_AGE_SECONDS = 120.0


class SqliteDialect(Dialect):
    """SQLite's SQL: ``:name`` parameters, ``IN (...)`` lists (an equality for one value)."""

    #: A purge (or an operator's action) holds the one write lock for each chunk; a writer waiting
    #: in SQLite's busy handler wakes every 100 ms at most and finds the lock taken again at once
    #: unless the purge pauses.
    #: Purging 979,020 jobs while another process wrote every 5 ms: in one transaction, 3.0 s and
    #: that writer's longest wait 3.0 s; in chunks with no pause, 2.7 s of waiting; pausing as long
    #: as each chunk took, 0.35-0.47 s (the purge itself 9-12 s).
    chunk_pause_share = 1.0
    #: The claim's RETURNING of 23 columns for a batch of 100 held the write lock ~2.6 us a job
    #: (SQLite builds each row and apsw each Python value under it), against ~2 us a job to read
    #: them after the commit, where other workers can commit meanwhile: with several workers the
    #: lock is their limit (issue 13). A read costs a transaction more, so small claims return rows.
    claim_reads_after = 8

    def __init__(self) -> None:
        self.sql = load_statements(Path(__file__).parent / "sql", {**STATIC_FRAGMENTS, "next_job_id": NEXT_JOB_ID_SQL})
        self._rendered = {}
        self._for_queues = {}

    def param(self, name: str) -> str:
        return f":{name}"

    def any_of(self, column: str, name: str, values: Sequence[Any], params: Params) -> str:
        names = [f"{name}{i}" for i in range(len(values))]
        params.update(zip(names, values, strict=True))
        return f"{column} IN ({', '.join(':' + n for n in names)})" if names else "FALSE"


DIALECT = SqliteDialect()


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///rel/path.db`` (relative), ``sqlite:////abs/path.db`` or a bare path."""
    if url.startswith("sqlite://"):
        parsed = urllib.parse.urlsplit(url)
        if parsed.netloc:
            raise ConfigError(
                f"bad SQLite URL {redact_url(url)!r}: use sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        options = dict(urllib.parse.parse_qsl(parsed.query))
    else:
        path, options = url, {}
    if not path:
        raise ConfigError(f"bad SQLite URL {redact_url(url)!r}: no file path")
    return path, options


class SqliteBackend(SqlStore):
    """The embedded default backend. See the module docstring for its limits."""

    single_host = True  # WAL needs shared memory: every process using the file is on this machine
    clock_reading: tuple[float, float] | None = None  # the file's clock is this host's (Backend.clock_reading)
    generation = 0  # raised each time _check_file finds the file replaced (Backend.generation)
    dialect = DIALECT

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        path, options = parse_sqlite_url(url)
        self.path = os.path.abspath(path)
        if not create and not os.path.exists(self.path):
            raise StorageError(f"no database at {self.path} (start a producer or worker to create it)")
        # Also: a file without jobq's tables is an error, not migrated (a mistyped --db naming
        # another program's SQLite file gained jobq's two dozen tables from a mere `jobq list`).
        self._create = create
        unknown = set(options) - {"synchronous", "busy_timeout"}
        if unknown:
            raise ConfigError(f"unknown SQLite URL option(s): {', '.join(sorted(unknown))}")
        self.synchronous = options.get("synchronous", SYNCHRONOUS_DEFAULT).upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ConfigError(f"synchronous must be FULL, NORMAL, EXTRA or OFF, not {self.synchronous!r}")
        try:
            self.busy_timeout_ms = int(options.get("busy_timeout", BUSY_TIMEOUT_MS_DEFAULT))
        except ValueError:
            raise ConfigError("busy_timeout must be an integer number of milliseconds") from None
        # A busy_timeout asked for in the URL is the longest a write waits for the lock, retries
        # included: without this bound a write waited the timeout and then kept retrying for
        # LOCKED_GIVE_UP_SECONDS (an app's action froze for minutes behind a long transaction).
        self.give_up_seconds = (
            max(0.0, self.busy_timeout_ms / 1000) if "busy_timeout" in options else LOCKED_GIVE_UP_SECONDS
        )
        _check_sqlite_version()
        self._lock = threading.RLock()
        self._conn: apsw.Connection | None = None
        self._read_only_why: str | None = None  # why this connection was opened read-only
        self._immutable = False  # read-only mount, no -wal: read without locks (_connect_read_only)
        self._immutable_file: tuple[int, int, int] | None = None  # _file_identity at that open
        self._file: tuple[int, int] | None = None  # _inode of the file the connection has open
        self._file_check_at = 0.0  # time.monotonic() of the next _check_file
        self._pid = -1
        self._notifier = WakeNotifier(self._live_wake_addresses)
        self._finish_notifier = FinishNotifier(self.path)
        self._held_seen = HeldSeen()  # what blockers() found held throughout its last probe
        self._connect()

    # -- connection and transactions ---------------------------------------------------------
    def _connect(self) -> apsw.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # A connection inherited across fork() must not be used (or even closed) by the child.
        self._conn = None
        # data_version is one connection's count: a new one's says nothing of the old one's. The
        # same object emptied, as a blockers() call under way holds it.
        self._held_seen.forget()
        if not -(2**31) <= self.busy_timeout_ms < 2**31:
            # SQLite takes a C int; apsw would raise OverflowError (a traceback in the CLI).
            raise ConfigError(f"busy_timeout must be at most {2**31 - 1} milliseconds")
        read_only = self._read_only_why = _read_only_here(self.path) if os.path.exists(self.path) else None
        if read_only is not None:
            conn = self._connect_read_only(read_only)
            self._conn = conn
            self._pid = os.getpid()
            return conn
        self._immutable = False  # a read-only connection before this one may have been
        # The database holds every payload: what jobq creates is private, directories 0700 and
        # the file 0600 (a umask may narrow both further). SQLite gives -wal and -shm the mode of
        # the database file; left to itself it would create all three 0644.
        directory = os.path.dirname(self.path)
        missing: list[str] = []
        parent = directory
        while parent and not os.path.exists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        try:
            for path in reversed(missing):
                with contextlib.suppress(FileExistsError):  # another process was quicker
                    os.mkdir(path, 0o700)
        except OSError as exc:
            raise StorageError(f"cannot create the database directory {directory}: {exc.strerror}") from None
        if not os.path.exists(self.path):
            _refuse_orphans(self.path)
            # An empty file is a valid empty database. Any failure here is left to apsw below,
            # which names it (permissions, read-only mount).
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for _ in range(REPLACED_WHILE_OPENING_TRIES):
            opened = self._open_writable()
            if opened is not None:
                self._conn, self._file = opened
                self._pid = os.getpid()
                return self._conn
        raise StorageError(f"{self.path}: the file was replaced again and again while this process opened it")

    def _open_writable(self) -> tuple[apsw.Connection, tuple[int, int] | None] | None:
        """The database opened for reading and writing, set up and migrated, with the file's
        ``_inode``; None when the file was replaced between the open and the first read. ``jobq
        restore`` keeps every reader out while it puts a file in place (``copies.shut``): a
        process that opened the old file just before waits at its first read, and would then go
        on with the file set aside."""
        opened = _inode(self.path)
        try:
            conn = apsw.Connection(self.path)
        except apsw.Error as exc:
            raise _storage_error(exc, self.path) from None
        # A connection that fails to be set up or migrated is closed, not kept: it held the file
        # open (and its read lock) until collected, and a later call would have used it unmigrated.
        with _closed_on_error(conn):
            try:
                conn.set_busy_timeout(self.busy_timeout_ms)
                if not self._create:  # before WAL mode, which would be written into the file
                    self._check_jobq_tables(conn, "start a producer or worker to create it")
                mode = _journal_mode_wal(conn)
                if _inode(self.path) != opened:
                    # This connection is on the file set aside, and may have opened the new file's
                    # -wal and -shm (they are found by name).
                    _close_replaced(conn)
                    return None
                if str(mode).lower() != "wal":
                    raise StorageError(f"{self.path}: cannot switch to WAL mode (journal_mode={mode})")
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                # Checkpoints: the default auto-checkpoint (1000 pages) runs because every jobq read is
                # short; after a long reader is gone, this limit shrinks a WAL that grew meanwhile.
                conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
                _set_up_session(conn)
            except apsw.Error as exc:
                raise _storage_error(exc, self.path) from None
            self._migrate(conn)
            # The schema's triggers are for writers other than jobq: jobs_external_status records
            # a status set by hand (every jobq write moves rev itself, which the trigger tests
            # first), jobs_id_floor and jobs_id_moved keep ids from being reused after a delete or
            # an id change by hand (jobq's purge raises the floor itself: purge_raises_floor), and
            # the queue_controls checks refuse values jobq's own checks refuse first
            # (flow.control_defect). Coded into every UPDATE of a status, the first cost a claim or
            # completion a sub-program call per row: ~0.6-1 us a job of a batch, under the write
            # lock (issue 13). Off for this connection only, after the migrations: sqlite3, or an
            # application's own connection, still runs them. (It holds for a statement prepared
            # before too, as one taken from apsw's cache: checked.)
            conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
        return conn, opened

    def _connect_read_only(self, why: str) -> apsw.Connection:
        """The database on a read-only mount (a volume mounted `:ro` for the ops app, a backup
        inspected in place), or one this user may read but not write (an ops app run as another
        user, given read access to the queue's files): read it, and refuse every write with the
        usual one-line error. ``why``: which of these it is, for the errors.

        SQLite reads a WAL database read-only when its -wal and -shm files exist (it then keeps the
        shared index in its own memory). After a clean shutdown they are gone and cannot be made
        on this mount: the file is then complete by itself and is opened ``immutable`` (no locks,
        no WAL), which holds as long as nobody writes it. A writer (through another mount of the
        same files, or as another user) makes a -wal, and changes the file when it checkpoints:
        ``_locked`` checks for either after each transaction (``_writer_appeared``), and runs a
        transaction during which one happened again, on the file opened anew."""
        # Taken before the open: a write that lands after it makes the file differ at the next check.
        self._immutable_file = _file_identity(self.path)
        self._file = _inode(self.path)
        self._immutable = not os.path.exists(f"{self.path}-wal") and not os.path.exists(f"{self.path}-shm")
        try:
            conn = read_only_connection(self.path, immutable=self._immutable)
        except apsw.Error as exc:
            raise _storage_error(exc, self.path) from None
        with _closed_on_error(conn):
            try:
                conn.set_busy_timeout(self.busy_timeout_ms)
                self._check_jobq_tables(conn, why)
                _set_up_session(conn)
            except apsw.Error as exc:
                raise _storage_error(exc, self.path) from None
            if not self._schema_is_current(conn):
                raise StorageError(
                    f"{self.path}: {why}, and the database needs this jobq's schema upgrade (open it once "
                    "where it is writable)"
                )
        return conn

    def _check_jobq_tables(self, conn: apsw.Connection, why: str) -> None:
        """A file without jobq's tables is refused, not given them."""
        if not conn.execute(self.dialect.sql["schema_table_exists"]).fetchall():
            raise StorageError(f"no jobq queue in {self.path} ({why})")

    def _migrate(self, conn: apsw.Connection) -> None:
        if self._schema_is_current(conn):
            return
        # BEGIN IMMEDIATE: two processes opening a new file at once migrate one after the other.
        self._locked(
            lambda c: ops.drive(ops.migrate(self.dialect, MIGRATIONS, self.path, create=self._create), _runner(c)),
            write=True,
            conn=conn,
        )

    def _schema_is_current(self, conn: apsw.Connection) -> bool:
        """Whether every migration is applied, read without the write lock (WAL readers never
        wait): opening an up-to-date database then works while another process writes."""
        try:
            rows = self._locked(
                lambda c: c.execute(self.dialect.sql["schema_version"]).fetchall(), write=False, conn=conn
            )
        except StorageError:  # no jobq_schema table yet (a new file): the migration creates it
            return False
        return ops.schema_version(rows, self.path) == len(MIGRATIONS)

    def _locked(self, body: Any, *, write: bool, conn: apsw.Connection | None = None, begin: bool = True) -> Any:
        """Run ``body(connection)`` in one transaction (IMMEDIATE for writes), retrying on SQLITE_BUSY.

        ``busy_timeout`` makes a writer wait for the lock; a DEFERRED transaction that upgrades
        can still get SQLITE_BUSY without the handler being called, hence BEGIN IMMEDIATE for
        every write and this retry loop around the whole transaction. With ``begin`` false the
        body begins the transaction itself, or runs one statement in autocommit (``_transaction``).
        """
        started = time.monotonic()
        delay = 0.001
        told = False
        with self._lock:
            if started >= self._file_check_at and conn is None:
                self._check_file(started)
            while True:
                c = conn or self._connect()
                try:
                    if begin:
                        c.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    try:
                        result = body(c)
                        if not c.get_autocommit():
                            c.execute("COMMIT")
                        if self._immutable and self._writer_appeared(conn):  # no call on the hot path
                            continue  # run again, on the file opened anew with SQLite's locks
                        return result
                    except BaseException:
                        if not c.get_autocommit():
                            c.execute("ROLLBACK")
                        raise
                except apsw.BusyError:
                    waited = time.monotonic() - started
                    if waited > self.give_up_seconds:
                        raise StorageError(
                            f"{self.path}: database stayed locked for {self.give_up_seconds:g} s ({self._holders()})"
                        ) from None
                    if not told and waited >= LOCK_WAIT_NOTICE_SECONDS:
                        told = True  # once a call; the escapes measured above come at once, not here
                        log.warning(
                            "%s: still waiting for the database's write lock after %.0f s (%s); giving up after %g s",
                            self.path,
                            waited,
                            self._holders(),
                            self.give_up_seconds,
                        )
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.1)
                except apsw.Error as exc:
                    if self._immutable and self._writer_appeared(conn):
                        continue
                    if write and conn is None and self._now_writable():
                        continue  # opened anew, for writing
                    raise _storage_error(exc, self.path) from None

    def blockers(self) -> list[str]:
        """The processes holding up the queue's writes, which no timeout ends: holders of its write
        lock that are stopped (SIGSTOP, a debugger), and those that held it for
        ``holders.HOLD_PROBE_SECONDS`` while nobody committed (a transaction left open in a
        `sqlite3` shell); ``holders.held_up_by``. Takes up to that long while a process holds the
        lock and nobody commits, and no time while nothing holds it, nor for a holder this backend
        found so before when nobody committed since (``holders.HeldSeen``)."""
        return held_up_by(self.path, self._data_version, seen=self._held_seen)

    def _data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` on this backend's connection: it moves with every
        commit of another connection."""
        rows = self._locked(lambda c: c.execute("PRAGMA data_version").fetchall(), write=False, begin=False)
        return int(rows[0][0])

    def _holders(self) -> str:
        """Who holds the write lock, read from /proc (a frozen holder is named so): nothing can
        take the lock from it; the operator can, once told who it is."""
        return holders_text(self.path) or "another process holds its write lock"

    def _check_file(self, now: float) -> None:
        """Whether the path still names the file this process has open; if not (removed, moved
        away, or replaced by another file, by hand), the connection is let go and StoreReplaced
        raised: the next call opens what the path names now. Kept, the process would go on in a
        file nobody else sees (a worker claiming nothing of the new queue's jobs). Closed by
        ``_close_replaced``: a -wal it leaves at the old name keeps its commits, and
        ``_refuse_orphans`` keeps a new database from taking it as its own."""
        self._file_check_at = now + FILE_CHECK_SECONDS
        conn = self._conn
        if conn is None or self._immutable or self._pid != os.getpid():
            return  # immutable: _writer_appeared compares the whole identity after each transaction
        found = _inode(self.path)
        if found == self._file:
            return
        self._conn = None
        _close_replaced(conn)
        # Under the lock, before any transaction on what is there now: a job claimed from here on
        # is of the new file, one claimed before is of the old (the worker drops its run).
        self.generation += 1
        what = "removed (or moved away)" if found is None else "replaced by another file"
        raise StoreReplaced(
            f"{self.path} was {what} while this process had it open (what it wrote stays in that "
            "file); the next call opens the file at this path"
        )

    def _now_writable(self) -> bool:
        """Opened read-only (``_connect_read_only``), whether the database may be written now (a
        mount made writable again, permissions granted). If so the connection is dropped, and
        ``_connect`` opens the file for writing: a write failed as read-only until the process
        restarted, and named file permissions as the cause."""
        if self._read_only_why is None or _read_only_here(self.path) is not None:
            return False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        return True

    def _writer_appeared(self, conn: apsw.Connection | None) -> bool:
        """Read as immutable (``_connect_read_only``; the callers test that first), whether a
        writer's -wal has appeared, or the file changed since it was opened: a transaction that ran
        meanwhile may have missed commits, or met a page a checkpoint was rewriting (an error), so
        it must run again. The connection is then dropped, and ``_connect`` opens the file anew:
        with SQLite's locks while a -wal exists, else immutable again. A writer that opened,
        committed and closed between two transactions left no -wal (its close checkpoints and
        deletes it), only a changed file; the reader served its old pages until it restarted."""
        if conn is not None:
            return False
        if not os.path.exists(f"{self.path}-wal") and _file_identity(self.path) == self._immutable_file:
            return False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        return True

    def _transaction(
        self, make: MakeOp[T], *, write: bool, on_unknown: MakeOp[T] | None = None, may_start_alone: bool = False
    ) -> T:
        """``may_start_alone``: the operation's first step reads no clock (an enqueue is given its
        ``now``), so its first command may be made before the write lock is held, to learn whether
        it is a statement sent alone. Any other operation's first step runs after BEGIN: a claim or
        heartbeat reads the clock there, and a lease must run from when the lock was granted."""
        # A COMMIT either returns or raises here (a local file): no outcome is unknown, and a
        # failed one is reported as StorageError (the worker repeats its writes as `repeat`).
        notify: set[str] = set()
        finished: set[int] = set()

        def body(c: apsw.Connection) -> T:
            notify.clear()  # a retried transaction starts over
            finished.clear()
            # ops.drive(make(), _runner(c, notify, finished)), with its two usual commands run
            # here rather than through a call each: a per-job claim, completion or enqueue is one
            # statement and at most one Notify (issue 13: the driver's calls were ~5% of its CPU).
            op = make()
            try:
                # A write that is one statement sent alone runs in autocommit: SQLite makes it a
                # write transaction of its own, taking the lock as BEGIN IMMEDIATE does (the busy
                # handler waits for it). BEGIN and COMMIT are two statements fewer (an enqueue:
                # ~7 us of its CPU at NORMAL, issue 13). Only wake-ups may follow it.
                # A read's first command is made before its BEGIN as well: a deferred BEGIN takes
                # no lock and no snapshot until its first statement, so nothing is seen earlier,
                # and a read sent alone (``ops.claimed_rows``) needs no BEGIN and COMMIT.
                command: ops.Command | None = next(op) if may_start_alone or not write else None
                alone = type(command) is ops.Exec and command.alone
                if not alone:
                    c.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                if command is None:
                    command = next(op)
                while True:
                    if type(command) is ops.Exec:
                        rows = c.execute(command.sql, command.params).fetchall()
                    elif type(command) is ops.Notify:
                        notify.update(command.queues)
                        finished.update(command.finished)
                        rows = []
                    else:
                        rows = _runner(c, notify, finished)(command)
                    command = op.send(rows)
                    if alone and type(command) is not ops.Notify:
                        # Its statement committed: a retry (SQLITE_BUSY) would repeat it.
                        raise RuntimeError("an operation yielded a statement after one it sent alone")
            except StopIteration as stop:
                done: T = stop.value
                return done

        result: T = self._locked(body, write=write, begin=False)
        self._wake(notify, finished)
        return result

    def _wake(self, notify: set[str], finished: set[int]) -> None:
        """After a commit, what its operation asked for: the idle workers woken (they must see
        the new jobs, so never before), and the waiters of the jobs it finished told."""
        if notify:
            self._notifier.notify(time.time())
        if finished:
            self._finish_notifier.notify(finished)

    def enqueue(self, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()) -> list[int]:
        # An enqueue is given its ``now`` and reads no clock, so it may start alone (``ops.enqueue``
        # decides which: one job without keys). No ``on_unknown`` settle: here a COMMIT's outcome
        # is never unknown (``_transaction``).
        if not jobs:
            return []
        one = ops.insert_alone(self.dialect, jobs, now, traces)
        if one is None:
            return self._transaction(
                lambda: ops.enqueue(self.dialect, jobs, now, traces), write=True, may_start_alone=True
            )
        # ``ops.enqueue``'s usual case run here directly (its one statement, sent alone in
        # autocommit, then the queue's wake-up if the job is due), without the operation's
        # generator and commands (issue 13: 21k of the 191k instructions of an enqueue).
        rows = self._locked(lambda c: c.execute(*one).fetchall(), write=True, begin=False)
        if ops.due_now(jobs[0], now):  # after the commit: a woken worker must see the new job
            self._notifier.notify(time.time())
        return [rows[0][0]]

    def claim(self, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, clock: Clock) -> list[Job]:
        # ``ops.claim``'s statements run here directly, without the plan, the operation's generator
        # and its commands (issue 13: 17k of the 392k instructions of a per-job claim+complete).
        # SQLite's claim is one transaction: its statement passes over paused and limited queues
        # itself, ``claim_passed_over`` follows when it got fewer jobs than asked, and no
        # controlled queue is left for a second transaction (that is PostgreSQL's claim_flagged).
        # The Jobs are built after the commit (``Claimed``), outside the write lock.
        d, nonce = self.dialect, _nonce()
        notify: set[str] = set()  # what the operations it runs ask for, as in ``_transaction``
        finished: set[int] = set()

        def body(c: apsw.Connection) -> ops.Claimed:
            notify.clear()  # a retried transaction starts over
            finished.clear()
            # BEGIN IMMEDIATE has run: the clock is read once the write lock is held.
            statement, params, unread = ops.claim_statement(d, worker_id, queues, limit, lease_seconds, clock(), nonce)
            rows = c.execute(statement, params).fetchall()
            claimed = ops.Claimed(rows, unread=unread)
            if len(rows) < limit:
                more = ops.claim_passed_over(d, worker_id, queues, limit - len(rows), lease_seconds, clock, nonce)
                claimed.jobs += ops.drive(more, _runner(c, notify, finished))
            return claimed

        claimed: ops.Claimed = self._locked(body, write=True)
        self._wake(notify, finished)
        if claimed.unread:
            claimed.rows = self._read(lambda: ops.claimed_rows(d, claimed))
        return claimed.build()

    def complete(self, items: Sequence[Completion], clock: Clock, *, repeat: bool = False) -> list[bool]:
        if len(items) != 1 or items[0].note:
            return super().complete(items, clock, repeat=repeat)
        # ``ops.complete``'s per-job case run here directly, as ``claim`` (21k of the remaining
        # 375k instructions): its fenced statement, the refusal when its lease did not hold, and
        # the finish's wake-up after the commit. A batch, or a note, takes the general operation.
        d, item = self.dialect, items[0]
        notify: set[str] = set()  # the refusal's, as in ``_transaction`` (it asks for none today)
        finished: set[int] = set()

        def body(c: apsw.Connection) -> bool:
            notify.clear()  # a retried transaction starts over
            finished.clear()
            now = clock()
            if c.execute(*ops.completion(d, item, now)).fetchall():
                finished.add(item.lease.job_id)
                return True
            return ops.drive(ops.completion_refused(d, item.lease, now, repeat), _runner(c, notify, finished))

        done: bool = self._locked(body, write=True)
        self._wake(notify, finished)
        return [done]

    def _in_caller_transaction(self, conn: object, make: MakeOp[T]) -> T:
        # The application's connection, in its transaction (see caller.py for what is checked).
        # The wake-up is sent before the caller commits: its transaction holds SQLite's one write
        # lock from the insert on, so a woken worker's claim (BEGIN IMMEDIATE) waits for the commit
        # and then sees the jobs; after a rollback it finds nothing and sleeps again. The addresses
        # are read on the caller's connection: jobq's own would wait behind that same lock.
        # Waiters of the jobs it finished are told now too: a waiter that then finds its job not
        # finished yet reads it again under the write lock (``get_after_writers``), that is, once
        # this transaction has ended.
        notify: set[str] = set()
        finished: set[int] = set()
        with caller_runner(conn, self.path, notify, finished) as run:
            result = ops.drive(make(), run)
            if notify:
                since = time.time() - WAKE_ADDRESS_MAX_AGE_SECONDS
                self._notifier.notify(time.time(), lambda now: ops.drive(ops.live_wake_addresses(DIALECT, since), run))
        if finished:
            self._finish_notifier.notify(finished)
        return result

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
        self._notifier.close()
        self._finish_notifier.close()

    # -- wake-up ---------------------------------------------------------------------------
    def listener(self, worker_id: str, queues: Sequence[str]) -> SqliteListener:
        return SqliteListener(self.path, worker_id)

    def finish_waiter(self, job_id: int) -> FinishWaiter:
        """Wakes when job ``job_id`` finishes (COMPLETED, FAILED, CANCELLED) in any process on this
        machine, by any path (a worker, the rescuer, an operator, an application's transaction).
        Not woken: a status set by hand in SQL (the waiter's poll sees it)."""
        return FinishWaiter(self.path, job_id)

    def get_after_writers(self, job_id: int) -> Job | None:
        # BEGIN IMMEDIATE waits (busy timeout) for the transaction holding the write lock: one that
        # finished this job from an application's transaction sent the wake-up before its COMMIT.
        # It writes nothing (no WAL frame), and runs only after a wake-up that found no finish.
        return self._transaction(lambda: ops.get(self.dialect, job_id), write=True)

    def register_worker(self, info: Any) -> None:
        super().register_worker(info)
        self._notifier.invalidate()  # a new address to wake

    def _live_wake_addresses(self, now: float) -> list[str]:
        return self._read(lambda: ops.live_wake_addresses(self.dialect, now - WAKE_ADDRESS_MAX_AGE_SECONDS))

    # -- maintenance -----------------------------------------------------------------------
    def integrity_check(self) -> str:
        rows = self._locked(lambda c: c.execute("PRAGMA integrity_check").fetchall(), write=False)
        return "; ".join(str(r[0]) for r in rows)

    def backup(self, dest: str, *, compact: bool = False) -> QueueCopy:
        from jobq.backends.sqlite import copies  # here: copies imports this module

        with self._lock:
            conn = self._connect()
            if self._read_only_why is not None:
                # Only this connection can read it here (immutable, or read-only with its -wal).
                return copies.backup(conn, self.path, dest, compact=compact)
        # A connection of its own, outside the lock: a copy of gigabytes must not hold up this
        # process's other calls meanwhile (a worker's heartbeats, the apps' other pages).
        try:
            source = apsw.Connection(self.path, flags=apsw.SQLITE_OPEN_READONLY)
            source.set_busy_timeout(self.busy_timeout_ms)
        except apsw.Error as exc:
            raise _storage_error(exc, self.path) from None
        try:
            return copies.backup(source, self.path, dest, compact=compact)
        finally:
            source.close()

    def wal_checkpoint(self) -> None:
        with self._lock, contextlib.suppress(apsw.Error):
            self._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")


_PARAMETER = re.compile(r":(\w+)")


SqliteValue = int | float | bytes | str | None
"""A value SQLite hands a function of ours, and takes back."""


def _lower(*args: SqliteValue) -> SqliteValue:
    """``LOWER_FUNCTION``: text in lower case as Python folds it (every letter: SQLite's own
    ``lower()`` folds ASCII only); another value (NULL, a number written by hand) as it is.
    Registered with one argument (apsw types a function's arguments as ``*args``)."""
    (value,) = args
    return value.lower() if isinstance(value, str) else value


@functools.lru_cache(maxsize=256)
def _parameter_getter(sql: str) -> Callable[[Params], tuple[Any, ...]]:
    """Takes a row's values out of its named parameters as a tuple, in the order SQLite numbers
    them (the distinct ``:name`` parameters in order of first appearance), in C."""
    names = tuple(dict.fromkeys(_PARAMETER.findall(sql)))
    if len(names) == 1:
        return lambda params: (params[names[0]],)
    return operator.itemgetter(*names)


def _runner(
    c: apsw.Connection, notify: set[str] | None = None, finished: set[int] | None = None
) -> Callable[[ops.Command], ops.Rows]:
    """Runs an operation's commands on ``c``; queues to wake are gathered in ``notify`` (sent
    after the commit, by the caller: a woken worker must see the new jobs)."""

    def run(command: ops.Command) -> ops.Rows:
        if isinstance(command, ops.Exec):
            return c.execute(command.sql, command.params).fetchall()
        if isinstance(command, ops.ExecMany):
            if len(command.params) == 1:  # the common single job: execute() is cheaper to set up
                return c.execute(command.sql, command.params[0]).fetchall()
            if not command.params:
                return []
            # Bound by position (SQLite numbers named parameters in order of first appearance):
            # binding each row of a batch by name cost a quarter of a batched claim+complete.
            return list(c.executemany(command.sql, map(_parameter_getter(command.sql), command.params)))
        if notify is not None:
            notify.update(command.queues)
        if finished is not None:
            finished.update(command.finished)
        return []

    return run


def _check_sqlite_version() -> None:
    version = tuple(int(p) for p in apsw.sqlite_lib_version().split(".")[:3])
    if version < SQLITE_MIN_VERSION:
        need = ".".join(map(str, SQLITE_MIN_VERSION))
        raise StorageError(
            f"SQLite {apsw.sqlite_lib_version()} is too old: jobq needs >= {need} (older versions have the "
            "WAL-reset bug that can corrupt a database written by several processes); upgrade apsw"
        )


def _storage_error(exc: apsw.Error, path: str) -> StorageError:
    """Turn an apsw error into one readable line naming the database and the likely cause."""
    reasons: list[tuple[type[apsw.Error], str]] = [
        (apsw.CantOpenError, "cannot open the database file (missing directory or no permission)"),
        (apsw.ReadOnlyError, "the database is read-only (file or directory permissions)"),
        (apsw.FullError, "the disk is full"),
        (apsw.CorruptError, "the database file is corrupt"),
        (apsw.NotADBError, "the file is not a SQLite database (or is corrupt)"),
        (apsw.IOError, "disk I/O error"),
        (apsw.PermissionsError, "permission denied"),
        # The one SQLITE_MISMATCH jobq can meet: a new job's id (NEXT_JOB_ID_SQL) one above the
        # largest integer is a REAL, which an INTEGER PRIMARY KEY refuses. Only a hand can put an
        # id there; PostgreSQL's sequence says the same in its own words.
        (apsw.MismatchError, ops.NO_JOB_ID_LEFT),
    ]
    if isinstance(exc, apsw.CantOpenError | apsw.ReadOnlyError) and (why := _read_only_here(path)):
        return StorageError(f"{path}: {why}")
    if isinstance(exc, apsw.CantOpenError) and os.path.isdir(path):
        # `--db data` for `--db data/queue.db`: "missing directory or no permission" sent the
        # user looking for a directory that is there.
        return StorageError(f"{path}: is a directory, not a database file (name a file in it, e.g. {path}/queue.db)")
    for kind, text in reasons:
        if isinstance(exc, kind):
            return StorageError(f"{path}: {text}")
    return StorageError(f"{path}: {exc}")


@contextlib.contextmanager
def _closed_on_error(conn: apsw.Connection) -> Iterator[None]:
    """Close ``conn`` if the block raises (and raise on)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(apsw.Error):
            conn.close()
        raise


def _close_replaced(conn: apsw.Connection) -> None:
    """Close a connection whose file is no longer the one its path names, without the checkpoint
    a last connection makes at its close, which then deletes the -wal and -shm by name: they may
    be another database's by now. (SQLite also skips it for a file it finds moved, pager.c
    ``databaseIsUnmoved``; this does not rest on that.)"""
    with contextlib.suppress(apsw.Error):
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        conn.close()


def read_only_connection(path: str, *, immutable: bool) -> apsw.Connection:
    """``path`` opened read-only; ``immutable``: with no locks and no WAL (the file must be whole
    by itself, as it is when no -wal is beside it)."""
    uri = "file:" + urllib.parse.quote(path) + ("?immutable=1" if immutable else "")
    return apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)


def _refuse_orphans(path: str) -> None:
    """Refuses to create a database where its -wal or -shm is left: the database was removed
    while in use (or without them), and SQLite would take them for the new file's. The -wal may
    hold the last commits of the removed one; a process still running may be writing it."""
    left = [f"{path}{suffix}" for suffix in ("-wal", "-shm") if os.path.exists(f"{path}{suffix}")]
    if left:
        there = f"{' and '.join(left)} {'are' if len(left) > 1 else 'is'} there"
        raise StorageError(
            f"{path} does not exist, but {there}: the database was removed while in use "
            "or without them, and a new one would take them as its own. Stop every process that "
            "used it, then put the database back, or move them aside"
        )


def _inode(path: str) -> tuple[int, int] | None:
    """Which file ``path`` names now: (device, inode), None when none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _file_identity(path: str) -> tuple[int, int, int] | None:
    """What tells one state of a database file from a later one without reading it: its inode,
    size and modification time (a checkpoint writes the file; a file replaced has a new inode)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _set_up_session(conn: apsw.Connection) -> None:
    """What every connection jobq opens needs, writable or read-only."""
    # Ephemeral tables (an IN list, a sort) in memory: backed by a temporary file, each statement
    # set up and tore down its page cache (measured on the bare claim statement at
    # synchronous=OFF: 100 jobs 590 us against 230 us, one job 138 us against 36 us).
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.create_scalar_function(LOWER_FUNCTION, _lower, 1, deterministic=True)


def _read_only_here(path: str) -> str | None:
    """Why this process may not write the database at ``path``, where it could read it, or None.
    Opened as usual, such a file failed every command, reads included: SQLite could not make the
    -wal and -shm files that WAL mode needs. Root passes every permission check, so only a mount
    makes it read-only for root."""
    if _on_read_only_mount(path):
        return "the filesystem holding the database is mounted read-only"
    if not os.access(path, os.R_OK):
        return None  # no file, or not even readable: the usual error says which
    if not os.access(path, os.W_OK):
        return "this user may read the database but not write it (file permissions)"
    directory = os.path.dirname(path) or "."
    if not os.access(directory, os.W_OK | os.X_OK) and not all(
        os.access(f"{path}{suffix}", os.W_OK) for suffix in ("-wal", "-shm")
    ):
        return "this user may not create the database's -wal and -shm files (directory permissions)"
    return None


def _on_read_only_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(os.path.dirname(path) or ".").f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _journal_mode_wal(conn: apsw.Connection) -> str:
    """``PRAGMA journal_mode = WAL``, retried while another process holds the lock it needs.

    Switching a new file to WAL takes an exclusive lock, and SQLite can answer SQLITE_BUSY at once
    without calling the busy handler: several processes opening a fresh database together (8
    producers in tests/integration/test_unique_keys.py) saw "database is locked" at open."""
    return str(while_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]))


def while_busy(call: Callable[[], T]) -> T:
    """``call`` again while SQLite answers SQLITE_BUSY at once (a lock it needs is held; its busy
    handler is not called for every lock), up to ``LOCKED_GIVE_UP_SECONDS``, then BusyError."""
    deadline = time.monotonic() + LOCKED_GIVE_UP_SECONDS
    delay = 0.001
    while True:
        try:
            return call()
        except apsw.BusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)
