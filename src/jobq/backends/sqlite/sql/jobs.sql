-- Every statement that touches the jobs table (SQLite). Named parameters are :name; {braces} are
-- filled from the transition table at load time, or per call for lists (see statements.py).
--
-- Worker writes (complete, retry, fail, release, ack_cancel) keep the token of the lease that made
-- them: a write repeated after its commit's reply was lost is then recognised as already applied
-- (common.already_applied). Every fence still requires status PROCESSING, so a kept token grants
-- nothing; operator actions and rescues clear it.

-- name: insert_job
-- A key conflicts only with a row that holds it (KEY_HELD_SQL, the unique index's predicate): a
-- finished 'active' key or a released 'ttl' key no longer blocks it.
-- Every insert names its id ({next_job_id}, schema.NEXT_JOB_ID_SQL): ids are never reused.
INSERT INTO jobs (id, queue, task, payload, priority, run_at, max_attempts, timeout,
                  idempotency_key, key_scope, key_expires_at, concurrency_key, created_at, updated_at, policy)
VALUES ({next_job_id}, :queue, :task, :payload, :priority, :run_at, :max_attempts, :timeout,
        :key, :key_scope, :key_expires_at, :concurrency_key, :now, :now, :policy)
ON CONFLICT (idempotency_key) WHERE {key_held} DO NOTHING
RETURNING id

-- name: insert_job_alone
-- One job without keys (enqueue's usual call), sent alone: SQLite makes the lone INSERT its own
-- write transaction. Only the columns without a default, bound by position (?1 queue, ?2 task,
-- ?3 payload, ?4 priority, ?5 run_at, ?6 max_attempts, ?7 timeout, ?8 now, ?9 policy): no key,
-- so nothing can conflict and no ON CONFLICT is planned. Measured at NORMAL, CPU per enqueue:
-- ~7 us less than BEGIN/COMMIT around it, ~7 us less than insert_job's ON CONFLICT form.
INSERT INTO jobs (id, queue, task, payload, priority, run_at, max_attempts, timeout, created_at, updated_at, policy)
VALUES ({next_job_id}, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)
RETURNING id

-- name: insert_jobs_values
-- A batch of jobs without keys (nothing can conflict) in one multi-row INSERT: ?1 is the time,
-- then one row per job, bound by position (chunks of ops.VALUES_CHUNK_ROWS): the first row here,
-- {rows} the others, each `,(NULL,?1,?1,?,?,?,?,?,?,?,?)`. Measured per job (1,000 in
-- one statement, NORMAL, CPU): 5.7 us, against 7.3 for json_each over one JSON parameter and 9.9
-- for one prepared INSERT stepped per job; binding the same values by name took 179 us.
-- Rows are inserted in VALUES order: the first takes {next_job_id}, each other (id NULL) one
-- above the row before it, so ascending ids are the jobs in order.
INSERT INTO jobs (id, created_at, updated_at, queue, task, payload, priority, run_at, max_attempts, timeout, policy)
VALUES ({next_job_id}, ?1, ?1, ?, ?, ?, ?, ?, ?, ?, ?){rows}
RETURNING id

-- name: job_id_by_key
-- The job holding a key (at most one: the unique index).
SELECT id FROM jobs WHERE idempotency_key = :key AND {key_held}

-- name: release_expired_key
-- A 'ttl' key whose time has passed is released by the enqueue that wants it, in its own
-- transaction: the row lock (PostgreSQL) or the write lock (SQLite) lets one producer release it
-- and take it anew; the others then conflict with the new holder.
UPDATE jobs SET key_scope = 'released'
WHERE idempotency_key = :key AND {key_held} AND key_scope = 'ttl' AND key_expires_at <= :now
RETURNING id

-- name: claim
-- One UPDATE over the first due PENDING rows, in the partial index's order. One queue is an
-- equality, so SQLite walks jobs_live in order and stops after LIMIT rows (json_each or a sort
-- here scanned every pending row: 3x slower). BEGIN IMMEDIATE serialises claims: no locking hint.
-- Queues that are paused or limited ({uncontrolled}: read under the write lock, so true until
-- COMMIT) are passed over here: ops.claim_controlled claims their jobs after a read of the controls.
-- {returned}: the job columns, or for a large batch only id (claimed_rows reads the rows later).
UPDATE jobs SET status = 'PROCESSING', attempts = attempts + 1, rev = rev + 1,
    lease_owner = :worker, lease_token = :nonce || '-' || id, lease_expires_at = :expires,
    started_at = :now, updated_at = :now, cancel_requested = 0
WHERE id IN (SELECT id FROM jobs WHERE status = 'PENDING' AND {queues} AND run_at <= :now AND {uncontrolled}
             ORDER BY priority, run_at, id LIMIT :limit)
RETURNING {returned}

-- name: uncontrolled_one
-- The claim's {uncontrolled} for one queue (its {queues} is `queue IN (:q0)`): not correlated with
-- the row, so SQLite runs it once per statement, not once per pending row. A claim that takes a
-- job so needs no separate read of queue_controls (issue 13: one statement fewer per claim).
NOT EXISTS (SELECT 1 FROM queue_controls AS c WHERE c.queue = :q0 AND (c.paused <> 0
    OR c.concurrency IS NOT NULL OR c.per_key IS NOT NULL OR c.rate_count IS NOT NULL))

-- name: uncontrolled_each
-- The claim's {uncontrolled} for several queues: the controlled queues are listed once per
-- statement (not correlated), each pending row's queue then tested against that short list. A
-- correlated look-up per row ran once for every pending row the claim's sort reads.
queue NOT IN (SELECT c.queue FROM queue_controls AS c WHERE c.paused <> 0
    OR c.concurrency IS NOT NULL OR c.per_key IS NOT NULL OR c.rate_count IS NOT NULL)

-- name: claim_one
-- The same claim for one job (the per-job API): a scalar subquery instead of an IN list, which
-- SQLite builds as an ephemeral table per statement (measured: 20 us against 36 us per claim).
UPDATE jobs SET status = 'PROCESSING', attempts = attempts + 1, rev = rev + 1,
    lease_owner = :worker, lease_token = :nonce || '-' || id, lease_expires_at = :expires,
    started_at = :now, updated_at = :now, cancel_requested = 0
WHERE id = (SELECT id FROM jobs WHERE status = 'PENDING' AND {queues} AND run_at <= :now AND {uncontrolled}
            ORDER BY priority, run_at, id LIMIT 1)
RETURNING {job_columns}

-- name: claimed_rows
-- After a claim that returned ids only ({returned} is id: Dialect.claim_reads_after), its jobs'
-- rows, read once it has committed: those still leased by it (one taken from it meanwhile, by a
-- rescue after the process froze past the lease or by an edit by hand, is not its to run).
SELECT {job_columns} FROM jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'PROCESSING' AND lease_token = :nonce || '-' || id

-- name: claimed_by_nonce
SELECT {job_columns} FROM jobs
WHERE status = 'PROCESSING' AND lease_owner = :worker AND substr(lease_token, 1, length(:nonce)) = :nonce

-- name: lease_state
SELECT status, lease_token FROM jobs WHERE id = :id

-- name: heartbeat
UPDATE jobs SET lease_expires_at = :expires, updated_at = :now
WHERE id = :id AND status = 'PROCESSING' AND lease_token = :token
RETURNING cancel_requested

-- name: complete
UPDATE jobs SET status = 'COMPLETED', rev = rev + 1, finished_at = :now, updated_at = :now,
    result = :result, last_error = NULL, lease_expires_at = NULL
WHERE id = :id AND lease_token = :token AND status IN {from_complete}
RETURNING id, lease_token, attempts

-- name: complete_set
-- A group commit's completions in one statement: :items is a JSON array of [id, token, result]
-- (the batch's Python builds one string, not a parameter set per job). Each row is fenced by its
-- own token and status, as `complete` fences it; RETURNING names the rows whose lease held, the
-- caller records the others as refused. The join finds each row by its id (the primary key).
-- Measured per job (100 a transaction, NORMAL, CPU inside SQLite): 5.5 us against 9.3 us for
-- `complete` stepped once per job (issue 13: batched claim+complete at 0.19-0.35x raw).
UPDATE jobs SET status = 'COMPLETED', rev = rev + 1, finished_at = :now, updated_at = :now,
    result = c.value ->> 2, last_error = NULL, lease_expires_at = NULL
FROM json_each(:items) AS c
WHERE jobs.id = c.value ->> 0 AND jobs.lease_token = c.value ->> 1 AND jobs.status IN {from_complete}
RETURNING jobs.id, jobs.lease_token, jobs.attempts

-- name: complete_nonce_set
-- complete_set for a group whose leases were all made by one claim (each token is
-- :nonce || '-' || id, as the claims write it) and that stores no result: a batching worker's
-- group, most of the time. The ids alone, as a JSON array of numbers: no token or result read
-- out of a nested array per row (2.6-2.8 against 3.3-4.4 us a job under the write lock,
-- measured in one process, issue 13). Fenced as complete_set, row by row, by token and status.
UPDATE jobs SET status = 'COMPLETED', rev = rev + 1, finished_at = :now, updated_at = :now,
    result = NULL, last_error = NULL, lease_expires_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND lease_token = :nonce || '-' || id AND status IN {from_complete}
RETURNING id, lease_token, attempts

-- name: retry
-- Not a job whose cancel an operator requested: ops.fail then ends it with ack_cancel. Requested
-- is anything but 0 (`= 0` here, `<> 0` in ack_cancel, common.cancel_asked in Python): a value
-- written by hand, such as 2 or 'yes', must mean the same in all three.
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = :now, run_at = :retry_at,
    last_error = :error, lease_expires_at = NULL
WHERE id = :id AND lease_token = :token AND status IN {from_fail} AND cancel_requested = 0
RETURNING attempts, started_at, queue

-- name: fail
UPDATE jobs SET status = 'FAILED', rev = rev + 1, updated_at = :now, finished_at = :now,
    last_error = :error, lease_expires_at = NULL
WHERE id = :id AND lease_token = :token AND status IN {from_fail}
RETURNING attempts, started_at

-- name: release
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = :now, run_at = :now,
    attempts = max(0, attempts - 1), lease_expires_at = NULL
WHERE id = :id AND lease_token = :token AND status = 'PROCESSING' AND cancel_requested = 0
RETURNING attempts, queue, started_at

-- name: ack_cancel
UPDATE jobs SET status = 'CANCELLED', rev = rev + 1, updated_at = :now, finished_at = :now,
    lease_expires_at = NULL
WHERE id = :id AND lease_token = :token AND status = 'PROCESSING' AND cancel_requested <> 0
RETURNING attempts, queue, started_at

-- name: rescue_probe
-- `status = 'PROCESSING'` (the only status a rescue moves a job from, TRANSITIONS' RESCUE), not
-- `IN {from_rescue}`: SQLite uses a partial index only for a term that appears in its predicate,
-- and an IN list is not one (it scanned the whole table: seconds at 10M jobs, from every worker's
-- rescuer every few seconds).
SELECT id FROM jobs
WHERE status = 'PROCESSING' AND (lease_expires_at IS NULL OR lease_expires_at < :cutoff OR NOT lease_expires_at < 9e999 OR {gone})
LIMIT 1

-- name: expired
-- A lease counts only while it is a time: NULL (also what SQLite makes of a NaN), a time past,
-- or one that is no number (an infinity or text written by hand: `NOT x < 9e999`) is expired;
-- such a job was rescued only once its worker was gone.
SELECT id, lease_owner, lease_token, attempts, max_attempts, cancel_requested, started_at, task, policy FROM jobs
WHERE status = 'PROCESSING' AND (lease_expires_at IS NULL OR lease_expires_at < :cutoff OR NOT lease_expires_at < 9e999 OR {gone})
LIMIT 1000

-- name: rescue
-- Conditional on the token the rescuer read: a completion that landed meanwhile is never
-- overwritten (river#1302).
UPDATE jobs SET status = :status, rev = rev + 1, updated_at = :now, run_at = :run_at, last_error = :error,
    finished_at = CASE WHEN :status = 'PENDING' THEN NULL ELSE :now END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = :id AND status = 'PROCESSING' AND lease_token IS :token
RETURNING id

-- name: restamp_ahead
-- Jobs waiting whose row was written ahead of now, by the host's clock before it was set back
-- (NTP stepping a clock that ran ahead: every SQLite writer reads the host's clock). Each is made
-- as if written now: its due time moves back by how far ahead it was written, so a job due at once
-- is due now (it waited for the clock to catch up: up to the whole step) and a retry's delay runs
-- from now. Never earlier than meant: written at t by the clock as it is now, it was meant due at
-- t + delay, and t <= now. `updated_at` = now makes a second restamp find it not ahead. Only rows
-- ahead by up to the step (:limit) are the old clock's; a time that is no number (text, a blob, an
-- infinity or NaN written by hand) is left alone.
UPDATE jobs SET run_at = run_at - (updated_at - :now), updated_at = :now
WHERE status = 'PENDING' AND updated_at > :ahead AND updated_at <= :limit AND run_at < :inf
RETURNING id, queue

-- name: newest_write
-- When the newest job was last written (one step along the primary key): ahead of the clock, the
-- clock was set back since (the worker's first rescue, Queue.restamp_ahead).
SELECT updated_at FROM jobs ORDER BY id DESC LIMIT 1

-- name: next_due_at
SELECT min(run_at) FROM jobs WHERE status = 'PENDING' AND {queues}

-- name: targets
-- One chunk of an operator action's jobs (OPERATOR_CHUNK_JOBS), in id order from a cursor.
SELECT id, status FROM jobs{where} ORDER BY id LIMIT :limit

-- name: targets_walk
-- The same chunk of a large action (ops.operator._walk_targets): the table's rows read in id order
-- from the cursor, up to :upto, each tested against the filter. NOT INDEXED: through a status's index
-- SQLite would read and sort every match instead (PENDING's index is in claim order).
SELECT id, status FROM jobs NOT INDEXED{where} AND id <= :upto ORDER BY id LIMIT :limit

-- name: resubmit_set
-- One chunk's jobs of one status resubmitted (ops.operator.resubmit), each found by its id (see
-- cancel_set); RETURNING names those whose key let them (a refused one is read again, one by one).
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = :now, run_at = :now, attempts = 0,
    run = run + 1, started_at = NULL, finished_at = NULL, result = NULL, cancel_requested = 0,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = :status
    -- An 'active' key taken by a newer job since this one finished stays with that job: the
    -- resubmit is refused (the unique index would refuse it anyway, as it refuses a hand edit).
    AND NOT (key_scope = 'active' AND EXISTS (
        SELECT 1 FROM jobs AS holder
        WHERE holder.idempotency_key = jobs.idempotency_key AND holder.id <> jobs.id AND {key_held}))
RETURNING id, queue

-- name: attempts_of_jobs
-- attempt_of_job for each job of :ids (a JSON array).
SELECT id, status, attempts, started_at, lease_owner, lease_token, finished_at, created_at FROM jobs
WHERE id IN (SELECT value FROM json_each(:ids))

-- name: job_key
SELECT idempotency_key FROM jobs WHERE id = :id

-- name: cancel_set
-- One chunk's jobs of one status cancelled (ops.operator.cancel): :ids is a JSON array of their ids.
-- `+status`: each row is found by its id; with a plain `status =` SQLite walked the status's index
-- (every PENDING job) and tested each entry against the list, once per chunk.
UPDATE jobs SET status = 'CANCELLED', rev = rev + 1, updated_at = :now, finished_at = :now,
    lease_token = NULL, lease_expires_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = :status

-- name: queues_of_jobs
-- The queue of each job of a chunk an operator moves (ops.operator.move): :ids, a JSON array.
SELECT id, queue FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- name: move_set
-- One chunk's jobs of one status moved to queue :to (ops.operator.move). `+status`: as cancel_set.
-- No status changes: the external-status trigger stays quiet, and rev still moves (a jobq write).
UPDATE jobs SET queue = :to, rev = rev + 1, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = :status

-- name: request_cancel_set
UPDATE jobs SET cancel_requested = 1, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND +status = 'PROCESSING'

-- name: purge_jobs
-- One chunk of a purge (PURGE_CHUNK_JOBS): the jobs that finished first, along jobs_finished.
DELETE FROM jobs
WHERE id IN (SELECT id FROM jobs WHERE {statuses} AND finished_at < :before ORDER BY finished_at LIMIT :limit)
RETURNING id

-- name: purge_raises_floor
-- The work of the jobs_id_floor trigger for a purge's chunk (jobq's own connections run no
-- trigger, see SqliteBackend._open_writable): the newest id it deleted becomes the floor when no
-- newer job is left, so that no id is handed out again. The same floor as the trigger's, row by
-- row: a deleted row raised it only when no newer row existed, and none newer than :top was deleted.
UPDATE jobq_id_floor SET floor = :top WHERE floor < :top AND NOT EXISTS (SELECT 1 FROM jobs WHERE id > :top)

-- name: purge_events_of
-- The events of the jobs purge_jobs has just deleted (:ids, a JSON array), in its transaction.
DELETE FROM job_events WHERE job_id IN (SELECT value FROM json_each(:ids))

-- name: attempt_of_job
-- The latest attempt as the row records it, and when the job was made: the enqueued/claimed/completed
-- entries of a job's history that no event stores are derived from it (common.history_of).
SELECT id, status, attempts, started_at, lease_owner, lease_token, finished_at, created_at FROM jobs WHERE id = :id

-- name: recent_attempts
-- The rows whose latest attempt can be among the newest history entries: the running jobs (their
-- partial index), the newest `limit` finished ones (jobs_finished, read backwards) and the newest
-- `limit` made (the primary key, read backwards: their `enqueued` entries).
SELECT id, status, attempts, started_at, lease_owner, lease_token, finished_at, created_at FROM jobs
WHERE id IN (SELECT id FROM (SELECT id FROM jobs WHERE status = 'PROCESSING' ORDER BY started_at DESC LIMIT :limit)
             UNION ALL
             SELECT id FROM (SELECT id FROM jobs WHERE finished_at IS NOT NULL
                             ORDER BY finished_at DESC LIMIT :limit)
             UNION ALL
             SELECT id FROM (SELECT id FROM jobs ORDER BY id DESC LIMIT :limit))

-- name: get_job
SELECT {job_columns} FROM jobs WHERE id = :id

-- name: list_jobs
-- The page's ids first, then its rows: a filter of statuses finds its ids in their partial
-- indexes, which hold them (covering), and only the page's rows are read. Read whole, every job of
-- those statuses was read from the table to be sorted (the manager's first list at 10,000,000
-- stored jobs: 65 ms against 39).
SELECT {job_columns} FROM jobs
WHERE id IN (SELECT id FROM jobs{where} ORDER BY {order} LIMIT :limit OFFSET :offset)
ORDER BY {order}

-- name: list_jobs_window
-- A page of the newest `window` matching jobs (Page.window): their ids from the filter's index or
-- the primary key, newest first, then the page of those in its order. A sort by another column
-- than id sorted every matching job (a list of all 10,000,000 stored jobs by creation: 3.1 s).
SELECT {job_columns} FROM jobs
WHERE id IN (SELECT id FROM jobs
             WHERE id IN (SELECT id FROM jobs{where} ORDER BY id DESC LIMIT :window)
             ORDER BY {order} LIMIT :limit OFFSET :offset)
ORDER BY {order}

-- name: count_jobs
SELECT count(*) FROM jobs{where}

-- name: count_jobs_up_to
-- A count that stops at `up_to` (a windowed list's: "more than ..." past it).
SELECT count(*) FROM (SELECT 1 FROM jobs{where} LIMIT :up_to)

-- name: counts
SELECT status, count(*) FROM jobs GROUP BY status

-- name: counts_by_queue_live
-- PENDING and PROCESSING exactly, each from its partial index (one query naming both statuses
-- could use neither: it read every row, seconds at 10 million jobs).
SELECT queue, 'PENDING', count(*) FROM jobs WHERE status = 'PENDING' GROUP BY queue
UNION ALL
SELECT queue, 'PROCESSING', count(*) FROM jobs WHERE status = 'PROCESSING' GROUP BY queue

-- name: counts_by_queue_finished
-- Finished jobs among the newest `window` by finished_at (jobs_finished, read backwards): bounded
-- time at any table size (see base.STATS_FINISHED_WINDOW).
SELECT queue, status, count(*) FROM (
    SELECT queue, status FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT :window
) AS newest WHERE status IN {terminal} GROUP BY queue, status

-- name: finished_beyond
-- Are there more finished jobs than the window? (Index entries only, no rows read.)
SELECT 1 FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1 OFFSET :window

-- name: latest_jobs
-- The ops page's latest jobs in bounded time: ordered by updated_at among a few candidates only
-- (the latest_* branches below that the status filter needs). An index on updated_at
-- would do it exactly, but every worker write changes updated_at: one more index update per write.
SELECT {job_columns} FROM jobs WHERE id IN ({candidates})
ORDER BY updated_at DESC, id DESC LIMIT :limit

-- name: latest_processing
SELECT id FROM jobs WHERE status = 'PROCESSING'

-- name: latest_pending
SELECT id FROM (SELECT id FROM jobs WHERE status = 'PENDING' ORDER BY id DESC LIMIT :limit) AS p

-- name: latest_finished
-- The newest `window` finished jobs, read from jobs_finished alone (it carries the status).
SELECT id FROM (SELECT id, status FROM jobs WHERE finished_at IS NOT NULL
                ORDER BY finished_at DESC LIMIT :window) AS f{status}

-- name: pending_by_queue
-- PENDING jobs per queue, due (run_at reached) or scheduled (delayed, or waiting for a retry when
-- an attempt was made), with the oldest due one's run_at: what ops tells apart from a backlog.
SELECT queue, count(*) FILTER (WHERE run_at <= :now), min(run_at) FILTER (WHERE run_at <= :now),
       count(*) FILTER (WHERE run_at > :now AND attempts > 0)
FROM jobs WHERE status = 'PENDING' GROUP BY queue

-- name: expired_count
SELECT count(*) FROM jobs WHERE status = 'PROCESSING' AND (lease_expires_at IS NULL OR lease_expires_at < :now OR NOT lease_expires_at < 9e999)

-- name: completed_since
-- Completions are not events: counted from jobs_finished alone (it carries the status).
SELECT count(*) FROM jobs WHERE finished_at >= :since AND status = 'COMPLETED'

-- name: history_completed
SELECT CAST((finished_at - :since) / :bucket AS INTEGER) AS b, count(*) FROM jobs
WHERE finished_at >= :since AND status = 'COMPLETED' GROUP BY b

-- name: history_row_claims
-- Claims whose attempt no event records: completed jobs' (from jobs_finished alone, which carries
-- started_at) and running jobs' (their partial index).
SELECT CAST((started_at - :since) / :bucket AS INTEGER) AS b, count(*) FROM jobs
WHERE finished_at >= :since AND status = 'COMPLETED' AND started_at >= :since GROUP BY b
UNION ALL
SELECT CAST((started_at - :since) / :bucket AS INTEGER) AS b, count(*) FROM jobs
WHERE status = 'PROCESSING' AND started_at >= :since GROUP BY b

-- name: history_enqueued
-- Enqueues are not events (issue 13): the jobs made in the window, counted by created_at. A job made
-- since then is finished since then (jobs_finished from the window's start), running (its range of
-- the live index) or pending (history_pending), so the read follows the backlog and the window, not
-- the table.
SELECT CAST((created_at - :since) / :bucket AS INTEGER) AS b, count(*) FROM jobs
WHERE finished_at >= :since AND created_at >= :since GROUP BY b
UNION ALL
SELECT CAST((created_at - :since) / :bucket AS INTEGER) AS b, count(*) FROM jobs
WHERE status = 'PROCESSING' AND created_at >= :since GROUP BY b

-- name: history_pending
-- The PENDING jobs made in the window, by bucket, and one row (NULL, every PENDING job): the backlog
-- that history counts its depth back from. Two reads here, as before PostgreSQL's became one: SQLite
-- sorts to group, and one group by bucket over the whole backlog would sort all of an old backlog
-- where the window's part and a count on the live index do not.
SELECT CAST((created_at - :since) / :bucket AS INTEGER) AS b, count(*) FROM jobs
WHERE status = 'PENDING' AND created_at >= :since GROUP BY b
UNION ALL
SELECT NULL, count(*) FROM jobs WHERE status = 'PENDING'

-- name: history_durations
SELECT finished_at, run_at, started_at, finished_at FROM jobs
WHERE finished_at >= :since AND status IN ('COMPLETED', 'FAILED')
ORDER BY finished_at DESC LIMIT :limit
