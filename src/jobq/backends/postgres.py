"""PostgreSQL backend, through psycopg 3 and a small connection pool: the same queue across machines.

Same semantics as the SQLite backend (the contract suite runs unchanged on both); how it differs
inside, and its limits, stated openly:

- Claim is one statement: a CTE picks due PENDING rows ``FOR UPDATE SKIP LOCKED`` in claim order
  (priority, run_at, id) and an ``UPDATE ... RETURNING`` leases them. Concurrent workers never
  wait on each other and never get the same job. A lease token is a random nonce of the claim
  plus the job id, so a claim whose COMMIT reply was lost reads back what it handed out.
- Times are the caller's float UNIX seconds in ``double precision`` columns, exactly as on SQLite.
  Leases therefore compare clocks of different hosts: keep them in sync with NTP (a 30 s lease
  tolerates far more skew than NTP leaves).
- Every worker write is fenced by the lease token and every operator action locks its target rows
  (``FOR UPDATE``, in id order) and is guarded by the status it read. Rows are always locked in id
  order, so two transactions cannot deadlock on each other; a deadlock reported anyway (e.g. by a
  hand-written transaction) is retried.
- The schema is created and migrated on first open, under ``pg_advisory_xact_lock``, so several
  processes starting at once on an empty database do not race. A trigger records status changes
  made by hand in SQL (the ``rev`` column did not move) as ``external_update`` events.
- Wake-up: the enqueue/resubmit transaction sends ``NOTIFY jobq_wakeup`` (payload: the queue);
  each idle worker LISTENs on a dedicated connection. Delivery is at commit, so a worker is never
  woken for a job it cannot see yet. A missed notification is covered by polling.
- Connection loss (server restart, failover): the pool drops broken connections and reconnects.
  An operation that failed *before* its COMMIT was sent rolled back on the server, so it is
  retried once on a fresh connection. One that failed while committing has an unknown outcome,
  and is settled on a fresh connection: worker writes are repeated (each is idempotent for its
  lease: one that had committed is recognised by its kept token, neither redone nor recorded as
  refused) and a claim reads back the jobs its nonce leased. Operator actions and enqueues raise
  ``StorageError`` and the caller decides: an ``enqueue`` without an idempotency key is not safe
  to repeat (it may insert the job twice), so give jobs a key when that matters.
- Text columns cannot hold NUL characters on PostgreSQL: NULs in error messages, actors and
  worker names are replaced by ``\\0``. Payloads and results are JSON, where NUL is escaped anyway.
- Payloads are stored as text (not ``jsonb``), so a search matches the same text on both backends.
- Connections are never carried across ``fork()``: a forked child opens its own pool.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

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
from jobq.errors import ConfigError, StorageError
from jobq.job import TRANSITIONS, Action, Event, EventKind, Job, JobStatus
from jobq.redact import redact_text

T = TypeVar("T")
Cursor = psycopg.Cursor[tuple[Any, ...]]
Connection = psycopg.Connection[tuple[Any, ...]]

SCHEMA_VERSION = 2
POSTGRES_MIN_VERSION_NUM = 130000
"""The oldest server tested (and ``DROP DATABASE ... WITH (FORCE)``, used by the tests, needs 13)."""
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4
POOL_TIMEOUT_SECONDS = 15.0
"""How long an operation waits for a connection (e.g. while the server restarts) before failing."""
CONNECT_TIMEOUT_SECONDS = 10
DEADLOCK_RETRIES = 5
TOKEN_NONCE_BYTES = 12
"""Random bytes of a claim's nonce, the first part of each lease token it hands out."""
LISTEN_CHANNEL = "jobq_wakeup"
LISTENER_RECONNECT_PAUSE_SECONDS = 1.0
#: Key of the advisory lock that serialises schema migrations (per database).
MIGRATION_LOCK_KEY = 0x6A6F6271  # "jobq"

_COLS = ", ".join(JOB_COLUMNS)
_JOBS_COLS = ", ".join(f"jobs.{c}" for c in JOB_COLUMNS)
_NOW_SQL = "extract(epoch FROM clock_timestamp())::double precision"


def _in(statuses: Iterable[JobStatus]) -> str:
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


# The statuses each worker write is allowed from, taken from the transition table.
_FROM_COMPLETE = _in(TRANSITIONS[Action.COMPLETE].sources)
_FROM_FAIL = _in(TRANSITIONS[Action.FAIL].sources | TRANSITIONS[Action.RETRY].sources)
_FROM_RESCUE = _in(TRANSITIONS[Action.RESCUE].sources)
_TERMINAL = _in({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

# -- schema ---------------------------------------------------------------------------------
# Each migration is a list of statements applied in one transaction; the version reached is
# recorded in jobq_schema. Only append: never edit a released migration.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE jobs (
            id bigserial PRIMARY KEY,              -- a sequence: ids are never reused after purge
            queue text NOT NULL DEFAULT 'default',
            task text NOT NULL DEFAULT '',
            payload text NOT NULL,                 -- JSON text, never pickle; text so search = SQLite's
            status text NOT NULL DEFAULT 'PENDING'
                CHECK (status IN ('PENDING','PROCESSING','COMPLETED','FAILED','CANCELLED')),
            priority integer NOT NULL DEFAULT 0,   -- lower runs first, like nice
            run_at double precision NOT NULL,      -- UNIX seconds from the caller's clock
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL DEFAULT 3,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            started_at double precision,
            finished_at double precision,
            timeout double precision,
            last_error text,
            lease_owner text,
            lease_token text,
            lease_expires_at double precision,
            idempotency_key text,
            result text,
            cancel_requested boolean NOT NULL DEFAULT false,
            run integer NOT NULL DEFAULT 1,
            rev bigint NOT NULL DEFAULT 0          -- bumped by every jobq status write
        )""",
        # Claim order, pending rows only: the claim never scans finished jobs.
        "CREATE INDEX jobs_claim ON jobs (queue, priority, run_at, id) WHERE status = 'PENDING'",
        "CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'PROCESSING'",
        "CREATE UNIQUE INDEX jobs_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL",
        "CREATE INDEX jobs_status ON jobs (status, id)",
        "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL",
        """CREATE TABLE job_events (
            id bigserial PRIMARY KEY,
            job_id bigint NOT NULL,
            at double precision NOT NULL,
            kind text NOT NULL,
            actor text,
            attempt integer,
            detail text
        )""",
        "CREATE INDEX job_events_job ON job_events (job_id, id)",
        "CREATE INDEX job_events_at ON job_events (at)",
        """CREATE TABLE workers (
            id text PRIMARY KEY,
            name text NOT NULL,
            host text NOT NULL,
            pid integer NOT NULL,
            queues text NOT NULL,
            started_at double precision NOT NULL,
            last_seen_at double precision NOT NULL,
            stopped_at double precision,
            current_jobs text NOT NULL DEFAULT '[]',
            jobs_done integer NOT NULL DEFAULT 0,
            jobs_failed integer NOT NULL DEFAULT 0,
            wake_address text
        )""",
        # A status changed by hand (e.g. `psql -c "UPDATE jobs SET status='FAILED' ..."`) leaves
        # rev unchanged: record it as an event, stamp the times, and drop any lease so a worker
        # still holding one is refused. Same rules as the SQLite trigger.
        f"""CREATE FUNCTION jobq_external_status() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.rev := OLD.rev + 1;
            NEW.updated_at := {_NOW_SQL};
            IF NEW.status IN {_TERMINAL} THEN
                NEW.finished_at := coalesce(NEW.finished_at, {_NOW_SQL});
            ELSE
                NEW.finished_at := NULL;
            END IF;
            IF NEW.status = 'FAILED' THEN
                NEW.last_error := coalesce(NEW.last_error, 'set to FAILED outside jobq');
            END IF;
            IF NEW.status <> 'PROCESSING' THEN
                NEW.lease_token := NULL;
                NEW.lease_expires_at := NULL;
            END IF;
            INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
            VALUES (NEW.id, {_NOW_SQL}, 'external_update', 'sql', NEW.attempts,
                    json_build_object('from', OLD.status, 'to', NEW.status)::text);
            RETURN NEW;
        END $$""",
        """CREATE TRIGGER jobs_external_status BEFORE UPDATE OF status ON jobs
            FOR EACH ROW WHEN (NEW.rev = OLD.rev AND NEW.status IS DISTINCT FROM OLD.status)
            EXECUTE FUNCTION jobq_external_status()""",
    ],
    [
        # Which process table the worker's pid belongs to (boot id + PID namespace; see
        # jobq.worker.rescuer.process_table_id). Kept on both backends so rows mean the same.
        "ALTER TABLE workers ADD COLUMN process_table text",
    ],
]

# -- named queries ----------------------------------------------------------------------------
Q_INSERT_JOB = """
INSERT INTO jobs (queue, task, payload, priority, run_at, max_attempts, timeout,
                  idempotency_key, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id"""
Q_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS jobq_schema (version integer NOT NULL, applied_at double precision NOT NULL)"
)
Q_JOB_BY_KEY = "SELECT id FROM jobs WHERE idempotency_key = %s"
Q_EVENT = "INSERT INTO job_events (job_id, at, kind, actor, attempt, detail) VALUES (%s, %s, %s, %s, %s, %s)"
Q_NOTIFY = "SELECT pg_notify(%s, %s)"
# SKIP LOCKED: rows another claimer is taking are passed over, never waited for; under READ
# COMMITTED each locked row is re-checked, so a row claimed meanwhile is skipped, not taken twice.
# One queue (the common case) is an equality, so the planner walks the pending partial index in
# claim order and stops at LIMIT; ``= ANY(array)`` made it sort every pending row on each claim
# (about 6x slower with 20,000 waiting jobs).
_CLAIM_ONE_QUEUE = "queue = %(queue)s"
_CLAIM_MANY_QUEUES = "queue = ANY(%(queues)s)"
Q_CLAIM = f"""
WITH picked AS (
    SELECT id FROM jobs
    WHERE status = 'PENDING' AND {{queues}} AND run_at <= %(now)s
    ORDER BY priority, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'PROCESSING', attempts = attempts + 1, rev = rev + 1,
    lease_owner = %(worker)s, lease_token = %(nonce)s || '-' || jobs.id::text,
    lease_expires_at = %(expires)s, started_at = %(now)s, updated_at = %(now)s, cancel_requested = false
FROM picked WHERE jobs.id = picked.id
RETURNING {_JOBS_COLS}"""
# A claim whose COMMIT reply was lost: what did it hand out? Tokens start with the claim's nonce.
Q_CLAIMED_BY_NONCE = f"""
SELECT {_COLS} FROM jobs
WHERE status = 'PROCESSING' AND lease_owner = %(worker)s AND starts_with(lease_token, %(nonce)s)"""
Q_LEASE_STATE = "SELECT status, lease_token FROM jobs WHERE id = %s"
# Heartbeats lock their rows first and read the clock after: an UPDATE that waits for a row lock
# (an operator's or a rescuer's FOR UPDATE) evaluates its SET before the wait, so the lease would
# run from before it. One more round trip, once per heartbeat interval.
Q_LOCK_JOBS = "SELECT id FROM jobs WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
Q_HEARTBEAT = """
UPDATE jobs SET lease_expires_at = %s, updated_at = %s
WHERE id = %s AND status = 'PROCESSING' AND lease_token = %s
RETURNING cancel_requested"""
Q_COMPLETE = f"""
UPDATE jobs SET status = 'COMPLETED', rev = rev + 1, finished_at = %(now)s, updated_at = %(now)s,
    result = %(result)s, last_error = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND status IN {_FROM_COMPLETE}
RETURNING attempts"""
Q_RETRY = f"""
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = %(now)s, run_at = %(retry_at)s,
    last_error = %(error)s, lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND status IN {_FROM_FAIL}
RETURNING attempts"""
Q_FAIL = f"""
UPDATE jobs SET status = 'FAILED', rev = rev + 1, updated_at = %(now)s, finished_at = %(now)s,
    last_error = %(error)s, lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND status IN {_FROM_FAIL}
RETURNING attempts"""
Q_RELEASE = """
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = %(now)s, run_at = %(now)s,
    attempts = greatest(0, attempts - 1), lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND status = 'PROCESSING'
RETURNING attempts, queue"""
Q_ACK_CANCEL = """
UPDATE jobs SET status = 'CANCELLED', rev = rev + 1, updated_at = %(now)s, finished_at = %(now)s,
    lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND status = 'PROCESSING' AND cancel_requested
RETURNING attempts, queue"""
# SKIP LOCKED: a job whose worker is completing it right now is left alone (its row is locked);
# if the lease really expired the next rescue pass takes it.
Q_EXPIRED = f"""
SELECT id, lease_owner, lease_token, attempts, max_attempts, cancel_requested FROM jobs
WHERE status IN {_FROM_RESCUE}
    AND (lease_expires_at IS NULL OR lease_expires_at < %s OR lease_owner = ANY(%s))
ORDER BY id
LIMIT 1000
FOR UPDATE SKIP LOCKED"""
Q_RESCUE = """
UPDATE jobs SET status = %(status)s, rev = rev + 1, updated_at = %(now)s, run_at = %(run_at)s,
    last_error = %(error)s,
    finished_at = CASE WHEN %(status)s = 'PENDING' THEN NULL ELSE %(now)s END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND status = 'PROCESSING' AND lease_token IS NOT DISTINCT FROM %(token)s"""
Q_RESUBMIT = """
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = %(now)s, run_at = %(now)s, attempts = 0,
    run = run + 1, started_at = NULL, finished_at = NULL, result = NULL, cancel_requested = false,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND status = %(status)s
RETURNING queue"""
Q_CANCEL = """
UPDATE jobs SET status = 'CANCELLED', rev = rev + 1, updated_at = %(now)s, finished_at = %(now)s,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND status = %(status)s"""
Q_REQUEST_CANCEL = """
UPDATE jobs SET cancel_requested = true, updated_at = %(now)s WHERE id = %(id)s AND status = 'PROCESSING'"""
Q_NEXT_DUE = "SELECT min(run_at) FROM jobs WHERE status = 'PENDING' AND queue = ANY(%s)"
# One statement, one snapshot: a job resubmitted meanwhile is neither deleted nor left without events.
Q_PURGE = """
WITH gone AS (
    DELETE FROM jobs WHERE status = ANY(%s) AND finished_at < %s RETURNING id
), gone_events AS (
    DELETE FROM job_events WHERE job_id IN (SELECT id FROM gone)
)
SELECT count(*) FROM gone"""
Q_EVENTS = "SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events WHERE job_id = %s ORDER BY id"
Q_STATS_BY_QUEUE = "SELECT queue, status, count(*) FROM jobs GROUP BY queue, status"
Q_STATS_OLDEST = "SELECT min(run_at) FROM jobs WHERE status = 'PENDING' AND run_at <= %s"
Q_STATS_DONE = """
SELECT kind, count(*) FROM job_events
WHERE at >= %s AND kind IN ('completed', 'failed', 'expired') GROUP BY kind"""
Q_STATS_EXPIRED = """
SELECT count(*) FROM jobs WHERE status = 'PROCESSING' AND (lease_expires_at IS NULL OR lease_expires_at < %s)"""
# trunc, not a cast: a cast to integer rounds on PostgreSQL where SQLite's truncates.
Q_HISTORY_KINDS = """
SELECT trunc((at - %(since)s) / %(bucket)s)::bigint AS b, kind, count(*) FROM job_events
WHERE at >= %(since)s GROUP BY b, kind"""
Q_HISTORY_DURATIONS = """
SELECT finished_at, run_at, started_at, finished_at FROM jobs
WHERE finished_at >= %s AND status IN ('COMPLETED', 'FAILED')
ORDER BY finished_at DESC LIMIT %s"""
Q_REGISTER_WORKER = """
INSERT INTO workers (id, name, host, pid, queues, started_at, last_seen_at, stopped_at, current_jobs,
                     jobs_done, jobs_failed, wake_address, process_table)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, host = EXCLUDED.host, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
    started_at = EXCLUDED.started_at, last_seen_at = EXCLUDED.last_seen_at, stopped_at = EXCLUDED.stopped_at,
    current_jobs = EXCLUDED.current_jobs, jobs_done = EXCLUDED.jobs_done, jobs_failed = EXCLUDED.jobs_failed,
    wake_address = EXCLUDED.wake_address, process_table = EXCLUDED.process_table"""
Q_WORKER_SEEN = (
    "UPDATE workers SET last_seen_at = %s, current_jobs = %s, jobs_done = %s, jobs_failed = %s WHERE id = %s"
)
Q_WORKER_STOPPED = "UPDATE workers SET stopped_at = %s, last_seen_at = %s, current_jobs = '[]' WHERE id = %s"
Q_LIST_WORKERS = """
SELECT id, name, host, pid, queues, started_at, last_seen_at, stopped_at, current_jobs,
       jobs_done, jobs_failed, wake_address, process_table
FROM workers ORDER BY started_at DESC LIMIT %s"""


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: make it visible instead of failing the write."""
    return value.replace("\x00", "\\0") if value is not None and "\x00" in value else value


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
            clauses.append(f"{column} = ANY(%s)")
            params.append(values)
    if where.search:
        # ILIKE: case-insensitive like SQLite's LIKE (which folds ASCII only; ILIKE folds all letters).
        clauses.append("payload ILIKE %s ESCAPE '\\'")
        params.append(like_pattern(_text(where.search) or ""))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _by_job_id(leases: Sequence[Lease]) -> list[int]:
    """Indexes of ``leases`` in job id order: every transaction locks rows in id order (no deadlock)."""
    return sorted(range(len(leases)), key=lambda i: leases[i].job_id)


def describe_url(url: str) -> str:
    """``host:port/dbname`` of a PostgreSQL URL, for messages (never the password)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL"
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    port = str(info.get("port") or "5432")
    dbname = str(info.get("dbname") or info.get("user") or "postgres")
    # A password with an unescaped "@" makes libpq read part of it as the host: mask it there too.
    return redact_text(f"{host}:{port}/{dbname}", url)


def _reason(exc: BaseException) -> str:
    """One readable line from a psycopg error (libpq's messages span several lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if "failed: " in text:  # 'connection failed: connection to server at "h", port p failed: REASON'
        text = text.rsplit("failed: ", 1)[1]
    for prefix in ("FATAL:", "ERROR:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return " ".join(text.split())


def storage_error(exc: BaseException, url: str, *, connecting: bool = False) -> StorageError:
    """Turn a psycopg error into a StorageError of one readable line naming the server."""
    where = describe_url(url)
    reason = redact_text(_reason(exc), url)  # libpq may quote parts of the URL it could not use
    if connecting:
        return StorageError(f"cannot connect to PostgreSQL at {where}: {reason}")
    return StorageError(f"PostgreSQL at {where}: {reason}")


def _connect_kwargs(url: str) -> dict[str, Any]:
    """Defaults for every connection, unless the URL says otherwise."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        # libpq's message quotes the token it could not parse, which may be the password.
        raise ConfigError(f"bad PostgreSQL URL: {redact_text(_reason(exc), url)}") from None
    kwargs: dict[str, Any] = {}
    if "connect_timeout" not in info:
        kwargs["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    if "application_name" not in info:
        kwargs["application_name"] = "jobq"
    # TCP keepalives: a LISTEN connection to a host that vanished would otherwise wait forever.
    if "keepalives" not in info:
        kwargs.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
    return kwargs


class _Attempt:
    """Tracks whether COMMIT was sent, to know if a failed transaction may be retried."""

    __slots__ = ("committing",)

    def __init__(self) -> None:
        self.committing = False


# Pools inherited across fork() belong to the parent: never close or reuse them in a child, and
# keep a reference so that garbage collection does not touch their sockets either.
_ABANDONED_POOLS: list[object] = []


class PostgresBackend:
    """The scale-out backend. See the module docstring for its design and limits."""

    single_host = False  # workers may run on many machines: only leases tell who is gone

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Connect to ``url`` and create or migrate the schema.

        With ``create=False`` a database without jobq's tables is an error instead (read-only
        viewers such as the ops app say so rather than show an empty queue).
        Raises ConfigError for a malformed URL, StorageError when the server cannot be used.
        """
        self.url = url
        self._create = create
        self._kwargs = _connect_kwargs(url)
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Connection] | None = None
        self._pid = -1
        # Migrate now on a direct connection: a wrong URL or a server that is down is reported at
        # open time, in one line, like SQLite does; the pool itself opens on first use.
        self._migrate()

    # -- connections and transactions ------------------------------------------------------
    def _connect(self) -> Connection:
        try:
            return psycopg.connect(self.url, autocommit=True, **self._kwargs)
        except psycopg.Error as exc:
            raise storage_error(exc, self.url, connecting=True) from None

    def _migrate(self) -> None:
        conn = self._connect()
        try:
            with conn.transaction():
                # Transaction-scoped: released at commit, also if this process dies meanwhile.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
                version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
                if version_num < POSTGRES_MIN_VERSION_NUM:
                    raise StorageError(
                        f"PostgreSQL at {describe_url(self.url)} is version {version_num // 10000}: "
                        "jobq needs 13 or newer"
                    )
                conn.execute(Q_SCHEMA_TABLE)
                row = conn.execute("SELECT coalesce(max(version), 0) FROM jobq_schema").fetchone()
                current = int(row[0]) if row else 0
                if current == 0 and not self._create:
                    # Rolled back with the transaction: a viewer leaves no trace in the database.
                    raise StorageError(
                        f"no jobq queue in the PostgreSQL database {describe_url(self.url)} "
                        "(start a producer or worker to create it)"
                    )
                if current > len(MIGRATIONS):
                    raise StorageError(
                        f"PostgreSQL at {describe_url(self.url)}: schema version {current} is newer than this jobq "
                        f"knows ({len(MIGRATIONS)}); upgrade jobq"
                    )
                for version in range(current + 1, len(MIGRATIONS) + 1):
                    for statement in MIGRATIONS[version - 1]:
                        conn.execute(statement)  # no parameters: no %-placeholder parsing in DDL
                    conn.execute(
                        "INSERT INTO jobq_schema (version, applied_at) VALUES (%s, %s)", (version, time.time())
                    )
        except psycopg.Error as exc:
            raise storage_error(exc, self.url) from None
        finally:
            conn.close()

    def _get_pool(self) -> ConnectionPool[Connection]:
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                return self._pool
            if self._pool is not None:  # inherited across fork(): leave it to the parent
                _ABANDONED_POOLS.append(self._pool)
            pool: ConnectionPool[Connection] = ConnectionPool(
                self.url,
                kwargs={"autocommit": True, **self._kwargs},
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                timeout=POOL_TIMEOUT_SECONDS,
                name="jobq",
                open=False,
            )
            pool.open(wait=False)
            self._pool = pool
            self._pid = os.getpid()
            return pool

    def _run(
        self, body: Callable[[Cursor], T], *, write: bool = True, on_unknown: Callable[[Cursor], T] | None = None
    ) -> T:
        """Run ``body`` in one transaction on a pooled connection.

        Retries: a deadlock or serialisation failure rolled the whole transaction back, so it is
        run again; a lost connection is retried once on a fresh one, but only if COMMIT had not
        been sent. If it had, the outcome is unknown: ``on_unknown`` then finds out what happened
        in a new transaction (a worker write is simply repeated, being idempotent for its lease; a
        claim reads back what it handed out); without it, StorageError tells the caller.
        """
        lost_connection_retried = False
        deadlocks = 0
        while True:
            pool = self._get_pool()
            attempt = _Attempt()
            try:
                with pool.connection() as conn:
                    with conn.transaction(), conn.cursor() as cur:
                        result = body(cur)
                        attempt.committing = True
                    return result
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                deadlocks += 1
                if deadlocks > DEADLOCK_RETRIES:
                    raise storage_error(exc, self.url) from None
                time.sleep(0.01 * deadlocks * (0.5 + random.random()))
            except PoolTimeout:
                raise self._cannot_connect() from None
            except psycopg.OperationalError as exc:
                if write and attempt.committing and on_unknown is not None:
                    pool.check()  # drop the dead connections, then ask a fresh one what happened
                    return self._run(on_unknown, write=True)
                if lost_connection_retried or (write and attempt.committing) or _is_server_error(exc):
                    if write and attempt.committing:
                        raise StorageError(
                            f"PostgreSQL at {describe_url(self.url)}: connection lost while committing, "
                            f"the outcome is unknown ({_reason(exc)})"
                        ) from None
                    raise storage_error(exc, self.url) from None
                lost_connection_retried = True
                pool.check()  # drop the other dead connections too (a restart cuts them all)
            except psycopg.Error as exc:
                raise storage_error(exc, self.url) from None

    def _cannot_connect(self) -> StorageError:
        """The pool gave up waiting: connect directly once to say why, in one line."""
        try:
            psycopg.connect(self.url, autocommit=True, **self._kwargs).close()
        except psycopg.Error as exc:
            return storage_error(exc, self.url, connecting=True)
        return StorageError(
            f"PostgreSQL at {describe_url(self.url)}: no free connection within {POOL_TIMEOUT_SECONDS:.0f} s"
        )

    def _read(self, body: Callable[[Cursor], T]) -> T:
        return self._run(body, write=False)

    def _write(self, body: Callable[[Cursor], T]) -> T:
        return self._run(body, write=True)

    def close(self) -> None:
        with self._lock:
            # Like SQLite's, a closed backend reopens on its next use (a new pool).
            pool, self._pool = self._pool, None
            if pool is not None and self._pid == os.getpid():
                pool.close(timeout=5.0)

    # -- producers -------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        def body(c: Cursor) -> list[int]:
            ids: list[int] = []
            for j in jobs:
                c.execute(
                    Q_INSERT_JOB,
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
                    ),
                )
                row = c.fetchone()
                if row is not None:
                    ids.append(row[0])
                    c.execute(Q_EVENT, (row[0], now, EventKind.ENQUEUED.value, None, 0, None))
                else:  # the idempotency key is known: hand back the job it names
                    c.execute(Q_JOB_BY_KEY, (j.idempotency_key,))
                    found = c.fetchone()
                    assert found is not None, "a conflicting key names a job"
                    ids.append(found[0])
            # Delivered at commit, so the woken worker sees the jobs. One per queue (PostgreSQL
            # folds identical notifications of one transaction).
            for queue in sorted({j.queue for j in jobs if j.run_at <= now}):
                c.execute(Q_NOTIFY, (LISTEN_CHANNEL, queue))
            return ids

        return self._write(body)

    # -- workers ---------------------------------------------------------------------------
    def claim(self, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, clock: Clock) -> list[Job]:
        # Each token is this claim's nonce + the job id: unique per lease, and a claim whose
        # COMMIT reply was lost can read back what it handed out (instead of leaving the jobs
        # PROCESSING, unrun, for a whole lease).
        nonce = secrets.token_hex(TOKEN_NONCE_BYTES)
        worker = _text(worker_id)

        def body(c: Cursor) -> list[Job]:
            now = clock()  # inside the transaction: the lease runs from when it is granted
            params = {
                "queues": list(queues),
                "queue": queues[0] if queues else "",
                "now": now,
                "limit": limit,
                "worker": worker,
                "expires": now + lease_seconds,
                "nonce": nonce,
            }
            c.execute(Q_CLAIM.format(queues=_CLAIM_ONE_QUEUE if len(queues) == 1 else _CLAIM_MANY_QUEUES), params)
            jobs = sorted((job_from_row(r) for r in c.fetchall()), key=lambda j: (j.priority, j.run_at, j.id))
            if jobs:
                c.executemany(Q_EVENT, [(j.id, now, EventKind.CLAIMED.value, worker, j.attempts, None) for j in jobs])
            return jobs

        def read_back(c: Cursor) -> list[Job]:
            c.execute(Q_CLAIMED_BY_NONCE, {"worker": worker, "nonce": nonce})
            return sorted((job_from_row(r) for r in c.fetchall()), key=lambda j: (j.priority, j.run_at, j.id))

        return self._run(body, on_unknown=read_back)

    def _refused(
        self, c: Cursor, lease: Lease, op: str, now: float, *, repeat: bool = False, applied_as: str | None = None
    ) -> bool:
        """Record a refused worker write. A ``repeat`` (of a write whose outcome was unknown) that
        had been applied (as ``applied_as``, default ``op``: see ``common.APPLIED_STATUS``) is
        not refused: True, nothing recorded."""
        if repeat and (applied_as or op) in APPLIED_STATUS:
            row = c.execute(Q_LEASE_STATE, (lease.job_id,)).fetchone()
            if already_applied(applied_as or op, lease.token, row):
                return True
        detail = json.dumps({"operation": op, "token": lease.token})
        c.execute(
            Q_EVENT, (lease.job_id, now, EventKind.STALE_WRITE_REFUSED.value, _text(lease.worker_id), None, detail)
        )
        return False

    def heartbeat(self, leases: Sequence[Lease], lease_seconds: float, clock: Clock) -> list[HeartbeatResult]:
        def body(c: Cursor) -> list[HeartbeatResult]:
            c.execute(Q_LOCK_JOBS, (sorted({lease.job_id for lease in leases}),))
            now = clock()
            out: list[HeartbeatResult | None] = [None] * len(leases)
            for i in _by_job_id(leases):
                lease = leases[i]
                c.execute(Q_HEARTBEAT, (now + lease_seconds, now, lease.job_id, lease.token))
                row = c.fetchone()
                if row is not None:
                    out[i] = HeartbeatResult(lease.job_id, True, bool(row[0]))
                else:
                    self._refused(c, lease, "heartbeat", now)
                    out[i] = HeartbeatResult(lease.job_id, False)
            return [r for r in out if r is not None]

        return self._run(body, on_unknown=body)  # extending a lease again is harmless

    def complete(self, items: Sequence[Completion], clock: Clock, *, repeat: bool = False) -> list[bool]:
        leases = [item.lease for item in items]

        def body(c: Cursor, repeat: bool = repeat) -> list[bool]:
            now = clock()
            out = [False] * len(items)
            for i in _by_job_id(leases):
                item, lease = items[i], leases[i]
                c.execute(
                    Q_COMPLETE, {"now": now, "result": item.result_json, "id": lease.job_id, "token": lease.token}
                )
                row = c.fetchone()
                if row is not None:
                    detail = json.dumps({"note": _text(item.note)}) if item.note else None
                    c.execute(
                        Q_EVENT, (lease.job_id, now, EventKind.COMPLETED.value, _text(lease.worker_id), row[0], detail)
                    )
                    out[i] = True
                else:
                    out[i] = self._refused(c, lease, "complete", now, repeat=repeat)
            return out

        return self._run(body, on_unknown=lambda c: body(c, True))

    def fail(self, items: Sequence[Failure], clock: Clock, *, repeat: bool = False) -> list[bool]:
        leases = [item.lease for item in items]

        def body(c: Cursor, repeat: bool = repeat) -> list[bool]:
            now = clock()
            out = [False] * len(items)
            for i in _by_job_id(leases):
                item, lease = items[i], leases[i]
                error = _text(item.error)
                args = {"now": now, "retry_at": item.retry_at, "error": error, "id": lease.job_id, "token": lease.token}
                detail: dict[str, Any] = {"error": clip(error or "")}
                if item.retry_at is not None:
                    c.execute(Q_RETRY, args)
                    op, kind, detail = "retry", EventKind.RETRY_SCHEDULED, {**detail, "retry_at": item.retry_at}
                else:
                    c.execute(Q_FAIL, args)
                    op, kind = "fail", EventKind.FAILED
                row = c.fetchone()
                if row is not None:
                    c.execute(
                        Q_EVENT, (lease.job_id, now, kind.value, _text(lease.worker_id), row[0], json.dumps(detail))
                    )
                    out[i] = True
                else:
                    out[i] = self._refused(c, lease, "fail", now, repeat=repeat, applied_as=op)
            return out

        return self._run(body, on_unknown=lambda c: body(c, True))

    def release(self, leases: Sequence[Lease], clock: Clock, reason: str, *, repeat: bool = False) -> list[bool]:
        return self._simple_worker_write(
            Q_RELEASE, EventKind.RELEASED, leases, clock, {"reason": _text(reason)}, notify=True, repeat=repeat
        )

    def ack_cancel(self, leases: Sequence[Lease], clock: Clock, *, repeat: bool = False) -> list[bool]:
        return self._simple_worker_write(
            Q_ACK_CANCEL, EventKind.CANCELLED, leases, clock, {"by": "worker"}, notify=False, repeat=repeat
        )

    def _simple_worker_write(
        self,
        query: str,
        kind: EventKind,
        leases: Sequence[Lease],
        clock: Clock,
        detail: dict[str, Any],
        *,
        notify: bool,
        repeat: bool,
    ) -> list[bool]:
        def body(c: Cursor, repeat: bool = repeat) -> list[bool]:
            now = clock()
            out = [False] * len(leases)
            queues: set[str] = set()
            for i in _by_job_id(leases):
                lease = leases[i]
                c.execute(query, {"now": now, "id": lease.job_id, "token": lease.token})
                row = c.fetchone()
                if row is not None:
                    c.execute(
                        Q_EVENT, (lease.job_id, now, kind.value, _text(lease.worker_id), row[0], json.dumps(detail))
                    )
                    queues.add(row[1])
                    out[i] = True
                else:
                    out[i] = self._refused(c, lease, kind.value, now, repeat=repeat)
            if notify:  # a released job is due at once: let an idle worker take it
                for queue in sorted(queues):
                    c.execute(Q_NOTIFY, (LISTEN_CHANNEL, queue))
            return out

        return self._run(body, on_unknown=lambda c: body(c, True))

    def rescue_expired(
        self,
        clock: Clock,
        backoff: Callable[[int], float],
        actor: str,
        gone_owners: Sequence[str] = (),
        cutoff: Callable[[float], float] | None = None,
    ) -> list[RescueResult]:
        gone = set(gone_owners)

        def body(c: Cursor) -> list[RescueResult]:
            now = clock()
            out = []
            c.execute(Q_EXPIRED, (cutoff(now) if cutoff else now, list(gone_owners)))
            for job_id, owner, token, attempts, max_attempts, cancel_requested in c.fetchall():
                plan = plan_rescue(owner, attempts, max_attempts, bool(cancel_requested), now, backoff, owner in gone)
                c.execute(
                    Q_RESCUE,
                    {
                        "status": plan.status,
                        "now": now,
                        "run_at": plan.run_at,
                        "error": plan.error,
                        "id": job_id,
                        "token": token,
                    },
                )
                if c.rowcount:
                    detail = json.dumps({"previous_owner": owner, "run_at": plan.run_at})
                    c.execute(Q_EVENT, (job_id, now, plan.kind.value, _text(actor), attempts, detail))
                    out.append(RescueResult(job_id, plan.outcome, owner))
            return out

        return self._write(body)

    def next_due_at(self, queues: Sequence[str]) -> float | None:
        def body(c: Cursor) -> float | None:
            row = c.execute(Q_NEXT_DUE, (list(queues),)).fetchone()
            return row[0] if row else None

        return self._read(body)

    # -- operators -------------------------------------------------------------------------
    def resubmit(self, where: JobFilter, actor: str, now: float) -> list[ActionResult]:
        def body(c: Cursor) -> list[ActionResult]:
            out = []
            queues: set[str] = set()
            for job_id, status in self._targets(c, where):
                action, result = plan_operator_action("resubmit", job_id, status)
                if action is Action.RESUBMIT:
                    row = c.execute(Q_RESUBMIT, {"now": now, "id": job_id, "status": status}).fetchone()
                    if row is not None:
                        queues.add(row[0])
                    detail = json.dumps({"from": status})
                    c.execute(Q_EVENT, (job_id, now, EventKind.RESUBMITTED.value, _text(actor), 0, detail))
                out.append(result)
            for queue in sorted(queues):
                c.execute(Q_NOTIFY, (LISTEN_CHANNEL, queue))
            return out

        return self._write(body)

    def cancel(self, where: JobFilter, actor: str, now: float) -> list[ActionResult]:
        def body(c: Cursor) -> list[ActionResult]:
            out = []
            for job_id, status in self._targets(c, where):
                action, result = plan_operator_action("cancel", job_id, status)
                if action is Action.CANCEL:
                    c.execute(Q_CANCEL, {"now": now, "id": job_id, "status": status})
                    detail = json.dumps({"from": status})
                    c.execute(Q_EVENT, (job_id, now, EventKind.CANCELLED.value, _text(actor), None, detail))
                elif action is Action.REQUEST_CANCEL:
                    c.execute(Q_REQUEST_CANCEL, {"now": now, "id": job_id})
                    c.execute(Q_EVENT, (job_id, now, EventKind.CANCEL_REQUESTED.value, _text(actor), None, None))
                out.append(result)
            return out

        return self._write(body)

    def _targets(self, c: Cursor, where: JobFilter) -> list[tuple[int, str]]:
        """The jobs an operator action applies to, locked (in id order) until the action commits.

        Ids named in ``where.ids`` that match nothing come last with status "" (not found).
        """
        clause, params = _where(where)
        found: list[tuple[int, str]] = [
            (row[0], row[1]) for row in c.execute(f"SELECT id, status FROM jobs{clause} ORDER BY id FOR UPDATE", params)
        ]
        if where.ids:  # name the ids that do not exist, so a caller can say "not found"
            known = {job_id for job_id, _ in found}
            return found + [(i, "") for i in where.ids if i not in known]
        return found

    def purge(self, statuses: Sequence[JobStatus], finished_before: float) -> int:
        if not statuses:
            return 0

        def body(c: Cursor) -> int:
            row = c.execute(Q_PURGE, ([s.value for s in statuses], finished_before)).fetchone()
            return int(row[0]) if row else 0

        return self._write(body)

    # -- reads -----------------------------------------------------------------------------
    def get(self, job_id: int) -> Job | None:
        row = self._read(lambda c: c.execute(f"SELECT {_COLS} FROM jobs WHERE id = %s", (job_id,)).fetchone())
        return job_from_row(row) if row else None

    def events(self, job_id: int) -> list[Event]:
        rows = self._read(lambda c: c.execute(Q_EVENTS, (job_id,)).fetchall())
        return [event_from_row(r) for r in rows]

    def recent_events(self, limit: int, kinds: Sequence[str] = ()) -> list[Event]:
        clause = " WHERE kind = ANY(%s)" if kinds else ""
        params: list[Any] = [list(kinds)] if kinds else []
        sql = f"SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events{clause} ORDER BY id DESC LIMIT %s"
        rows = self._read(lambda c: c.execute(sql, (*params, limit)).fetchall())
        return [event_from_row(r) for r in rows]

    def list_jobs(self, where: JobFilter, page: Page) -> list[Job]:
        if page.sort not in SORT_FIELDS:
            raise ConfigError(f"cannot sort by {page.sort!r}; choose one of {', '.join(SORT_FIELDS)}")
        clause, params = _where(where)
        # Sort like SQLite: NULLs are the smallest values, text compares by code point.
        direction = "DESC NULLS LAST" if page.descending else "ASC NULLS FIRST"
        column = 'status COLLATE "C"' if page.sort == "status" else page.sort
        order = f"{column} {direction}" + ("" if page.sort == "id" else f", id {direction}")
        sql = f"SELECT {_COLS} FROM jobs{clause} ORDER BY {order} LIMIT %s OFFSET %s"
        rows = self._read(lambda c: c.execute(sql, (*params, page.limit, page.offset)).fetchall())
        return [job_from_row(r) for r in rows]

    def count_jobs(self, where: JobFilter) -> int:
        clause, params = _where(where)

        def body(c: Cursor) -> int:
            row = c.execute(f"SELECT count(*) FROM jobs{clause}", params).fetchone()
            return int(row[0]) if row else 0

        return self._read(body)

    def counts(self) -> dict[str, int]:
        rows = self._read(lambda c: c.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        out = {s.value: 0 for s in JobStatus}
        out.update({status: int(n) for status, n in rows})
        return out

    def stats(self, now: float) -> QueueStats:
        def body(c: Cursor) -> QueueStats:
            by_queue: dict[str, dict[str, int]] = {}
            counts = {s.value: 0 for s in JobStatus}
            for queue, status, n in c.execute(Q_STATS_BY_QUEUE).fetchall():
                by_queue.setdefault(queue, {s.value: 0 for s in JobStatus})[status] = int(n)
                counts[status] = counts.get(status, 0) + int(n)
            oldest_row = c.execute(Q_STATS_OLDEST, (now,)).fetchone()
            done = {kind: int(n) for kind, n in c.execute(Q_STATS_DONE, (now - 60,)).fetchall()}
            expired_row = c.execute(Q_STATS_EXPIRED, (now,)).fetchone()
            return QueueStats(
                counts=counts,
                by_queue=by_queue,
                oldest_pending_at=oldest_row[0] if oldest_row else None,
                completed_last_minute=done.get("completed", 0),
                failed_last_minute=done.get("failed", 0) + done.get("expired", 0),
                expired_leases=int(expired_row[0]) if expired_row else 0,
            )

        return self._read(body)

    def history(self, since: float, bucket_seconds: float, now: float) -> list[Bucket]:
        def body(c: Cursor) -> list[Bucket]:
            kind_counts = [
                (int(b), kind, int(n))
                for b, kind, n in c.execute(Q_HISTORY_KINDS, {"since": since, "bucket": bucket_seconds}).fetchall()
            ]
            durations = c.execute(Q_HISTORY_DURATIONS, (since, HISTORY_SAMPLE_LIMIT)).fetchall()
            row = c.execute("SELECT count(*) FROM jobs WHERE status = 'PENDING'").fetchone()
            pending = int(row[0]) if row else 0
            return build_buckets(since, bucket_seconds, now, kind_counts, durations, pending)

        return self._read(body)

    # -- worker registry -------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo) -> None:
        params = (
            _text(info.id),
            _text(info.name),
            _text(info.host),
            info.pid,
            json.dumps(list(info.queues)),
            info.started_at,
            info.last_seen_at,
            info.stopped_at,
            json.dumps(list(info.current_jobs)),
            info.jobs_done,
            info.jobs_failed,
            info.wake_address,
            _text(info.process_table),
        )
        self._write(lambda c: c.execute(Q_REGISTER_WORKER, params))

    def worker_seen(self, worker_id: str, now: float, current_jobs: Sequence[int], done: int, failed: int) -> None:
        params = (now, json.dumps(list(current_jobs)), done, failed, _text(worker_id))
        self._write(lambda c: c.execute(Q_WORKER_SEEN, params))

    def worker_stopped(self, worker_id: str, now: float) -> None:
        self._write(lambda c: c.execute(Q_WORKER_STOPPED, (now, now, _text(worker_id))))

    def list_workers(self, limit: int = 200) -> list[WorkerInfo]:
        rows = self._read(lambda c: c.execute(Q_LIST_WORKERS, (limit,)).fetchall())
        return [worker_from_row(r) for r in rows]

    # -- wake-up ---------------------------------------------------------------------------
    def listener(self, worker_id: str, queues: Sequence[str]) -> PostgresListener:
        return PostgresListener(self.url, self._kwargs, queues)


def _is_server_error(exc: psycopg.OperationalError) -> bool:
    """True for an error the server reported on a working connection (retrying would not help).

    A lost connection has no SQLSTATE, or one of class 08 (connection exception) or 57P (the
    server is shutting down or restarting).
    """
    state = exc.sqlstate
    return state is not None and not state.startswith(("08", "57P"))


class PostgresListener:
    """An idle worker's wake-up line: ``LISTEN jobq_wakeup`` on a dedicated connection.

    ``wait`` returns True when a notification for one of its queues arrived, and also when the
    connection was lost (it reconnects; the worker should poll, a notification may have been
    missed meanwhile).
    """

    def __init__(self, url: str, kwargs: dict[str, Any], queues: Sequence[str]) -> None:
        self.address: str | None = None  # PostgreSQL routes notifications itself
        self._url = url
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
            conn.execute(f"LISTEN {LISTEN_CHANNEL}")
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
