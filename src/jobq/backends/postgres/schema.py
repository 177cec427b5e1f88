"""The PostgreSQL schema: migrations, applied in order under an advisory lock and recorded in
``jobq_schema``; a trigger records status changes made by hand in SQL as events.

Every object lives in the queue's own PostgreSQL schema (``?schema=NAME`` in the URL, default
``jobq``). Migrations run with ``search_path`` set to that schema alone (for their transaction
only), so they are written with unqualified names and create everything there; the statements of
``sql/*.sql`` are qualified with the schema when loaded (``qualify``). A database that a jobq
before schemas used (its tables in ``public``) is moved into the schema on first open
(``place_schema``), under the same advisory lock, with its data.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg
from psycopg import sql

from jobq.backends.statements import KEY_HELD_SQL, STATIC_FRAGMENTS
from jobq.flow import CONTROLS_REFUSED

log = logging.getLogger("jobq.postgres")

SCHEMA_VERSION = 18
#: jobq's tables, in the order they are moved out of ``public`` (and qualified in statements).
TABLES = (
    "jobs",
    "job_events",
    "workers",
    "jobq_schema",
    "schedules",
    "job_waiters",
    "queue_controls",
    "queue_control_events",
    "schedule_actions",
)
#: jobq's functions (the trigger's), moved with the tables.
FUNCTIONS = ("jobq_external_status()",)
_NOW_SQL = "extract(epoch FROM clock_timestamp())::double precision"
_TERMINAL = STATIC_FRAGMENTS["terminal"]

# -- schema ---------------------------------------------------------------------------------
# Each migration is a list of statements applied in one transaction; the version reached is
# recorded in jobq_schema. Only append: never edit a released migration.

#: What jobq.flow.control_defect finds in a queue_controls row that the column types and the
#: first CHECKs let through: 'NaN' and 'Infinity' (PostgreSQL orders NaN above every number, so
#: "< 'Infinity'" refuses both) and a rate's count without its window or the other way round.
#: A constraint's own error names only the constraint: the message is in its name's comment.
QUEUE_CONTROLS_CHECKS = (
    "ALTER TABLE queue_controls ADD CONSTRAINT queue_controls_enforceable CHECK ("
    "(rate_count IS NULL) = (rate_window IS NULL)"
    " AND (rate_window IS NULL OR rate_window < 'Infinity')"
    " AND (rate_tat IS NULL OR (rate_tat < 'Infinity' AND rate_tat > '-Infinity'))) NOT VALID",
    f"COMMENT ON CONSTRAINT queue_controls_enforceable ON queue_controls IS '{CONTROLS_REFUSED}'",
)

#: The trigger that records a status changed by hand (its function is in the first migration).
_EXTERNAL_STATUS_TRIGGER = """CREATE TRIGGER jobs_external_status BEFORE UPDATE OF status ON jobs
            FOR EACH ROW WHEN (NEW.rev = OLD.rev AND NEW.status IS DISTINCT FROM OLD.status)
            EXECUTE FUNCTION jobq_external_status()"""


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
        _EXTERNAL_STATUS_TRIGGER,
    ],
    [
        # Which process table the worker's pid belongs to (boot id + PID namespace; see
        # jobq.worker.rescuer.process_table_id). Kept on both backends so rows mean the same.
        "ALTER TABLE workers ADD COLUMN process_table text",
    ],
    [
        # The trigger function names job_events unqualified, and a function resolves names by the
        # search_path of the session that fires it, which no longer includes jobq's tables (they
        # are in their own schema): pin it to the schema this migration runs in.
        "ALTER FUNCTION jobq_external_status() SET search_path FROM CURRENT",
    ],
    [
        # The finished-jobs index carries status and queue: stats and the ops page count and pick
        # the newest finished jobs from the index alone (reading the row of each made stats take
        # seconds at 10M jobs). Completions already write an entry here; wider entries add no write.
        "DROP INDEX jobs_finished",
        "CREATE INDEX jobs_finished ON jobs (finished_at, status, queue) WHERE finished_at IS NOT NULL",
    ],
    [
        # How a worker ended (jobq.backends.base.WorkerEnd: stopped, crashed, lost); NULL while it
        # runs, and for rows a jobq before schema 5 stopped.
        "ALTER TABLE workers ADD COLUMN end_reason text",
    ],
    [
        # Observability (jobq.observability): progress and the enqueue's trace context (see the
        # SQLite schema). Nullable without a default: PostgreSQL adds them without a table rewrite.
        "ALTER TABLE jobs ADD COLUMN progress double precision",
        "ALTER TABLE jobs ADD COLUMN progress_message text",
        "ALTER TABLE jobs ADD COLUMN progress_at double precision",
        "ALTER TABLE jobs ADD COLUMN trace_context text",
    ],
    [
        # Key scopes: see the SQLite migration of the same name (jobq.backends.sqlite.schema). A
        # constant default is only catalog data here: no table rewrite. The new unique index is
        # built before the old one is dropped, so the key is never unguarded mid-migration.
        "ALTER TABLE jobs ADD COLUMN key_scope text NOT NULL DEFAULT 'all'"
        " CHECK (key_scope IN ('all', 'active', 'ttl', 'released'))",
        "ALTER TABLE jobs ADD COLUMN key_expires_at double precision",
        f"CREATE UNIQUE INDEX jobs_key_held ON jobs (idempotency_key) WHERE {KEY_HELD_SQL}",
        "DROP INDEX jobs_key",
        "ALTER INDEX jobs_key_held RENAME TO jobs_key",
    ],
    [
        # Periodic jobs: see the SQLite migration of the same name (jobq.backends.sqlite.schema).
        """CREATE TABLE schedules (
            name text PRIMARY KEY,
            task text NOT NULL,
            queue text NOT NULL,
            payload_json text,
            cron text,
            every double precision,
            zone text NOT NULL,
            priority integer NOT NULL DEFAULT 0,
            catchup text NOT NULL CHECK (catchup IN ('latest', 'all', 'none')),
            overlap boolean NOT NULL,
            origin text NOT NULL,
            next_run_at double precision NOT NULL,
            last_run_at double precision,
            last_job_id bigint,
            paused boolean NOT NULL DEFAULT false,
            paused_by text,
            paused_at double precision,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL
        )""",
        "CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused",
    ],
    [
        # Who waits for which job (Queue.wait): a finishing statement sends its NOTIFY only for
        # jobs with a row here, since every NOTIFY takes PostgreSQL's global notify-queue lock at
        # commit and writes the queue, listened to or not (measured: bench/notify_cost.py). A row
        # is inserted and committed before its waiter reads the job, and removed when it stops
        # waiting; one a crashed waiter left costs only NOTIFYs for its job until it expires.
        """CREATE TABLE job_waiters (
            id bigserial PRIMARY KEY,
            job_id bigint NOT NULL,
            expires_at double precision NOT NULL
        )""",
        "CREATE INDEX job_waiters_job ON job_waiters (job_id)",
        # VOLATILE: each query in it takes a fresh snapshot (READ COMMITTED), so called after the
        # statement's UPDATE locked the job's row it sees a waiter that registered meanwhile,
        # where the statement's own snapshot (taken before it waited for the lock) would not.
        """CREATE FUNCTION jobq_notify_waited(channel text, job bigint) RETURNS integer
        LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
        BEGIN
            IF EXISTS (SELECT FROM job_waiters WHERE job_id = job) THEN
                PERFORM pg_notify(channel, job::text);
                RETURN 1;
            END IF;
            RETURN 0;
        END
        $$""",
    ],
    [
        # Issue 13: fewer index entries per claim, heartbeat and completion. One index of the
        # live rows (PENDING and PROCESSING) replaces jobs_claim and jobs_lease; a heartbeat
        # then changes no indexed column (lease_expires_at was jobs_lease's key), so it can be a
        # HOT update. jobs_status is kept for the rare statuses only: every claim and completion
        # added an entry to it (an UPDATE of status is never HOT); PENDING and PROCESSING are
        # ranges of jobs_live, COMPLETED is most of the table (a scan by id finds them).
        "CREATE INDEX jobs_live ON jobs (status, queue, priority, run_at, id)"
        " WHERE status IN ('PENDING', 'PROCESSING')",
        "DROP INDEX jobs_claim",
        "DROP INDEX jobs_lease",
        "CREATE INDEX jobs_status_rare ON jobs (status, id) WHERE status IN ('FAILED', 'CANCELLED')",
        "DROP INDEX jobs_status",
        "ALTER INDEX jobs_status_rare RENAME TO jobs_status",
        # The finished-jobs index also carries started_at: the ops chart counts the claims of
        # completed jobs (no longer events) from the index alone.
        "CREATE INDEX jobs_finished_wide ON jobs (finished_at, status, queue, started_at)"
        " WHERE finished_at IS NOT NULL",
        "DROP INDEX jobs_finished",
        "ALTER INDEX jobs_finished_wide RENAME TO jobs_finished",
        # The trigger's event carries the claim of the attempt an outside edit ended (a running
        # job set to FAILED by hand): claims are not events any more, and the row's columns move
        # on at the next claim (common.attempt_detail). Otherwise the function of schema 1, still
        # pinned to this schema (a replaced function keeps no SET clause it does not repeat).
        f"""CREATE OR REPLACE FUNCTION jobq_external_status() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
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
                    CASE WHEN OLD.status = 'PROCESSING' AND OLD.started_at IS NOT NULL
                        THEN json_build_object('from', OLD.status, 'to', NEW.status,
                                               'claimed_at', OLD.started_at, 'claimed_by', OLD.lease_owner)::text
                        ELSE json_build_object('from', OLD.status, 'to', NEW.status)::text END);
            RETURN NEW;
        END $$""",
    ],
    [
        # Flow control: see the SQLite migration of the same name (jobq.backends.sqlite.schema).
        # A claim of a limited queue locks its row (FOR UPDATE) before it counts what runs.
        """CREATE TABLE queue_controls (
            queue text PRIMARY KEY,
            paused boolean NOT NULL DEFAULT false,
            paused_by text,
            paused_at double precision,
            concurrency integer CHECK (concurrency IS NULL OR concurrency >= 1),
            per_key integer CHECK (per_key IS NULL OR per_key >= 1),
            rate_count integer CHECK (rate_count IS NULL OR rate_count >= 1),
            rate_window double precision CHECK (rate_window IS NULL OR rate_window > 0),
            rate_tat double precision,
            updated_by text,
            updated_at double precision NOT NULL
        )""",
        """CREATE TABLE queue_control_events (
            id bigserial PRIMARY KEY,
            queue text NOT NULL,
            at double precision NOT NULL,
            actor text,
            action text NOT NULL,
            detail text
        )""",
        "CREATE INDEX queue_control_events_queue ON queue_control_events (queue, id)",
        # Nullable without a default: no table rewrite.
        "ALTER TABLE jobs ADD COLUMN concurrency_key text",
    ],
    [
        # Per-enqueue retry policy and the schedules' pause/resume history: see the SQLite
        # migration of the same content (jobq.backends.sqlite.schema).
        "ALTER TABLE jobs ADD COLUMN policy text",
        """CREATE TABLE schedule_actions (
            id bigserial PRIMARY KEY,
            name text NOT NULL,
            action text NOT NULL CHECK (action IN ('pause', 'resume')),
            actor text NOT NULL,
            at double precision NOT NULL
        )""",
        "CREATE INDEX schedule_actions_name ON schedule_actions (name, at)",
    ],
    # A queue_controls row that jobq could not enforce is refused when it is written (see the
    # SQLite migration of the same content). NOT VALID: a row already there is not checked, so the
    # upgrade never fails on it; jobq.flow.control_defect still holds such a row's queue back.
    list(QUEUE_CONTROLS_CHECKS),
    [
        # The waiters' wake-up runs in every completion and failure, and its SET search_path was
        # half its cost (~17 of ~37 us a call on the server: the setting saved and restored
        # around every call, pg_stat_statements). Its names are qualified instead: the table by
        # the schema this migration runs in, the rest by pg_catalog, so that no search_path can
        # shadow them. Still plpgsql and VOLATILE (see the first version above): its query takes
        # a fresh snapshot after the statement locked the job's row. CREATE OR REPLACE sets every
        # property anew, so the old SET is gone.
        "DO $do$ BEGIN EXECUTE"
        " 'CREATE OR REPLACE FUNCTION jobq_notify_waited(channel text, job bigint) RETURNS integer"
        " LANGUAGE plpgsql VOLATILE AS $b$ BEGIN"
        " IF EXISTS (SELECT FROM ' || quote_ident(current_schema()) || '.job_waiters"
        " WHERE job_id OPERATOR(pg_catalog.=) job) THEN"
        " PERFORM pg_catalog.pg_notify(channel, job::pg_catalog.text); RETURN 1; END IF;"
        " RETURN 0; END $b$'; END $do$",
    ],
    [
        # Each worker's host clock against the server's (WorkerInfo.clock_skew), written with
        # its heartbeat: which host NTP does not keep shows in `jobq workers` and the ops app.
        "ALTER TABLE workers ADD COLUMN clock_skew double precision",
    ],
    [
        # Each worker's wall clock less its monotonic one (WorkerInfo.clock_base), written with
        # its heartbeat: a worker starting on the same host learns of a step of the clock since.
        "ALTER TABLE workers ADD COLUMN clock_base double precision",
    ],
    [
        # Registrations gone, counted (postgres/__init__.py: _waiters_gate): finishing statements
        # skip the waiters' check while no one waits. Starts uncalled (read as 0): every
        # registration made before this migration is counted as made, none as gone, so the gate
        # stays open until the rescuer's settle finds no registration left (waiters.sql).
        "CREATE SEQUENCE job_waiters_gone OWNED BY job_waiters.id",
    ],
    [
        # Issue 13: the checks of status and key_scope move from the table to domains, with the
        # same values allowed. A table's CHECK is made ready again by every statement that writes
        # a row (the executor reads the constraint's stored expression and plans it, per
        # statement): ~12 us each, so ~25 us of every claim and of every completion on the server
        # (bench.pg_calls --anatomy), a sixth of each. A domain's check is planned once per session
        # (the type cache) and runs only where a statement assigns the column, as hand-written SQL
        # does. The domains get their checks after the columns change type: a domain without one
        # changes a text column's type without rewriting the table, and adding the check then
        # scans the rows once. A trigger that names a column keeps its type from changing: it is
        # dropped and made again, in this transaction.
        "CREATE DOMAIN jobq_status AS text",
        "CREATE DOMAIN jobq_key_scope AS text",
        "DROP TRIGGER jobs_external_status ON jobs",
        "ALTER TABLE jobs DROP CONSTRAINT jobs_status_check, DROP CONSTRAINT jobs_key_scope_check,"
        " ALTER COLUMN status TYPE jobq_status, ALTER COLUMN key_scope TYPE jobq_key_scope",
        "ALTER DOMAIN jobq_status ADD CONSTRAINT jobq_status_check"
        " CHECK (VALUE IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED'))",
        "ALTER DOMAIN jobq_key_scope ADD CONSTRAINT jobq_key_scope_check"
        " CHECK (VALUE IN ('all', 'active', 'ttl', 'released'))",
        _EXTERNAL_STATUS_TRIGGER,
    ],
]

Cursor = psycopg.Cursor[tuple[Any, ...]]

# A table name where a statement names a table: not a column qualifier (``jobs.id``), not part of
# a longer name (``jobs_done``), not already qualified (``jobq.jobs``), not inside quotes, not a
# parameter's name (``%(jobs)s``).
_TABLE_REF = re.compile(r"(?<![\w.\"'])(?<!%\()(" + "|".join(TABLES) + r")(?![\w.\"'])")


def qualify(statement: str, schema: str) -> str:
    """``statement`` with jobq's table names qualified by ``schema``.

    Qualified names, not a per-connection ``search_path``: behind a transaction pooler (PgBouncer
    ``pool_mode = transaction``) a ``SET`` lands on whichever server connection ran it and stays
    there for other clients, and PgBouncer refuses the ``options`` start-up parameter that would
    set it per connection. A qualified name also cannot be shadowed by a same-named table earlier
    in a user's search_path.

    >>> qualify("UPDATE jobs SET x = 1 FROM picked WHERE jobs.id = picked.id", "mail")
    'UPDATE mail.jobs SET x = 1 FROM picked WHERE jobs.id = picked.id'
    """
    return _TABLE_REF.sub(lambda m: f"{schema}.{m.group(1)}", statement)


def _one(cur: Cursor, query: str | sql.Composed, params: tuple[Any, ...] = ()) -> Any:
    row = cur.execute(query, params).fetchone()
    return None if row is None else row[0]


def place_schema(cur: Cursor, schema: str, *, create: bool) -> bool:
    """Make sure ``schema`` holds the queue, in the caller's transaction (under the migration lock).

    - The schema has jobq's tables: nothing to do.
    - ``public`` has them (a jobq from before schemas): move every table (with its indexes,
      sequences and trigger) and the trigger function into ``schema``; rows are not copied, so
      nothing can be lost or duplicated, and it takes a moment whatever the size.
    - Neither: create the schema when ``create``, else return False (no queue here).
    """
    if _one(cur, "SELECT to_regclass(%s)", (f"{schema}.jobq_schema",)) is not None:
        return True
    legacy = _one(cur, "SELECT to_regclass('public.jobq_schema')") is not None and bool(
        _one(cur, "SELECT coalesce(max(version), 0) > 0 FROM public.jobq_schema")
    )
    exists = _one(cur, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)) > 0
    if not legacy and not create:
        return False
    target = sql.Identifier(schema)
    if not exists:
        # Only when missing: CREATE SCHEMA IF NOT EXISTS still needs CREATE on the database.
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(target))
    if not legacy:
        return True
    moved = []
    for table in TABLES:
        if _one(cur, "SELECT to_regclass(%s)", (f"public.{table}",)) is not None:
            cur.execute(sql.SQL("ALTER TABLE public.{} SET SCHEMA {}").format(sql.Identifier(table), target))
            moved.append(table)
    for function in FUNCTIONS:
        if _one(cur, "SELECT to_regprocedure(%s)", (f"public.{function}",)) is not None:
            name = function.removesuffix("()")
            cur.execute(sql.SQL("ALTER FUNCTION public.{}() SET SCHEMA {}").format(sql.Identifier(name), target))
            moved.append(function)
    log.warning("moved jobq's %s from schema public to schema %s", ", ".join(moved), schema)
    return True
