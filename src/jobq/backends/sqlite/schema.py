"""The SQLite schema: migrations, applied in order and recorded in ``jobq_schema``.

The schema sticks to what the Debian ``sqlite3`` 3.40 shell can read and update (the demo edits
the database with it); a trigger records status changes made by hand as events.
"""

from __future__ import annotations

from jobq.backends.statements import KEY_HELD_SQL
from jobq.flow import CONTROLS_REFUSED, LIMIT_MAX

SCHEMA_VERSION = 17
_NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"

# -- schema ---------------------------------------------------------------------------------
# Each migration is a list of statements applied in one transaction; the version reached is
# recorded in jobq_schema. Only append: never edit a released migration.

#: What jobq.flow.control_defect finds in a queue_controls row, refused at the write (SQLite's
#: column types do not: text or 2.5 go into an INTEGER column, and text orders above every
#: number there). NEW already has the columns' affinity applied, so '3' arrives as the integer 3.
_CONTROLS_BAD = f"""
    NOT (NEW.concurrency IS NULL OR (typeof(NEW.concurrency) = 'integer' AND NEW.concurrency BETWEEN 1 AND {LIMIT_MAX}))
    OR NOT (NEW.per_key IS NULL OR (typeof(NEW.per_key) = 'integer' AND NEW.per_key BETWEEN 1 AND {LIMIT_MAX}))
    OR NOT (NEW.rate_count IS NULL OR (typeof(NEW.rate_count) = 'integer' AND NEW.rate_count BETWEEN 1 AND {LIMIT_MAX}))
    OR (NEW.rate_count IS NULL) <> (NEW.rate_window IS NULL)
    OR NOT (NEW.rate_window IS NULL OR (typeof(NEW.rate_window) IN ('integer', 'real')
            AND NEW.rate_window > 0 AND NEW.rate_window < 9e999))
    OR NOT (NEW.rate_tat IS NULL OR (typeof(NEW.rate_tat) IN ('integer', 'real') AND abs(NEW.rate_tat) < 9e999))
"""
QUEUE_CONTROLS_CHECKS = tuple(
    f"CREATE TRIGGER queue_controls_check_{when.lower()} BEFORE {when} ON queue_controls WHEN {_CONTROLS_BAD}"
    f"BEGIN SELECT RAISE(ABORT, '{CONTROLS_REFUSED}'); END"
    for when in ("INSERT", "UPDATE")
)
"""The triggers that refuse them (a test drops and re-creates them to write a row as it could be
written before they existed)."""


#: The trigger of schema 8 (``jobs_external_status``): a status changed by hand (e.g. ``sqlite3
#: queue.db "UPDATE jobs SET status='FAILED' ..."``) leaves rev unchanged: record it as an event
#: (with the claim of the attempt it ended), stamp the times, and drop any lease so a worker still
#: holding one is refused. Schema 14 creates it again on the rebuilt table.
EXTERNAL_STATUS_TRIGGER = f"""CREATE TRIGGER jobs_external_status AFTER UPDATE OF status ON jobs
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
                        CASE WHEN OLD.status = 'PROCESSING' AND OLD.started_at IS NOT NULL
                            THEN json_object('from', OLD.status, 'to', NEW.status,
                                             -- json_object writes a REAL with 15 digits: 17 keep it exact
                                             'claimed_at', json(printf('%!.17g', OLD.started_at)),
                                             'claimed_by', OLD.lease_owner)
                            ELSE json_object('from', OLD.status, 'to', NEW.status) END);
            END"""
#: The indexes of ``jobs`` as their latest migration made them (schemas 6, 8, 12, 13: see there).
JOBS_KEY_INDEX = f"CREATE UNIQUE INDEX jobs_key ON jobs (idempotency_key) WHERE {KEY_HELD_SQL}"
JOBS_FINISHED_INDEX = (
    "CREATE INDEX jobs_finished ON jobs (finished_at, status, queue, started_at) WHERE finished_at IS NOT NULL"
)
JOBS_STATUS_RARE_INDEX = (
    "CREATE INDEX jobs_status_rare ON jobs (status, id) WHERE status = 'FAILED' OR status = 'CANCELLED'"
)
JOBS_LIVE_INDEX = (
    "CREATE INDEX jobs_live ON jobs (status DESC, queue, priority, run_at, id)"
    " WHERE status = 'PENDING' OR status = 'PROCESSING'"
)


#: The next job's id, in every statement that inserts a job (SQLite schema 14): one above the
#: newest row and above ``jobq_id_floor``, the highest id a delete took from the top of the table
#: (``jobs_id_floor``). Ids are never reused, as AUTOINCREMENT made sure before, without the
#: read and the write of ``sqlite_sequence`` that it adds to every insert (one more page a
#: transaction: ~5 us of an enqueue's ~30 inside SQLite, issue 13). A database whose floor row
#: was deleted by hand gets SQLite's own choice (NULL: one above the newest row).
NEXT_JOB_ID_SQL = "max(coalesce((SELECT max(id) FROM jobs), 0), (SELECT floor FROM jobq_id_floor)) + 1"

#: ``jobs`` as schema 14 rebuilds it: the columns of schema 13 in their order (a copy takes them
#: by position), without AUTOINCREMENT (``NEXT_JOB_ID_SQL`` instead), and the checks of
#: ``status`` and ``key_scope`` as equalities: SQLite checks ``x IN (a, b, c, ...)`` of more than
#: two values by building a temporary b-tree of the list for every row written (measured: ~0.5 us
#: per status change, ~3 us of an enqueue's ~30), and comparisons in turn without one.
JOBS_TABLE_14 = """CREATE TABLE jobs_rebuilt (
    id INTEGER PRIMARY KEY,                -- never reused: NEXT_JOB_ID_SQL, jobs_id_floor
    queue TEXT NOT NULL DEFAULT 'default',
    task TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL,                 -- JSON, never pickle
    status TEXT NOT NULL DEFAULT 'PENDING'
        CHECK (status = 'PENDING' OR status = 'PROCESSING' OR status = 'COMPLETED'
               OR status = 'FAILED' OR status = 'CANCELLED'),
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
    rev INTEGER NOT NULL DEFAULT 0,        -- bumped by every jobq status write
    progress REAL,
    progress_message TEXT,
    progress_at REAL,
    trace_context TEXT,
    key_scope TEXT NOT NULL DEFAULT 'all'
        CHECK (key_scope = 'all' OR key_scope = 'active' OR key_scope = 'ttl' OR key_scope = 'released'),
    key_expires_at REAL,
    concurrency_key TEXT,
    policy TEXT
)"""


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
    [
        # The finished-jobs index carries status and queue: stats and the ops page count and pick
        # the newest finished jobs from the index alone (reading the row of each made stats take
        # seconds at 10M jobs). Completions already write an entry here; wider entries add no write.
        "DROP INDEX jobs_finished",
        "CREATE INDEX jobs_finished ON jobs (finished_at, status, queue) WHERE finished_at IS NOT NULL",
    ],
    [
        # How a worker ended (jobq.backends.base.WorkerEnd: stopped, crashed, lost); NULL while it
        # runs, and for rows a jobq before schema 4 stopped.
        "ALTER TABLE workers ADD COLUMN end_reason TEXT",
    ],
    [
        # Observability (jobq.observability): a handler's progress, fenced by the lease token
        # like a heartbeat, and the OpenTelemetry context of the enqueue that made the job (W3C
        # traceparent text; NULL unless tracing was on). Columns of the row, not a side table:
        # `jobq show` and the apps read them with the job, and a purge removes them with it.
        "ALTER TABLE jobs ADD COLUMN progress REAL",
        "ALTER TABLE jobs ADD COLUMN progress_message TEXT",
        "ALTER TABLE jobs ADD COLUMN progress_at REAL",
        "ALTER TABLE jobs ADD COLUMN trace_context TEXT",
    ],
    [
        # Key scopes (Queue.enqueue's key_scope / key_ttl): the unique index holds a key only while
        # its scope says so. 'active' leaves the index when the row's status does, however it
        # changes (a worker, an operator, a hand edit), so nothing has to remember to release it;
        # 'ttl' holds until enqueue finds it expired and marks it 'released' (in the transaction
        # that takes the key anew); 'all' holds until the row is purged, as before.
        "ALTER TABLE jobs ADD COLUMN key_scope TEXT NOT NULL DEFAULT 'all'"
        " CHECK (key_scope IN ('all', 'active', 'ttl', 'released'))",
        "ALTER TABLE jobs ADD COLUMN key_expires_at REAL",
        "DROP INDEX jobs_key",
        JOBS_KEY_INDEX,
    ],
    [
        # Periodic jobs (jobq.schedules): one row per schedule; next_run_at is the first slot not
        # yet handled, moved on by the transaction that enqueues a slot's job.
        """CREATE TABLE schedules (
            name TEXT PRIMARY KEY,
            task TEXT NOT NULL,
            queue TEXT NOT NULL,
            payload_json TEXT,                     -- JSON; NULL: the slot's own {"schedule", "slot"}
            cron TEXT,
            every REAL,
            zone TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            catchup TEXT NOT NULL CHECK (catchup IN ('latest', 'all', 'none')),
            overlap INTEGER NOT NULL,
            origin TEXT NOT NULL,                  -- 'code' (@jobq.periodic) or 'api'
            next_run_at REAL NOT NULL,
            last_run_at REAL,
            last_job_id INTEGER,
            paused INTEGER NOT NULL DEFAULT 0,
            paused_by TEXT,
            paused_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX schedules_due ON schedules (next_run_at) WHERE paused = 0",
    ],
    [
        # Issue 13: fewer index pages per claimed and completed job. One index of the live rows
        # (PENDING and PROCESSING) replaces jobs_claim and jobs_lease: a claim moves the entry
        # within it (one page while the backlog is small) instead of deleting from one index
        # and inserting into another, and a heartbeat (lease_expires_at is not a key any more)
        # writes no index page. Claims walk it exactly as jobs_claim (status = 'PENDING' is a
        # term of its predicate, so SQLite uses it); PROCESSING rows are one range of it.
        "CREATE INDEX jobs_live ON jobs (status, queue, priority, run_at, id)"
        " WHERE status = 'PENDING' OR status = 'PROCESSING'",
        "DROP INDEX jobs_claim",
        "DROP INDEX jobs_lease",
        # The finished-jobs index also carries started_at: the ops chart counts the claims of
        # completed jobs (no longer events) from the index alone. Same entries, no more writes.
        "DROP INDEX jobs_finished",
        JOBS_FINISHED_INDEX,
        # The trigger's event carries the claim of the attempt an outside edit ended (a running
        # job set to FAILED by hand): claims are not events any more, and the row's columns move
        # on at the next claim (common.attempt_detail). Otherwise the trigger of schema 1.
        "DROP TRIGGER jobs_external_status",
        EXTERNAL_STATUS_TRIGGER,
    ],
    [
        # Flow control (docs/flow-control.md): one row per queue that was ever paused or limited,
        # read and updated by the claim itself (so the rules hold for every worker on every host
        # at once), and the operators' changes to it as a history (who, when, what).
        # rate_tat: the rate limit's "theoretical arrival time" (GCRA): no claim of the queue is
        # admitted before it, and each admitted job moves it on by window/count seconds.
        """CREATE TABLE queue_controls (
            queue TEXT PRIMARY KEY,
            paused INTEGER NOT NULL DEFAULT 0,
            paused_by TEXT,
            paused_at REAL,
            concurrency INTEGER CHECK (concurrency IS NULL OR concurrency >= 1),
            per_key INTEGER CHECK (per_key IS NULL OR per_key >= 1),
            rate_count INTEGER CHECK (rate_count IS NULL OR rate_count >= 1),
            rate_window REAL CHECK (rate_window IS NULL OR rate_window > 0),
            rate_tat REAL,
            updated_by TEXT,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE queue_control_events (
            id INTEGER PRIMARY KEY,
            queue TEXT NOT NULL,
            at REAL NOT NULL,
            actor TEXT,
            action TEXT NOT NULL,                  -- pause, resume, limits
            detail TEXT                            -- JSON: the limits after the change
        )""",
        "CREATE INDEX queue_control_events_queue ON queue_control_events (queue, id)",
        # Jobs of one key share the queue's per-key limit (NULL: no key, only the queue's limits).
        "ALTER TABLE jobs ADD COLUMN concurrency_key TEXT",
    ],
    [
        # Retry policy given to enqueue (jobq.retry.JobPolicy): JSON of only the fields the
        # producer set, so a worker tells "explicit" from "the task's default" (NULL: none set).
        "ALTER TABLE jobs ADD COLUMN policy TEXT",
        # Every pause and resume of a schedule, not just the last: who, when, what.
        """CREATE TABLE schedule_actions (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('pause', 'resume')),
            actor TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX schedule_actions_name ON schedule_actions (name, at)",
    ],
    # A queue_controls row that jobq could not enforce is refused when it is written, not only
    # held back when a claim reads it (jobq.flow.control_defect, which stays for rows written
    # before this migration): an operator's sqlite3 UPDATE gets the one-line error at once.
    list(QUEUE_CONTROLS_CHECKS),
    [
        # The rare finished statuses, as PostgreSQL has had them since its schema 9: with
        # jobs_live (PENDING, PROCESSING) every status but COMPLETED is now a range of a partial
        # index, so a filter of them counts and lists its jobs without reading the finished
        # history (the manager's default list counted every row: 0.1 s a refresh at 1,000,000
        # stored jobs). No claim or completion writes an entry here; a failure or a cancel does.
        # A filter names each status as an equality (Dialect.statuses): SQLite uses a partial
        # index for `status = 'FAILED'`, not for `status IN (...)`.
        JOBS_STATUS_RARE_INDEX,
    ],
    [
        # Issue 13: the running range of jobs_live next to where claims take from. In ascending
        # order 'PROCESSING' sorts after every PENDING entry, so with a backlog of more than a
        # leaf or two a claim wrote two index pages (the head of the PENDING range, and the
        # PROCESSING range at the far end) and a completion a third leaf away. Descending on
        # status, the PROCESSING range comes first and the first queue's PENDING head right after
        # it: a claim moves its entry within one leaf, and the completion removes it from that
        # same leaf. Measured with 20,000 jobs waiting: 6.46 -> 5.47 WAL pages per claimed and
        # completed job, ~5 % of its time at FULL. Every statement keeps its plan (an equality on
        # status, then the columns in claim order): tests/integration/test_sqlite_costs.py.
        # The index is rebuilt from the live rows (a scan of the table, under the write lock).
        "DROP INDEX jobs_live",
        JOBS_LIVE_INDEX,
    ],
    [
        # Issue 13: an insert without AUTOINCREMENT's sqlite_sequence, and checks without IN lists
        # (JOBS_TABLE_14). SQLite changes neither in place, so the table is rebuilt as its manual
        # says (a new table, a copy, the old one dropped, the new renamed, its indexes and
        # triggers made again), in the migration's one transaction: ~2 s a million stored jobs,
        # under the write lock, and the table's size again in free disk space until it is done.
        # Ids stay unique for good: the floor starts at the highest id AUTOINCREMENT handed out
        # (its sqlite_sequence row), and a delete of the newest rows (a purge, or by hand) raises
        # it; NEXT_JOB_ID_SQL starts above both.
        "CREATE TABLE jobq_id_floor (floor INTEGER NOT NULL)",
        "INSERT INTO jobq_id_floor (floor) SELECT max("
        "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0), coalesce((SELECT max(id) FROM jobs), 0))",
        JOBS_TABLE_14,
        "INSERT INTO jobs_rebuilt SELECT * FROM jobs",
        "DROP TABLE jobs",
        "ALTER TABLE jobs_rebuilt RENAME TO jobs",
        JOBS_KEY_INDEX,
        JOBS_FINISHED_INDEX,
        JOBS_STATUS_RARE_INDEX,
        JOBS_LIVE_INDEX,
        EXTERNAL_STATUS_TRIGGER,
        # Only a delete of the newest row moves the floor (a purge of old jobs does not write it):
        # whichever order a statement deletes its rows in, the highest one is then the newest.
        """CREATE TRIGGER jobs_id_floor AFTER DELETE ON jobs
            WHEN OLD.id > (SELECT floor FROM jobq_id_floor) AND NOT EXISTS (SELECT 1 FROM jobs WHERE id > OLD.id)
            BEGIN
                UPDATE jobq_id_floor SET floor = OLD.id;
            END""",
    ],
    [
        # An id changed by hand (``UPDATE jobs SET id = ...``) frees the old one, which the next
        # insert took again when it had been the newest: the floor rises to it. jobq never writes
        # an id, and SQLite codes an ``UPDATE OF id`` trigger only into statements that set id,
        # so no statement of jobq's pays for it (schema 14 rebuilt the table: a rebuild must make
        # this trigger and jobs_id_floor again).
        """CREATE TRIGGER jobs_id_moved AFTER UPDATE OF id ON jobs
            WHEN OLD.id > (SELECT floor FROM jobq_id_floor) AND NEW.id IS NOT OLD.id
            BEGIN
                UPDATE jobq_id_floor SET floor = OLD.id;
            END""",
    ],
    [
        # Each worker's host clock against the store's (WorkerInfo.clock_skew): measured on
        # PostgreSQL only, kept here too so that both stores hold the same rows.
        "ALTER TABLE workers ADD COLUMN clock_skew REAL",
    ],
    [
        # Each worker's wall clock less its monotonic one (WorkerInfo.clock_base), written with
        # its heartbeat: a worker starting on the same host learns of a step of the clock since
        # (a suspended host, NTP), which expired every lease judged by that clock.
        "ALTER TABLE workers ADD COLUMN clock_base REAL",
    ],
]
