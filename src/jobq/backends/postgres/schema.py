"""The PostgreSQL schema: migrations, applied in order under an advisory lock and recorded in
``jobq_schema``; a trigger records status changes made by hand in SQL as events."""

from __future__ import annotations

from jobq.backends.statements import STATIC_FRAGMENTS

SCHEMA_VERSION = 3
_NOW_SQL = "extract(epoch FROM clock_timestamp())::double precision"
_TERMINAL = STATIC_FRAGMENTS["terminal"]

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
    [
        # Observability (jobq.observability): progress and the enqueue's trace context (see the
        # SQLite schema). Nullable without a default: PostgreSQL adds them without a table rewrite.
        "ALTER TABLE jobs ADD COLUMN progress double precision",
        "ALTER TABLE jobs ADD COLUMN progress_message text",
        "ALTER TABLE jobs ADD COLUMN progress_at double precision",
        "ALTER TABLE jobs ADD COLUMN trace_context text",
    ],
]
