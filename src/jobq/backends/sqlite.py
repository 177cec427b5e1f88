"""SQLite backend, through apsw (which bundles a current SQLite).

Design and limits, stated openly:

- One machine only. WAL mode needs shared memory between the processes, so the database must be
  on a local filesystem (never NFS/SMB). For several machines use the PostgreSQL backend.
- One writer at a time: every read-then-write is one ``BEGIN IMMEDIATE`` transaction, so a claim
  needs no locking hint and two processes can never take the same job. ``busy_timeout`` makes a
  writer wait for the lock; a retry loop around the whole transaction covers the rare
  ``SQLITE_BUSY`` that still escapes (measured: 1-2 per 20,000 jobs at 2-4 processes).
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
import json
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import apsw

from jobq.backends.base import (
    SORT_FIELDS,
    ActionResult,
    Bucket,
    Clock,
    Completion,
    Failure,
    HeartbeatResult,
    JobFilter,
    Lease,
    NewJob,
    Page,
    QueueStats,
    RescueResult,
    WorkerInfo,
)
from jobq.backends.common import (
    APPLIED_STATUS,
    HISTORY_SAMPLE_LIMIT,
    JOB_COLUMNS,
    already_applied,
    build_buckets,
    clip,
    event_from_row,
    job_from_row,
    like_pattern,
    plan_operator_action,
    plan_rescue,
    worker_from_row,
)
from jobq.backends.sqlite_wake import SqliteListener, WakeNotifier
from jobq.errors import ConfigError, StorageError
from jobq.job import TRANSITIONS, Action, Event, EventKind, Job, JobStatus
from jobq.redact import redact_url

T = TypeVar("T")
#: apsw types every row as a union of all SQL types; rows are checked by the contract suite instead.
Conn = Any

SQLITE_MIN_VERSION = (3, 51, 3)
SYNCHRONOUS_DEFAULT = "FULL"
BUSY_TIMEOUT_MS_DEFAULT = 10_000
#: Give up on a write that stayed locked this long, with a clear error instead of a hang.
LOCKED_GIVE_UP_SECONDS = 120.0
SCHEMA_VERSION = 2
#: The WAL is truncated back to this size after a checkpoint resets it.
WAL_SIZE_LIMIT_BYTES = 8 * 1024 * 1024

_COLS = ", ".join(JOB_COLUMNS)
_NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"


def _in(statuses: frozenset[JobStatus]) -> str:
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


# The statuses each worker write is allowed from, taken from the transition table.
_FROM_COMPLETE = _in(TRANSITIONS[Action.COMPLETE].sources)
_FROM_FAIL = _in(TRANSITIONS[Action.FAIL].sources | TRANSITIONS[Action.RETRY].sources)
_FROM_RESCUE = _in(TRANSITIONS[Action.RESCUE].sources)

# -- schema ---------------------------------------------------------------------------------
# Each migration is a list of statements applied in one transaction; the version reached is
# recorded in jobq_schema. Only append: never edit a released migration.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused after purge
            queue TEXT NOT NULL DEFAULT 'default',
            task TEXT NOT NULL DEFAULT '',
            payload TEXT NOT NULL,                 -- JSON, never pickle
            status TEXT NOT NULL DEFAULT 'PENDING'
                CHECK (status IN ('PENDING','PROCESSING','COMPLETED','FAILED','CANCELLED')),
            priority INTEGER NOT NULL DEFAULT 0,   -- lower runs first, like nice
            run_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL DEFAULT 3,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            timeout REAL,
            last_error TEXT,
            lease_owner TEXT,
            lease_token TEXT,
            lease_expires_at REAL,
            idempotency_key TEXT,
            result TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            run INTEGER NOT NULL DEFAULT 1,
            rev INTEGER NOT NULL DEFAULT 0         -- bumped by every jobq status write
        )""",
        # Claim order, pending rows only: the claim never scans finished jobs.
        "CREATE INDEX jobs_claim ON jobs (queue, priority, run_at, id) WHERE status = 'PENDING'",
        "CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'PROCESSING'",
        "CREATE UNIQUE INDEX jobs_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL",
        # No plain index on status: it cost ~20% of claim+complete time, and the partial indexes
        # above already cover PENDING and PROCESSING; listing rarer statuses scans by id.
        "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL",
        """CREATE TABLE job_events (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            actor TEXT,
            attempt INTEGER,
            detail TEXT
        )""",
        "CREATE INDEX job_events_job ON job_events (job_id, id)",
        "CREATE INDEX job_events_at ON job_events (at)",
        """CREATE TABLE workers (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            queues TEXT NOT NULL,
            started_at REAL NOT NULL,
            last_seen_at REAL NOT NULL,
            stopped_at REAL,
            current_jobs TEXT NOT NULL DEFAULT '[]',
            jobs_done INTEGER NOT NULL DEFAULT 0,
            jobs_failed INTEGER NOT NULL DEFAULT 0,
            wake_address TEXT
        )""",
        # A status changed by hand (e.g. `sqlite3 queue.db "UPDATE jobs SET status='FAILED' ..."`)
        # leaves rev unchanged: record it as an event, stamp the times, and drop any lease so a
        # worker still holding one is refused.
        f"""CREATE TRIGGER jobs_external_status AFTER UPDATE OF status ON jobs
            WHEN NEW.rev IS OLD.rev AND NEW.status IS NOT OLD.status
            BEGIN
                UPDATE jobs SET
                    rev = rev + 1,
                    updated_at = {_NOW_SQL},
                    finished_at = CASE WHEN NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
                        THEN coalesce(NEW.finished_at, {_NOW_SQL}) ELSE NULL END,
                    last_error = CASE WHEN NEW.status = 'FAILED'
                        THEN coalesce(NEW.last_error, 'set to FAILED outside jobq')
                        ELSE NEW.last_error END,
                    lease_token = CASE WHEN NEW.status = 'PROCESSING' THEN NEW.lease_token END,
                    lease_expires_at = CASE WHEN NEW.status = 'PROCESSING'
                        THEN NEW.lease_expires_at END
                WHERE id = NEW.id;
                INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
                VALUES (NEW.id, {_NOW_SQL}, 'external_update', 'sql', NEW.attempts,
                        json_object('from', OLD.status, 'to', NEW.status));
            END""",
    ],
    [
        # Liveness by pid is only meaningful inside one process table: the kernel's boot id and the
        # PID namespace of the worker (see jobq.worker.rescuer.process_table_id). NULL: unknown.
        "ALTER TABLE workers ADD COLUMN process_table TEXT",
    ],
]

# Worker writes (complete, retry, fail, release, ack_cancel) keep the token of the lease that made
# them: a write repeated after its commit's reply was lost is then recognised as already applied
# (``common.already_applied``); every fence still requires status PROCESSING, so a kept token
# grants nothing. Operator actions and rescues clear it.
# -- named queries ----------------------------------------------------------------------------
Q_INSERT_JOB = """
INSERT INTO jobs (queue, task, payload, priority, run_at, max_attempts, timeout,
                  idempotency_key, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id"""
Q_JOB_BY_KEY = "SELECT id FROM jobs WHERE idempotency_key = ?"
Q_EVENT = "INSERT INTO job_events (job_id, at, kind, actor, attempt, detail) VALUES (?, ?, ?, ?, ?, ?)"
Q_LEASE_STATE = "SELECT status, lease_token FROM jobs WHERE id = ?"


def q_claim(n_queues: int) -> str:
    """The claim: one UPDATE over the first due PENDING rows, in the partial index's order.

    ``queue IN (?)`` with one queue is an equality, so SQLite walks ``jobs_claim`` in order and
    stops after LIMIT rows (json_each or a sort here scanned every pending row: 3x slower).
    """
    marks = ", ".join("?" * n_queues)
    return f"""
UPDATE jobs SET status = 'PROCESSING', attempts = attempts + 1, rev = rev + 1,
    lease_owner = ?, lease_token = lower(hex(randomblob(8))), lease_expires_at = ?,
    started_at = ?, updated_at = ?, cancel_requested = 0
WHERE id IN (SELECT id FROM jobs WHERE status = 'PENDING' AND queue IN ({marks}) AND run_at <= ?
             ORDER BY priority, run_at, id LIMIT ?)
RETURNING {_COLS}"""


Q_HEARTBEAT = """
UPDATE jobs SET lease_expires_at = ?, updated_at = ?
WHERE id = ? AND status = 'PROCESSING' AND lease_token = ?
RETURNING cancel_requested"""
Q_COMPLETE = f"""
UPDATE jobs SET status = 'COMPLETED', rev = rev + 1, finished_at = ?1, updated_at = ?1,
    result = ?2, last_error = NULL, lease_expires_at = NULL
WHERE id = ?3 AND lease_token = ?4 AND status IN {_FROM_COMPLETE}
RETURNING id, ?4, attempts"""
Q_RETRY = f"""
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = ?1, run_at = ?2, last_error = ?3,
    lease_expires_at = NULL
WHERE id = ?4 AND lease_token = ?5 AND status IN {_FROM_FAIL}
RETURNING attempts"""
Q_FAIL = f"""
UPDATE jobs SET status = 'FAILED', rev = rev + 1, updated_at = ?1, finished_at = ?1, last_error = ?3,
    lease_expires_at = NULL
WHERE id = ?4 AND lease_token = ?5 AND status IN {_FROM_FAIL}
RETURNING attempts"""
Q_RELEASE = """
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = ?1, run_at = ?1,
    attempts = max(0, attempts - 1), lease_expires_at = NULL
WHERE id = ?2 AND lease_token = ?3 AND status = 'PROCESSING'
RETURNING attempts"""
Q_ACK_CANCEL = """
UPDATE jobs SET status = 'CANCELLED', rev = rev + 1, updated_at = ?1, finished_at = ?1,
    lease_expires_at = NULL
WHERE id = ?2 AND lease_token = ?3 AND status = 'PROCESSING' AND cancel_requested = 1
RETURNING attempts"""
Q_RESCUABLE = f"""
SELECT id, lease_owner, lease_token, attempts, max_attempts, cancel_requested FROM jobs
WHERE status IN {_FROM_RESCUE}"""
Q_LEASE_GONE = "lease_expires_at IS NULL OR lease_expires_at < ?"
Q_RESCUE = """
UPDATE jobs SET status = ?1, rev = rev + 1, updated_at = ?2, run_at = ?3, last_error = ?4,
    finished_at = CASE WHEN ?1 = 'PENDING' THEN NULL ELSE ?2 END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = ?5 AND status = 'PROCESSING' AND lease_token IS ?6"""
Q_RESUBMIT = """
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = ?1, run_at = ?1, attempts = 0,
    run = run + 1, started_at = NULL, finished_at = NULL, result = NULL, cancel_requested = 0,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE id = ?2 AND status = ?3"""
Q_CANCEL = """
UPDATE jobs SET status = 'CANCELLED', rev = rev + 1, updated_at = ?1, finished_at = ?1,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = ?2 AND status = ?3"""
Q_REQUEST_CANCEL = """
UPDATE jobs SET cancel_requested = 1, updated_at = ?1 WHERE id = ?2 AND status = 'PROCESSING'"""
Q_FINISHED_BY_KIND = (
    "SELECT kind, count(*) FROM job_events WHERE at >= ? AND kind IN ('completed', 'failed', 'expired') GROUP BY kind"
)
Q_EXPIRED_COUNT = (
    "SELECT count(*) FROM jobs WHERE status = 'PROCESSING' AND (lease_expires_at IS NULL OR lease_expires_at < ?)"
)
Q_HISTORY_KINDS = (
    "SELECT CAST((at - ?1) / ?2 AS INTEGER) AS b, kind, count(*) FROM job_events WHERE at >= ?1 GROUP BY b, kind"
)
Q_LIVE_WAKE_ADDRESSES = """
SELECT wake_address FROM workers
WHERE stopped_at IS NULL AND wake_address IS NOT NULL AND last_seen_at > ?"""


def _where(where: JobFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of a job filter."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, values in (
        ("status", [s.value for s in where.statuses]),
        ("queue", list(where.queues)),
        ("id", list(where.ids)),
        ("task", list(where.tasks)),
    ):
        if values:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    if where.search:
        clauses.append("payload LIKE ? ESCAPE '\\'")
        params.append(like_pattern(where.search))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


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


class SqliteBackend:
    """The embedded default backend. See the module docstring for its limits."""

    single_host = True  # WAL needs shared memory: every process using the file is on this machine

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        path, options = parse_sqlite_url(url)
        self.path = os.path.abspath(path)
        if not create and not os.path.exists(self.path):
            raise StorageError(f"no database at {self.path} (start a producer or worker to create it)")
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
        _check_sqlite_version()
        self._lock = threading.RLock()
        self._conn: apsw.Connection | None = None
        self._pid = -1
        self._notifier = WakeNotifier(self._live_wake_addresses)
        self._connect()

    # -- connection and transactions ---------------------------------------------------------
    def _connect(self) -> apsw.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # A connection inherited across fork() must not be used (or even closed) by the child.
        self._conn = None
        if not -(2**31) <= self.busy_timeout_ms < 2**31:
            # SQLite takes a C int; apsw would raise OverflowError (a traceback in the CLI).
            raise ConfigError(f"busy_timeout must be at most {2**31 - 1} milliseconds")
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
            # An empty file is a valid empty database. Any failure here is left to apsw below,
            # which names it (permissions, read-only mount).
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        try:
            conn = apsw.Connection(self.path)
            conn.set_busy_timeout(self.busy_timeout_ms)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path}: cannot switch to WAL mode (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # Checkpoints: the default auto-checkpoint (1000 pages) runs because every jobq read is
            # short; after a long reader is gone, this limit shrinks a WAL that grew meanwhile.
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
        except apsw.Error as exc:
            raise _storage_error(exc, self.path) from None
        self._conn = conn
        self._pid = os.getpid()
        self._migrate(conn)
        return conn

    def _migrate(self, conn: apsw.Connection) -> None:
        def run(c: Conn) -> None:
            c.execute("CREATE TABLE IF NOT EXISTS jobq_schema (version INTEGER NOT NULL, applied_at REAL NOT NULL)")
            current = c.execute("SELECT coalesce(max(version), 0) FROM jobq_schema").fetchall()[0][0]
            if current > len(MIGRATIONS):
                raise StorageError(
                    f"{self.path}: schema version {current} is newer than this jobq knows "
                    f"({len(MIGRATIONS)}); upgrade jobq"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    c.execute(statement)
                c.execute("INSERT INTO jobq_schema (version, applied_at) VALUES (?, ?)", (version, time.time()))

        self._run(run, write=True, conn=conn)

    def _run(self, body: Callable[[Conn], T], *, write: bool, conn: apsw.Connection | None = None) -> T:
        """Run ``body`` in one transaction (IMMEDIATE for writes), retrying on SQLITE_BUSY."""
        deadline = time.monotonic() + LOCKED_GIVE_UP_SECONDS
        delay = 0.001
        with self._lock:
            while True:
                c = conn or self._connect()
                try:
                    c.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    try:
                        result = body(c)
                        c.execute("COMMIT")
                        return result
                    except BaseException:
                        if not c.get_autocommit():
                            c.execute("ROLLBACK")
                        raise
                except apsw.BusyError:
                    if time.monotonic() > deadline:
                        raise StorageError(
                            f"{self.path}: database stayed locked for {LOCKED_GIVE_UP_SECONDS:.0f} s"
                        ) from None
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.1)
                except apsw.Error as exc:
                    raise _storage_error(exc, self.path) from None

    def _read(self, body: Callable[[Conn], T]) -> T:
        return self._run(body, write=False)

    def _write(self, body: Callable[[Conn], T]) -> T:
        return self._run(body, write=True)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
        self._notifier.close()

    # -- producers -------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        rows = [
            (
                j.queue,
                j.task,
                j.payload_json,
                j.priority,
                j.run_at,
                j.max_attempts,
                j.timeout,
                j.idempotency_key,
                now,
                now,
            )
            for j in jobs
        ]

        def body(c: Conn) -> list[int]:
            if all(j.idempotency_key is None for j in jobs):
                # No key, no conflict: one prepared statement for the whole batch (1.6x faster).
                ids = [row[0] for row in c.executemany(Q_INSERT_JOB, rows)]
                inserted = ids
            else:
                ids, inserted = [], []
                for job, row in zip(jobs, rows, strict=True):
                    found = c.execute(Q_INSERT_JOB, row).fetchall()
                    if found:
                        inserted.append(found[0][0])
                        ids.append(found[0][0])
                    else:  # the key is known: hand back the job it names
                        ids.append(c.execute(Q_JOB_BY_KEY, (job.idempotency_key,)).fetchall()[0][0])
            c.executemany(Q_EVENT, [(i, now, EventKind.ENQUEUED.value, None, 0, None) for i in inserted])
            return ids

        ids = self._write(body)
        if any(j.run_at <= now for j in jobs):
            self._notifier.notify(now)
        return ids

    # -- workers ---------------------------------------------------------------------------
    def claim(self, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, clock: Clock) -> list[Job]:
        def body(c: Conn) -> list[Job]:
            now = clock()  # under the write lock: the lease runs from when it is granted
            args = (worker_id, now + lease_seconds, now, now, *queues, now, limit)
            rows = c.execute(q_claim(len(queues)), args).fetchall()
            jobs = sorted((job_from_row(r) for r in rows), key=lambda j: (j.priority, j.run_at, j.id))
            c.executemany(
                Q_EVENT,
                [(j.id, now, EventKind.CLAIMED.value, worker_id, j.attempts, None) for j in jobs],
            )
            return jobs

        return self._write(body)

    def _refused(
        self, c: Conn, lease: Lease, op: str, now: float, *, repeat: bool = False, applied_as: str | None = None
    ) -> bool:
        """Record a refused worker write. A ``repeat`` (of a write whose outcome was unknown) that
        had been applied (as ``applied_as``, default ``op``: see ``common.APPLIED_STATUS``) is
        not refused: True, nothing recorded."""
        if repeat and (applied_as or op) in APPLIED_STATUS:
            rows = c.execute(Q_LEASE_STATE, (lease.job_id,)).fetchall()
            if already_applied(applied_as or op, lease.token, rows[0] if rows else None):
                return True
        detail = json.dumps({"operation": op, "token": lease.token})
        c.execute(Q_EVENT, (lease.job_id, now, EventKind.STALE_WRITE_REFUSED.value, lease.worker_id, None, detail))
        return False

    def heartbeat(self, leases: Sequence[Lease], lease_seconds: float, clock: Clock) -> list[HeartbeatResult]:
        def body(c: Conn) -> list[HeartbeatResult]:
            now = clock()
            out = []
            for lease in leases:
                rows = c.execute(Q_HEARTBEAT, (now + lease_seconds, now, lease.job_id, lease.token)).fetchall()
                if rows:
                    out.append(HeartbeatResult(lease.job_id, True, bool(rows[0][0])))
                else:
                    self._refused(c, lease, "heartbeat", now)
                    out.append(HeartbeatResult(lease.job_id, False))
            return out

        return self._write(body)

    def complete(self, items: Sequence[Completion], clock: Clock, *, repeat: bool = False) -> list[bool]:
        def body(c: Conn, repeat: bool = repeat) -> list[bool]:
            now = clock()
            args = [(now, i.result_json, i.lease.job_id, i.lease.token) for i in items]
            # One prepared statement stepped for the whole group commit; RETURNING names the
            # (job, token) pairs whose lease still held, the others are refused and recorded.
            attempts = {(job_id, token): n for job_id, token, n in c.executemany(Q_COMPLETE, args)}
            done = []
            events = []
            for item in items:
                lease = item.lease
                n = attempts.get((lease.job_id, lease.token))
                if n is not None:
                    detail = json.dumps({"note": item.note}) if item.note else None
                    events.append((lease.job_id, now, EventKind.COMPLETED.value, lease.worker_id, n, detail))
                    done.append(True)
                else:
                    done.append(self._refused(c, lease, "complete", now, repeat=repeat))
            c.executemany(Q_EVENT, events)
            return done

        return self._write(body)

    def fail(self, items: Sequence[Failure], clock: Clock, *, repeat: bool = False) -> list[bool]:
        def body(c: Conn, repeat: bool = repeat) -> list[bool]:
            now = clock()
            out = []
            for item in items:
                lease = item.lease
                args = (now, item.retry_at, item.error, lease.job_id, lease.token)
                detail: dict[str, Any] = {"error": clip(item.error)}
                if item.retry_at is not None:
                    rows = c.execute(Q_RETRY, args).fetchall()
                    op, kind, detail = "retry", EventKind.RETRY_SCHEDULED, {**detail, "retry_at": item.retry_at}
                else:
                    rows = c.execute(Q_FAIL, args).fetchall()
                    op, kind = "fail", EventKind.FAILED
                if rows:
                    c.execute(Q_EVENT, (lease.job_id, now, kind.value, lease.worker_id, rows[0][0], json.dumps(detail)))
                    out.append(True)
                else:
                    out.append(self._refused(c, lease, "fail", now, repeat=repeat, applied_as=op))
            return out

        return self._write(body)

    def release(self, leases: Sequence[Lease], clock: Clock, reason: str, *, repeat: bool = False) -> list[bool]:
        return self._simple_worker_write(Q_RELEASE, EventKind.RELEASED, leases, clock, {"reason": reason}, repeat)

    def ack_cancel(self, leases: Sequence[Lease], clock: Clock, *, repeat: bool = False) -> list[bool]:
        return self._simple_worker_write(Q_ACK_CANCEL, EventKind.CANCELLED, leases, clock, {"by": "worker"}, repeat)

    def _simple_worker_write(
        self,
        query: str,
        kind: EventKind,
        leases: Sequence[Lease],
        clock: Clock,
        detail: dict[str, Any],
        repeat: bool,
    ) -> list[bool]:
        def body(c: Conn, repeat: bool = repeat) -> list[bool]:
            now = clock()
            out = []
            for lease in leases:
                rows = c.execute(query, (now, lease.job_id, lease.token)).fetchall()
                if rows:
                    c.execute(Q_EVENT, (lease.job_id, now, kind.value, lease.worker_id, rows[0][0], json.dumps(detail)))
                    out.append(True)
                else:
                    out.append(self._refused(c, lease, kind.value, now, repeat=repeat))
            return out

        return self._write(body)

    def rescue_expired(
        self,
        clock: Clock,
        backoff: Callable[[int], float],
        actor: str,
        gone_owners: Sequence[str] = (),
        cutoff: Callable[[float], float] | None = None,
    ) -> list[RescueResult]:
        marks = ", ".join("?" * len(gone_owners))
        due = f"({Q_LEASE_GONE}{f' OR lease_owner IN ({marks})' if gone_owners else ''})"
        # Look before taking the write lock: every live worker runs this every few seconds, and
        # an idle queue should see no writes from it (a `sqlite3` shell has no busy timeout: an
        # operator's UPDATE would fail on the lock at once).
        if not self._read(lambda c: c.execute(f"{Q_RESCUABLE} AND {due} LIMIT 1", (clock(), *gone_owners)).fetchall()):
            return []
        gone = set(gone_owners)

        def body(c: Conn) -> list[RescueResult]:
            now = clock()
            args = ((cutoff or _same)(now), *gone_owners)
            out = []
            rows = c.execute(f"{Q_RESCUABLE} AND {due} LIMIT 1000", args).fetchall()
            for job_id, owner, token, attempts, max_attempts, cancel_requested in rows:
                plan = plan_rescue(owner, attempts, max_attempts, bool(cancel_requested), now, backoff, owner in gone)
                c.execute(Q_RESCUE, (plan.status, now, plan.run_at, plan.error, job_id, token))
                if c.changes():
                    detail = json.dumps({"previous_owner": owner, "run_at": plan.run_at})
                    c.execute(Q_EVENT, (job_id, now, plan.kind.value, actor, attempts, detail))
                    out.append(RescueResult(job_id, plan.outcome, owner))
            return out

        return self._write(body)

    def next_due_at(self, queues: Sequence[str]) -> float | None:
        def body(c: Conn) -> float | None:
            marks = ", ".join("?" * len(queues))
            rows = c.execute(
                f"SELECT min(run_at) FROM jobs WHERE status = 'PENDING' AND queue IN ({marks})", tuple(queues)
            ).fetchall()
            return rows[0][0] if rows else None

        return self._read(body)

    # -- operators -------------------------------------------------------------------------
    def resubmit(self, where: JobFilter, actor: str, now: float) -> list[ActionResult]:
        def body(c: Conn) -> list[ActionResult]:
            out = []
            for job_id, status in self._targets(c, where):
                action, result = plan_operator_action("resubmit", job_id, status)
                if action is Action.RESUBMIT:
                    c.execute(Q_RESUBMIT, (now, job_id, status))
                    detail = json.dumps({"from": status})
                    c.execute(Q_EVENT, (job_id, now, EventKind.RESUBMITTED.value, actor, 0, detail))
                out.append(result)
            return out

        results = self._write(body)
        if any(r.ok for r in results):
            self._notifier.notify(now)
        return results

    def cancel(self, where: JobFilter, actor: str, now: float) -> list[ActionResult]:
        def body(c: Conn) -> list[ActionResult]:
            out = []
            for job_id, status in self._targets(c, where):
                action, result = plan_operator_action("cancel", job_id, status)
                if action is Action.CANCEL:
                    c.execute(Q_CANCEL, (now, job_id, status))
                    detail = json.dumps({"from": status})
                    c.execute(Q_EVENT, (job_id, now, EventKind.CANCELLED.value, actor, None, detail))
                elif action is Action.REQUEST_CANCEL:
                    c.execute(Q_REQUEST_CANCEL, (now, job_id))
                    c.execute(Q_EVENT, (job_id, now, EventKind.CANCEL_REQUESTED.value, actor, None, None))
                out.append(result)
            return out

        return self._write(body)

    def _targets(self, c: Conn, where: JobFilter) -> list[tuple[int, str]]:
        clause, params = _where(where)
        found = c.execute(f"SELECT id, status FROM jobs{clause} ORDER BY id", params).fetchall()
        if where.ids:  # name the ids that do not exist, so a caller can say "not found"
            known = {row[0] for row in found}
            missing = [(i, "") for i in where.ids if i not in known]
            return [(i, s) for i, s in found] + missing
        return [(i, s) for i, s in found]

    def purge(self, statuses: Sequence[JobStatus], finished_before: float) -> int:
        marks = ", ".join("?" * len(statuses))

        def body(c: Conn) -> int:
            args = [s.value for s in statuses] + [finished_before]
            selection = f"SELECT id FROM jobs WHERE status IN ({marks}) AND finished_at < ?"
            c.execute(f"DELETE FROM job_events WHERE job_id IN ({selection})", args)
            c.execute(f"DELETE FROM jobs WHERE id IN ({selection})", args)
            return int(c.changes())

        return self._write(body) if statuses else 0

    # -- reads -----------------------------------------------------------------------------
    def get(self, job_id: int) -> Job | None:
        rows = self._read(lambda c: c.execute(f"SELECT {_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchall())
        return job_from_row(rows[0]) if rows else None

    def events(self, job_id: int) -> list[Event]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events WHERE job_id = ? ORDER BY id",
                (job_id,),
            ).fetchall()
        )
        return [event_from_row(r) for r in rows]

    def recent_events(self, limit: int, kinds: Sequence[str] = ()) -> list[Event]:
        clause = f" WHERE kind IN ({', '.join('?' * len(kinds))})" if kinds else ""
        rows = self._read(
            lambda c: c.execute(
                f"SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events{clause} ORDER BY id DESC LIMIT ?",
                (*kinds, limit),
            ).fetchall()
        )
        return [event_from_row(r) for r in rows]

    def list_jobs(self, where: JobFilter, page: Page) -> list[Job]:
        if page.sort not in SORT_FIELDS:
            raise ConfigError(f"cannot sort by {page.sort!r}; choose one of {', '.join(SORT_FIELDS)}")
        clause, params = _where(where)
        direction = "DESC" if page.descending else "ASC"
        order = f"{page.sort} {direction}" + ("" if page.sort == "id" else f", id {direction}")
        sql = f"SELECT {_COLS} FROM jobs{clause} ORDER BY {order} LIMIT ? OFFSET ?"
        rows = self._read(lambda c: c.execute(sql, (*params, page.limit, page.offset)).fetchall())
        return [job_from_row(r) for r in rows]

    def count_jobs(self, where: JobFilter) -> int:
        clause, params = _where(where)
        return int(self._read(lambda c: c.execute(f"SELECT count(*) FROM jobs{clause}", params).fetchall())[0][0])

    def counts(self) -> dict[str, int]:
        rows = self._read(lambda c: c.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        out = {s.value: 0 for s in JobStatus}
        out.update({status: n for status, n in rows})
        return out

    def stats(self, now: float) -> QueueStats:
        def body(c: Conn) -> QueueStats:
            by_queue: dict[str, dict[str, int]] = {}
            counts = {s.value: 0 for s in JobStatus}
            for queue, status, n in c.execute("SELECT queue, status, count(*) FROM jobs GROUP BY queue, status"):
                by_queue.setdefault(queue, {s.value: 0 for s in JobStatus})[status] = n
                counts[status] = counts.get(status, 0) + n
            oldest = c.execute(
                "SELECT min(run_at) FROM jobs WHERE status = 'PENDING' AND run_at <= ?", (now,)
            ).fetchall()[0][0]
            done = dict(
                c.execute(
                    Q_FINISHED_BY_KIND,
                    (now - 60,),
                ).fetchall()
            )
            expired = c.execute(
                Q_EXPIRED_COUNT,
                (now,),
            ).fetchall()[0][0]
            return QueueStats(
                counts=counts,
                by_queue=by_queue,
                oldest_pending_at=oldest,
                completed_last_minute=done.get("completed", 0),
                failed_last_minute=done.get("failed", 0) + done.get("expired", 0),
                expired_leases=expired,
            )

        return self._read(body)

    def history(self, since: float, bucket_seconds: float, now: float) -> list[Bucket]:
        def body(c: Conn) -> list[Bucket]:
            kind_counts = c.execute(
                Q_HISTORY_KINDS,
                (since, bucket_seconds),
            ).fetchall()
            durations = c.execute(
                "SELECT finished_at, run_at, started_at, finished_at FROM jobs WHERE finished_at >= ? "
                "AND status IN ('COMPLETED', 'FAILED') ORDER BY finished_at DESC LIMIT ?",
                (since, HISTORY_SAMPLE_LIMIT),
            ).fetchall()
            pending = c.execute("SELECT count(*) FROM jobs WHERE status = 'PENDING'").fetchall()[0][0]
            return build_buckets(since, bucket_seconds, now, kind_counts, durations, pending)

        return self._read(body)

    # -- worker registry -------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO workers (id, name, host, pid, queues, started_at, last_seen_at, "
                "stopped_at, current_jobs, jobs_done, jobs_failed, wake_address, process_table) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    info.id,
                    info.name,
                    info.host,
                    info.pid,
                    json.dumps(list(info.queues)),
                    info.started_at,
                    info.last_seen_at,
                    info.stopped_at,
                    json.dumps(list(info.current_jobs)),
                    info.jobs_done,
                    info.jobs_failed,
                    info.wake_address,
                    info.process_table,
                ),
            )
        )
        self._notifier.invalidate()

    def worker_seen(self, worker_id: str, now: float, current_jobs: Sequence[int], done: int, failed: int) -> None:
        self._write(
            lambda c: c.execute(
                "UPDATE workers SET last_seen_at = ?, current_jobs = ?, jobs_done = ?, jobs_failed = ? WHERE id = ?",
                (now, json.dumps(list(current_jobs)), done, failed, worker_id),
            )
        )

    def worker_stopped(self, worker_id: str, now: float) -> None:
        self._write(
            lambda c: c.execute(
                "UPDATE workers SET stopped_at = ?, last_seen_at = ?, current_jobs = '[]' WHERE id = ?",
                (now, now, worker_id),
            )
        )

    def list_workers(self, limit: int = 200) -> list[WorkerInfo]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT id, name, host, pid, queues, started_at, last_seen_at, stopped_at, current_jobs, "
                "jobs_done, jobs_failed, wake_address, process_table FROM workers ORDER BY started_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [worker_from_row(r) for r in rows]

    # -- wake-up ---------------------------------------------------------------------------
    def listener(self, worker_id: str, queues: Sequence[str]) -> SqliteListener:
        return SqliteListener(self.path, worker_id)

    def _live_wake_addresses(self, now: float) -> list[str]:
        rows = self._read(lambda c: c.execute(Q_LIVE_WAKE_ADDRESSES, (now - 120,)).fetchall())
        return [r[0] for r in rows]

    # -- maintenance -----------------------------------------------------------------------
    def integrity_check(self) -> str:
        rows = self._read(lambda c: c.execute("PRAGMA integrity_check").fetchall())
        return "; ".join(str(r[0]) for r in rows)

    def wal_checkpoint(self) -> None:
        with self._lock, contextlib.suppress(apsw.Error):
            self._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _same(now: float) -> float:
    return now


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
    ]
    if isinstance(exc, apsw.CantOpenError | apsw.ReadOnlyError) and _on_read_only_mount(path):
        return StorageError(f"{path}: the filesystem holding the database is mounted read-only")
    for kind, text in reasons:
        if isinstance(exc, kind):
            return StorageError(f"{path}: {text}")
    return StorageError(f"{path}: {exc}")


def _on_read_only_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(os.path.dirname(path) or ".").f_flag & os.ST_RDONLY)
    except OSError:
        return False
