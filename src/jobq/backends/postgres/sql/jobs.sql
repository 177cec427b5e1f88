-- Every statement that touches the jobs table (PostgreSQL). Named parameters are %(name)s;
-- {braces} are filled from the transition table at load time, or per call for lists.
--
-- Worker writes (complete, retry, fail, release, ack_cancel) keep the token of the lease that made
-- them: a write repeated after its commit's reply was lost is then recognised as already applied
-- (common.already_applied). Every fence still requires status PROCESSING, so a kept token grants
-- nothing; operator actions and rescues clear it. Rows are always locked in id order, so two
-- transactions cannot deadlock on each other.
--
-- A write of jobs named by id tests their status as `coalesce(status ..., false)` (the same
-- test: status is never NULL), which no index matches: with a plain `status = 'PROCESSING'` the
-- planner could take jobs_live (status, ..., id) and walk every running job's entry to find one,
-- and did while the statistics saw few running jobs: a completion cost the server 123-166 µs
-- with 500 jobs running and up to 1.2 ms with 5,000, against 61-80 µs by the primary key, which
-- reads one entry; a heartbeat ~2 ms with 2,000 running, 0.25 ms by the primary key
-- (tests/integration/test_postgres_fence_plans.py).

-- name: insert_job
-- A key conflicts only with a row that holds it (KEY_HELD_SQL, the unique index's predicate): a
-- finished 'active' key or a released 'ttl' key no longer blocks it.
INSERT INTO jobs (queue, task, payload, priority, run_at, max_attempts, timeout,
                  idempotency_key, key_scope, key_expires_at, concurrency_key, created_at, updated_at, policy)
VALUES (%(queue)s, %(task)s, %(payload)s, %(priority)s, %(run_at)s, %(max_attempts)s, %(timeout)s,
        %(key)s, %(key_scope)s, %(key_expires_at)s, %(concurrency_key)s, %(now)s, %(now)s, %(policy)s)
ON CONFLICT (idempotency_key) WHERE {key_held} DO NOTHING
RETURNING id

-- name: job_id_by_key
-- The job holding a key (at most one: the unique index).
SELECT id FROM jobs WHERE idempotency_key = %(key)s AND {key_held}

-- name: release_expired_key
-- A 'ttl' key whose time has passed is released by the enqueue that wants it, in its own
-- transaction: the row lock (PostgreSQL) or the write lock (SQLite) lets one producer release it
-- and take it anew; the others then conflict with the new holder.
UPDATE jobs SET key_scope = 'released'
WHERE idempotency_key = %(key)s AND {key_held} AND key_scope = 'ttl' AND key_expires_at <= %(now)s
RETURNING id

-- name: claim
-- SKIP LOCKED: rows another claimer is taking are passed over, never waited for; under READ
-- COMMITTED each locked row is re-checked, so a row claimed meanwhile is skipped, not taken twice.
-- FOR NO KEY UPDATE (what the UPDATE takes anyway) conflicts with other claims and with every
-- writer, but not with a waiter's FOR KEY SHARE read (waiters.sql: get_job_locked), so a job that
-- someone waits for is still claimed at once (FOR UPDATE passed over it while the read ran).
-- One queue (the common case) is an equality, so the planner walks the pending partial index in
-- claim order and stops at LIMIT; "= ANY(array)" made it sort every pending row on each claim
-- (about 6x slower with 20,000 waiting jobs).
-- Queues that are paused or limited (queue_controls) are passed over here: their jobs are claimed
-- by ops.claim_controlled, under their control row's lock (controls.sql).
-- A lease runs from when it is granted: {lock_wait} adds the time the statement waited before it
-- wrote the row, when that was long (SKIP LOCKED waits for no row, but complete_set_and_claim
-- first waits for the rows it completes; 0 otherwise, so a lease equals the caller's clock).
WITH picked AS (
    SELECT id FROM jobs
    WHERE status = 'PENDING' AND {queues} AND run_at <= %(now)s
      AND {uncontrolled}
    ORDER BY priority, run_at, id
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'PROCESSING', attempts = attempts + 1, rev = rev + 1,
    lease_owner = %(worker)s, lease_token = %(nonce)s || '-' || jobs.id::text,
    lease_expires_at = %(expires)s + {lock_wait}, started_at = %(now)s, updated_at = %(now)s,
    cancel_requested = false
FROM picked WHERE jobs.id = picked.id
RETURNING {jobs_job_columns}

-- name: uncontrolled_one
-- The claim's {uncontrolled} for one queue (its {queues} is `queue = %(q)s`): not correlated with
-- the row, so it runs once, before the scan, and a controlled queue's backlog is not walked.
NOT EXISTS (SELECT FROM queue_controls AS c WHERE c.queue = %(q)s AND (c.paused
    OR c.concurrency IS NOT NULL OR c.per_key IS NOT NULL OR c.rate_count IS NOT NULL))

-- name: uncontrolled_each
-- The claim's {uncontrolled} for several queues: the controlled queues are read once per
-- statement (not correlated: a hashed subplan), each pending row's queue then tested against
-- them. A look-up per row ran once for every pending row the claim's sort reads.
queue NOT IN (SELECT c.queue FROM queue_controls AS c WHERE c.paused
    OR c.concurrency IS NOT NULL OR c.per_key IS NOT NULL OR c.rate_count IS NOT NULL)

-- name: claim_flagged
-- The claim above, plus whether one of the queues asked for is limited and may have room (then the
-- worker runs ops.claim_controlled too): the flag first, then the job columns; one row with NULL
-- job columns when nothing was claimed. No event rows (history derives the claim from the row).
-- A paused queue, a queue whose concurrency limit is taken and one whose rate admits no claim
-- before a later time are left out here, without a lock: claims of a full queue used to queue up
-- on its control row only to find no room (6 claimers of a queue limited to 4: p50 8 ms). This
-- read is only a hint: a slot freed after its snapshot is found at the worker's next claim or
-- poll, as by a claim that took the lock just before the slot was freed; the limits themselves
-- are enforced under the lock (claim_controlled), which counts again.
-- The flag is 0 (none), 1 (claim_controlled's general path) or 2: one queue with room, limited by
-- its concurrency alone (the row passed the room test, so its concurrency is set); a worker of
-- that one queue then claims with claim_concurrency_locked, one round trip.
WITH claimed AS ({sql:claim})
SELECT flag.controlled, claimed.* FROM ({sql:claim_flag}) AS flag LEFT JOIN claimed ON true

-- name: claim_flag
-- claim_flagged's flag, embedded there and in complete_set_and_claim. {freed}: the running jobs of
-- the queue that the statement itself finishes, which its snapshot still sees running (0 where it
-- finishes none); without it a worker finishing a job of a full queue would find no room for the
-- next one.
SELECT CASE WHEN count(*) = 0 THEN 0
            WHEN count(*) = 1 AND bool_and(c.per_key IS NULL AND c.rate_count IS NULL) THEN 2
            ELSE 1 END AS controlled
FROM queue_controls AS c
WHERE {queues} AND NOT c.paused
  AND (c.concurrency IS NOT NULL OR c.per_key IS NOT NULL OR c.rate_count IS NOT NULL)
  AND (c.concurrency IS NULL OR c.concurrency > (
      SELECT count(*) FROM jobs AS r WHERE r.status = 'PROCESSING' AND r.queue = c.queue) - {freed})
  -- A next admission further ahead than one step (and the slack other hosts' clocks take,
  -- jobq.flow.RATE_ADMISSION_SLACK_SECONDS) was written by a clock since set back:
  -- claim_controlled takes it as one step from now and writes that (jobq.flow.next_admission).
  AND (c.rate_tat IS NULL OR c.rate_tat <= %(now)s OR c.rate_tat > %(now)s + c.rate_window / c.rate_count + {rate_slack})

-- name: claimed_by_nonce
-- A claim whose COMMIT reply was lost: what did it hand out? Tokens start with the claim's nonce.
SELECT {job_columns} FROM jobs
WHERE status = 'PROCESSING' AND lease_owner = %(worker)s AND starts_with(lease_token, %(nonce)s)

-- name: lease_state
SELECT status, lease_token FROM jobs WHERE id = %(id)s

-- name: lock_jobs
-- Heartbeats lock their rows first and read the clock after: an UPDATE that waits for a row lock
-- (an operator's or a rescuer's FOR UPDATE) evaluates its SET before the wait, so the lease would
-- run from before it. One more round trip, once per heartbeat interval.
SELECT id FROM jobs WHERE {ids} ORDER BY id FOR UPDATE

-- name: lock_to_finish
-- Embedded ({sql:NAME}) in the WHERE of every worker write that can finish a job (complete, fail,
-- ack_cancel): the row is locked FOR UPDATE before the UPDATE, which alone would take only FOR NO
-- KEY UPDATE (no key column changes). FOR UPDATE is the lock a waiter's FOR KEY SHARE read waits
-- for (waiters.sql: get_job_locked); the UPDATE then keeps it to commit (PostgreSQL keeps the
-- stronger of a transaction's own locks on the row). Costs an index probe, and no WAL: the BEFORE
-- UPDATE OF status trigger (jobs_external_status) already locks the row before each of these
-- UPDATEs (pg_waldump: one LOCK record per finish before and after, now with KEYS_UPDATED).
id = (SELECT id FROM jobs WHERE id = %(id)s FOR UPDATE)

-- name: heartbeat
UPDATE jobs SET lease_expires_at = %(expires)s, updated_at = %(now)s
WHERE id = %(id)s AND coalesce(status = 'PROCESSING', false) AND lease_token = %(token)s
RETURNING cancel_requested

-- name: complete
UPDATE jobs SET status = 'COMPLETED', rev = rev + 1, finished_at = %(now)s, updated_at = %(now)s,
    result = %(result)s, last_error = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND coalesce(status IN {from_complete}, false)
    AND {sql:lock_to_finish}
RETURNING id, lease_token, attempts

-- name: retry
-- Not a job whose cancel an operator requested: ops.fail (and retry_one) end that one with ack_cancel.
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = %(now)s, run_at = %(retry_at)s,
    last_error = %(error)s, lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND coalesce(status IN {from_fail}, false)
    AND cancel_requested IS NOT TRUE
RETURNING attempts, started_at, queue

-- name: fail
UPDATE jobs SET status = 'FAILED', rev = rev + 1, updated_at = %(now)s, finished_at = %(now)s,
    last_error = %(error)s, lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND coalesce(status IN {from_fail}, false)
    AND {sql:lock_to_finish}
RETURNING attempts, started_at

-- name: release
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = %(now)s, run_at = %(now)s,
    attempts = greatest(0, attempts - 1), lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND coalesce(status = 'PROCESSING', false)
    AND cancel_requested IS NOT TRUE
RETURNING attempts, queue, started_at

-- name: ack_cancel
UPDATE jobs SET status = 'CANCELLED', rev = rev + 1, updated_at = %(now)s, finished_at = %(now)s,
    lease_expires_at = NULL
WHERE id = %(id)s AND lease_token = %(token)s AND coalesce(status = 'PROCESSING', false) AND cancel_requested
    AND {sql:lock_to_finish}
RETURNING attempts, queue, started_at

-- name: rescue_probe
SELECT id FROM jobs
WHERE status IN {from_rescue} AND (lease_expires_at IS NULL OR lease_expires_at < %(cutoff)s OR NOT lease_expires_at < 'Infinity' OR {gone})
LIMIT 1

-- name: expired
-- A lease counts only while it is a time: NULL, a time past, or one that is no number (an
-- infinity or NaN written by hand: `NOT x < 'Infinity'`) is expired, or such a job would
-- never be rescued while its worker lives (on PostgreSQL, never: leases alone tell who is gone).
-- SKIP LOCKED: a job whose worker is completing it right now is left alone (its row is locked);
-- if the lease really expired the next rescue pass takes it.
SELECT id, lease_owner, lease_token, attempts, max_attempts, cancel_requested, started_at, task, policy FROM jobs
WHERE status IN {from_rescue} AND (lease_expires_at IS NULL OR lease_expires_at < %(cutoff)s OR NOT lease_expires_at < 'Infinity' OR {gone})
ORDER BY id
LIMIT 1000
FOR UPDATE SKIP LOCKED

-- name: rescue
-- Conditional on the token the rescuer read: a completion that landed meanwhile is never
-- overwritten (river#1302). %(status)s is cast where it is read: its assignment alone would make
-- it the column's type (a domain, jobq_status) and its comparison text, two types for one value.
UPDATE jobs SET status = %(status)s::text, rev = rev + 1, updated_at = %(now)s, run_at = %(run_at)s,
    last_error = %(error)s,
    finished_at = CASE WHEN %(status)s::text = 'PENDING' THEN NULL ELSE %(now)s END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND coalesce(status = 'PROCESSING', false) AND lease_token IS NOT DISTINCT FROM %(token)s
RETURNING id

-- name: restamp_ahead
-- Jobs waiting whose row was written ahead of now, by a clock since set back, made as if written
-- now (see SQLite's). jobq's workers call it on SQLite only: here rows are stamped by the server's
-- clock (Queue.clock_offset), which a host's step does not move; kept for the one contract. Rows
-- are locked in id order, as every transaction here locks them (no deadlock with another).
UPDATE jobs SET run_at = run_at - (updated_at - %(now)s), updated_at = %(now)s
WHERE id IN (
    SELECT id FROM jobs
    WHERE status = 'PENDING' AND updated_at > %(ahead)s AND updated_at <= %(limit)s AND run_at < %(inf)s
    ORDER BY id FOR UPDATE
)
RETURNING id, queue

-- name: newest_write
-- When the newest job was last written (one step along the primary key): ahead of the clock, the
-- clock was set back since (the worker's first rescue, Queue.restamp_ahead).
SELECT updated_at FROM jobs ORDER BY id DESC LIMIT 1

-- name: next_due_at
SELECT min(run_at) FROM jobs WHERE status = 'PENDING' AND {queues}

-- name: targets
-- One chunk of an operator action's jobs (OPERATOR_CHUNK_JOBS), in id order from a cursor, locked
-- in that order until the chunk commits.
SELECT id, status FROM jobs{where} ORDER BY id LIMIT %(limit)s FOR UPDATE

-- name: resubmit_set
-- One chunk's jobs of one status resubmitted (ops.operator.resubmit), locked by its targets read;
-- RETURNING names those whose key let them (a refused one is read again, one by one).
UPDATE jobs SET status = 'PENDING', rev = rev + 1, updated_at = %(now)s, run_at = %(now)s, attempts = 0,
    run = run + 1, started_at = NULL, finished_at = NULL, result = NULL, cancel_requested = false,
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE id = ANY(%(ids)s::bigint[]) AND status = %(status)s
    -- An 'active' key taken by a newer job since this one finished stays with that job: the
    -- resubmit is refused (the unique index would refuse it anyway, as it refuses a hand edit).
    AND NOT (key_scope = 'active' AND EXISTS (
        SELECT 1 FROM jobs AS holder
        WHERE holder.idempotency_key = jobs.idempotency_key AND holder.id <> jobs.id AND {key_held}))
RETURNING id, queue

-- name: attempts_of_jobs
SELECT id, status, attempts, started_at, lease_owner, lease_token, finished_at, created_at FROM jobs
WHERE id = ANY(%(ids)s::bigint[])

-- name: job_key
SELECT idempotency_key FROM jobs WHERE id = %(id)s

-- name: cancel_set
-- One chunk's jobs of one status cancelled (ops.operator.cancel), locked by its targets read.
UPDATE jobs SET status = 'CANCELLED', rev = rev + 1, updated_at = %(now)s, finished_at = %(now)s,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = ANY(%(ids)s::bigint[]) AND coalesce(status = %(status)s, false)

-- name: queues_of_jobs
-- The queue of each job of a chunk an operator moves (ops.operator.move), locked by its targets read.
SELECT id, queue FROM jobs WHERE id = ANY(%(ids)s::bigint[])

-- name: move_set
-- One chunk's jobs of one status moved to queue %(to)s (ops.operator.move), locked by its targets
-- read. No status changes; rev still moves (a jobq write).
UPDATE jobs SET queue = %(to)s, rev = rev + 1, updated_at = %(now)s
WHERE id = ANY(%(ids)s::bigint[]) AND coalesce(status = %(status)s, false)

-- name: request_cancel_set
UPDATE jobs SET cancel_requested = true, updated_at = %(now)s
WHERE id = ANY(%(ids)s::bigint[]) AND coalesce(status = 'PROCESSING', false)

-- name: purge_jobs
-- One chunk of a purge (PURGE_CHUNK_JOBS): the jobs that finished first, along jobs_finished. One
-- statement: a job resubmitted meanwhile is neither deleted (the DELETE checks its row again) nor
-- left without events.
WITH gone AS (
    DELETE FROM jobs
    WHERE id IN (SELECT id FROM jobs WHERE {statuses} AND finished_at < %(before)s
                 ORDER BY finished_at LIMIT %(limit)s)
      AND {statuses} AND finished_at < %(before)s
    RETURNING id
), gone_events AS (
    DELETE FROM job_events WHERE job_id IN (SELECT id FROM gone)
)
SELECT id FROM gone

-- name: attempt_of_job
-- The latest attempt as the row records it, and when the job was made: the enqueued/claimed/completed
-- entries of a job's history that no event stores are derived from it (common.history_of).
SELECT id, status, attempts, started_at, lease_owner, lease_token, finished_at, created_at FROM jobs WHERE id = %(id)s

-- name: recent_attempts
-- The rows whose latest attempt can be among the newest history entries: the running jobs (their
-- partial index), the newest `limit` finished ones (jobs_finished, read backwards) and the newest
-- `limit` made (the primary key, read backwards: their `enqueued` entries).
SELECT id, status, attempts, started_at, lease_owner, lease_token, finished_at, created_at FROM jobs
WHERE id IN (SELECT id FROM (SELECT id FROM jobs WHERE status = 'PROCESSING'
                             ORDER BY started_at DESC LIMIT %(limit)s) AS r
             UNION ALL
             SELECT id FROM (SELECT id FROM jobs WHERE finished_at IS NOT NULL
                             ORDER BY finished_at DESC LIMIT %(limit)s) AS f
             UNION ALL
             SELECT id FROM (SELECT id FROM jobs ORDER BY id DESC LIMIT %(limit)s) AS m)

-- name: get_job
SELECT {job_columns} FROM jobs WHERE id = %(id)s

-- name: list_jobs
SELECT {job_columns} FROM jobs{where} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s

-- name: list_jobs_window
-- A page of the newest `window` matching jobs (Page.window), then sorted: the subquery's LIMIT keeps
-- the planner from joining its ids back against the whole table (`id IN (...)` was planned as a
-- scan of every job with a hash of the window's ids).
SELECT {job_columns} FROM (SELECT {job_columns} FROM jobs{where} ORDER BY id DESC LIMIT %(window)s) AS newest
ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s

-- name: count_jobs
SELECT count(*) FROM jobs{where}

-- name: count_jobs_up_to
-- A count that stops at `up_to` (a windowed list's: "more than ..." past it).
SELECT count(*) FROM (SELECT 1 FROM jobs{where} LIMIT %(up_to)s) AS matched

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
    SELECT queue, status FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT %(window)s
) AS newest WHERE status IN {terminal} GROUP BY queue, status

-- name: finished_beyond
-- Are there more finished jobs than the window? (Index entries only, no rows read.)
SELECT 1 FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1 OFFSET %(window)s

-- name: latest_jobs
-- The ops page's latest jobs in bounded time: ordered by updated_at among a few candidates only
-- (the latest_* branches below that the status filter needs). An index on updated_at
-- would do it exactly, but every worker write changes updated_at: one more index update per write.
SELECT {job_columns} FROM jobs WHERE id IN ({candidates})
ORDER BY updated_at DESC, id DESC LIMIT %(limit)s

-- name: latest_processing
SELECT id FROM jobs WHERE status = 'PROCESSING'

-- name: latest_pending
SELECT id FROM (SELECT id FROM jobs WHERE status = 'PENDING' ORDER BY id DESC LIMIT %(limit)s) AS p

-- name: latest_finished
-- The newest `window` finished jobs, read from jobs_finished alone (it carries the status).
SELECT id FROM (SELECT id, status FROM jobs WHERE finished_at IS NOT NULL
                ORDER BY finished_at DESC LIMIT %(window)s) AS f{status}

-- name: pending_by_queue
-- PENDING jobs per queue, due (run_at reached) or scheduled (delayed, or waiting for a retry when
-- an attempt was made), with the oldest due one's run_at: what ops tells apart from a backlog.
SELECT queue, count(*) FILTER (WHERE run_at <= %(now)s), min(run_at) FILTER (WHERE run_at <= %(now)s),
       count(*) FILTER (WHERE run_at > %(now)s AND attempts > 0)
FROM jobs WHERE status = 'PENDING' GROUP BY queue

-- name: expired_count
SELECT count(*) FROM jobs WHERE status = 'PROCESSING' AND (lease_expires_at IS NULL OR lease_expires_at < %(now)s OR NOT lease_expires_at < 'Infinity')

-- name: completed_since
-- Completions are not events: counted from jobs_finished alone (it carries the status).
SELECT count(*) FROM jobs WHERE finished_at >= %(since)s AND status = 'COMPLETED'

-- name: history_completed
SELECT trunc((finished_at - %(since)s) / %(bucket)s)::bigint AS b, count(*) FROM jobs
WHERE finished_at >= %(since)s AND finished_at < 'Infinity' AND status = 'COMPLETED' GROUP BY b

-- name: history_row_claims
-- Claims whose attempt no event records: completed jobs' (from jobs_finished alone, which carries
-- started_at) and running jobs' (their partial index).
SELECT trunc((started_at - %(since)s) / %(bucket)s)::bigint AS b, count(*) FROM jobs
WHERE finished_at >= %(since)s AND status = 'COMPLETED' AND started_at >= %(since)s AND started_at < 'Infinity' GROUP BY b
UNION ALL
SELECT trunc((started_at - %(since)s) / %(bucket)s)::bigint AS b, count(*) FROM jobs
WHERE status = 'PROCESSING' AND started_at >= %(since)s AND started_at < 'Infinity' GROUP BY b

-- name: history_enqueued
-- Enqueues are not events (issue 13): the jobs made in the window, counted by created_at. A job made
-- since then is finished since then (jobs_finished from the window's start), running (its range of
-- the live index) or pending (history_pending), so the read follows the backlog and the window, not
-- the table. Every history read bounds its times below 'Infinity' too: a time written by hand as NaN
-- or Infinity (PostgreSQL sorts NaN above Infinity) is no time a chart can draw, and trunc()::bigint
-- of it failed the whole read ("bigint out of range").
SELECT trunc((created_at - %(since)s) / %(bucket)s)::bigint AS b, count(*) FROM jobs
WHERE finished_at >= %(since)s AND created_at >= %(since)s AND created_at < 'Infinity' GROUP BY b
UNION ALL
SELECT trunc((created_at - %(since)s) / %(bucket)s)::bigint AS b, count(*) FROM jobs
WHERE status = 'PROCESSING' AND created_at >= %(since)s AND created_at < 'Infinity' GROUP BY b

-- name: history_pending
-- The PENDING jobs made in the window, by bucket, and one row (NULL, every PENDING job): the backlog
-- that history counts its depth back from. One pass over the backlog (hashed by bucket), where a
-- count of it and the window's part of it were two reads (issue 13: 8 ms of the ops page's history
-- read with 100,000 pending jobs at 10,000,000 stored).
WITH pending AS (
    SELECT CASE WHEN created_at >= %(since)s AND created_at < 'Infinity' THEN trunc((created_at - %(since)s) / %(bucket)s)::bigint END AS b,
           count(*) AS n
    FROM jobs WHERE status = 'PENDING' GROUP BY b
)
SELECT b, n FROM pending WHERE b IS NOT NULL
UNION ALL
SELECT NULL, coalesce(sum(n), 0)::bigint FROM pending

-- name: history_durations
SELECT finished_at, run_at, started_at, finished_at FROM jobs
WHERE finished_at >= %(since)s AND status IN ('COMPLETED', 'FAILED')
ORDER BY finished_at DESC LIMIT %(limit)s

-- One statement per call: the per-job API's writes with their events (and wake-ups) in data-modifying
-- CTEs, each sent alone in autocommit, so a call costs one round trip instead of BEGIN, the
-- statements and COMMIT. {sql:NAME} is the named statement above, so the fences and guards exist
-- once. A statement that was sent but whose reply was lost committed or not as a whole: the backend
-- settles it like a lost COMMIT (see PostgresBackend._run).

-- name: enqueue_with_events
-- Jobs without an idempotency key (nothing can conflict): every job of the call in one INSERT (no
-- `enqueued` events: the rows' created_at is that entry, issue 13), and NOTIFY for the queues in %(wake)s (delivered at commit). The jobs come as
-- one JSON array of [queue, task, payload, priority, run_at, max_attempts, timeout, policy] rows: parsed
-- by the server, it costs a fraction of binding seven arrays (psycopg dumps arrays in Python), and
-- 1,000 jobs went in ~3x faster than with arrays. Read as jsonb, not json: json's ->> parses the
-- element's text again for each of the eight fields (5.9 ms of server time per 1,000 jobs, against
-- 0.7 ms parsed once into jsonb; the strings come out the same, the numbers as the same values).
-- Ids come from one sequence in the order of the rows (ORDER BY n), so the caller sorts them back.
WITH ins AS (
    INSERT INTO jobs (queue, task, payload, priority, run_at, max_attempts, timeout, created_at, updated_at, policy)
    SELECT j.v ->> 0, j.v ->> 1, j.v ->> 2, (j.v ->> 3)::integer, (j.v ->> 4)::double precision,
           (j.v ->> 5)::integer, (j.v ->> 6)::double precision, %(now)s, %(now)s, j.v ->> 7
    FROM jsonb_array_elements(%(jobs)s::jsonb) WITH ORDINALITY AS j(v, n)
    ORDER BY j.n
    RETURNING id
), wake AS (
    SELECT count(pg_notify('{wake_channel}', q)) AS n FROM json_array_elements_text(%(wake)s::json) AS q
)
SELECT ins.id FROM ins, wake

-- name: enqueue_uniform
-- enqueue_with_events for a batch whose jobs differ only in their payloads (what enqueue_many
-- makes): the shared columns bound once, the payloads one JSON array of strings. The server
-- parses one string per job, not a jsonb object of eight fields, and the client encodes the
-- same (issue 13: 1,000 jobs ~21 ms against ~30, client CPU 7.8 ms against 13). ORDER BY j.n:
-- ids from one sequence in the order of the payloads, as enqueue_with_events.
WITH ins AS (
    INSERT INTO jobs (queue, task, payload, priority, run_at, max_attempts, timeout, created_at, updated_at, policy)
    SELECT %(queue)s::text, %(task)s::text, j.p, %(priority)s::integer, %(run_at)s::double precision,
           %(max_attempts)s::integer, %(timeout)s::double precision, %(now)s, %(now)s, %(policy)s::text
    FROM json_array_elements_text(%(payloads)s::json) WITH ORDINALITY AS j(p, n)
    ORDER BY j.n
    RETURNING id
), wake AS (
    SELECT count(pg_notify('{wake_channel}', %(queue)s::text)) AS n WHERE %(due)s::boolean
)
SELECT ins.id FROM ins, wake

-- name: enqueue_one
-- One job without a key (enqueue's usual call), in one statement sent alone: the row and, when it
-- is due, the wake-up (delivered at commit). Plain parameters rather than enqueue_with_events'
-- JSON array: the server parses no JSON and sorts no ordinality, ~100 us less a call here and
-- 14 us less client CPU (issue 13). SELECT ins.id FROM ins, wake: the same tail as the batch's.
WITH ins AS (
    INSERT INTO jobs (queue, task, payload, priority, run_at, max_attempts, timeout, created_at, updated_at, policy)
    VALUES (%(queue)s::text, %(task)s::text, %(payload)s::text, %(priority)s::integer, %(run_at)s::double precision,
            %(max_attempts)s::integer, %(timeout)s::double precision, %(now)s, %(now)s, %(policy)s::text)
    RETURNING id
), wake AS (
    SELECT count(pg_notify('{wake_channel}', %(queue)s::text)) AS n FROM ins WHERE %(due)s::boolean
)
SELECT ins.id FROM ins, wake

-- name: enqueue_keyed
-- One job with an idempotency key, in one statement (sent alone): release the key if its 'ttl'
-- holder expired, insert unless a holder conflicts (the unique index decides, never a read before
-- the write; the row's created_at is its `enqueued` entry) and wake the queue for a new due job; else name the holder.
-- Returns (id, true) for a new job, (id, false) for the holder, or no row: the holder committed
-- after this statement's snapshot (the INSERT waited for it and conflicted, but the fallback
-- SELECT reads the snapshot), or let go meanwhile; the caller then sends the statement again,
-- with a new snapshot. A holder that aborted lets the INSERT through (it waited for the abort).
-- `after_release` makes the INSERT read `released` to its end first, so an expired holder is
-- released (its old row version deleted by this transaction: no conflict) before the insert.
-- The fallback never names an expired 'ttl' holder: the snapshot still shows the one released
-- here (or by a concurrent producer) as holding.
WITH released AS (
    {sql:release_expired_key}
), ins AS (
    INSERT INTO jobs (queue, task, payload, priority, run_at, max_attempts, timeout,
                      idempotency_key, key_scope, key_expires_at, created_at, updated_at, policy)
    SELECT %(queue)s::text, %(task)s::text, %(payload)s::text, %(priority)s::integer,
           %(run_at)s::double precision, %(max_attempts)s::integer, %(timeout)s::double precision,
           %(key)s::text, %(key_scope)s::text, %(key_expires_at)s::double precision, %(now)s, %(now)s,
           %(policy)s::text
    FROM (SELECT count(*) FROM released) AS after_release
    ON CONFLICT (idempotency_key) WHERE {key_held} DO NOTHING
    RETURNING id
), wake AS (
    SELECT count(pg_notify('{wake_channel}', %(queue)s::text)) AS n FROM ins WHERE %(due)s::boolean
)
SELECT ins.id, true FROM ins, wake
UNION ALL
SELECT id, false FROM jobs
WHERE idempotency_key = %(key)s AND {key_held} AND (key_scope <> 'ttl' OR key_expires_at > %(now)s)
  AND NOT EXISTS (SELECT FROM ins)

-- name: refused_event
-- Pieces of the one-statement worker writes below, embedded with {sql:NAME}: a refused write's
-- `stale_write_refused` event (the statement adds its WHERE), and the wake-up of whoever waits
-- for the job to finish (Queue.wait), from its `done` CTE.
INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
SELECT %(id)s::bigint, %(now)s::double precision, 'stale_write_refused', %(actor)s::text, NULL,
       %(refused)s::text

-- name: notify_finished
-- Only when someone waits for the job (job_waiters; see the migration that made it), and the
-- check for it only while anyone waits at all ({waiters_gate}, waiters.sql).
SELECT count(CASE WHEN {waiters_gate} THEN {notify_waited}('{done_channel}', %(id)s::bigint) ELSE 0 END) AS n FROM done

-- name: heartbeat_one
-- The row is locked first (the CTE) and the lease then extended by the time the statement waited
-- for that lock (an operator's or a rescuer's FOR UPDATE): the client read its clock before
-- sending, and a lease must run from when it is written. {lock_wait} is that wait in seconds, 0
-- under LOCK_WAIT_COUNTED_SECONDS, so that a lease equals the caller's clock exactly in the usual
-- case (the contract suite drives a fake clock).
-- A lease whose own completion committed while this waited for the lock (a handler completing in
-- its application's transaction) is over, not stale: no refusal is recorded. FOR UPDATE returns
-- the row as that commit left it, where a plain read would see the statement's older snapshot.
WITH locked AS MATERIALIZED (
    SELECT id, status, lease_token FROM jobs WHERE id = %(id)s FOR UPDATE
), beat AS (
    UPDATE jobs SET
        lease_expires_at = %(expires)s + {lock_wait}, updated_at = %(now)s + {lock_wait}
    FROM locked
    WHERE jobs.id = locked.id AND coalesce(jobs.status = 'PROCESSING', false) AND jobs.lease_token = %(token)s
    RETURNING jobs.cancel_requested
), refused AS (
    {sql:refused_event}
    WHERE NOT EXISTS (SELECT FROM beat)
      AND NOT EXISTS (SELECT FROM locked WHERE status = 'COMPLETED' AND lease_token = %(token)s)
)
SELECT cancel_requested FROM beat

-- name: complete_one
-- No `completed` event: the row records the completion (common.history_of). `finished` wakes
-- whoever waits for the job (Queue.wait), in the same statement.
WITH done AS ({sql:complete}), refused AS (
    {sql:refused_event}
    WHERE NOT EXISTS (SELECT FROM done)
), finished AS (
    {sql:notify_finished}
)
SELECT attempts FROM done, finished

-- name: complete_set_and_claim
-- Completions and the next claim of a worker (Queue.complete_many_and_claim) in one statement:
-- one round trip and one commit, against three round trips for the same steps as a transaction.
-- %(items)s is a JSON array of [id, token, result, actor, refusal detail]. Each row is fenced as
-- `complete` fences it and locked FOR UPDATE in id order first (lock_to_finish's lock, for a set:
-- the order keeps two writers from deadlocking); the rows whose lease did not hold get their
-- `stale_write_refused` event, the finished ones wake whoever waits for them. The rows are found
-- by `id = ANY (ARRAY(...))`, an index scan of the primary key: with `IN (SELECT ...)` the generic
-- plan joined a scan of the whole table (or of every running job) instead, and with a plain status
-- test it walked jobs_live's PROCESSING range once per id (the fence's status test is wrapped in
-- coalesce so that it does not match that index). At 20,000 stored jobs and 100 completions:
-- 1.3 ms for `done`, against 6.4 and 5.5 ms (EXPLAIN ANALYZE). The claim and its
-- flag are claim_flagged's: the completed rows are PROCESSING in the statement's snapshot, never
-- PENDING, so the claim cannot take one of them; the flag counts them as freed ({freed}). The
-- claim waits for the completions' row locks before it looks at a job ({uncontrolled} has
-- claim_after_locks), so a lease it grants counts that wait ({lock_wait}).
-- Returns claim_flagged's rows with the ids of the completed jobs as the second column.
WITH items AS MATERIALIZED (
    SELECT (e ->> 0)::bigint AS id, e ->> 1 AS token, e ->> 2 AS result, e ->> 3 AS actor, e ->> 4 AS refused
    FROM json_array_elements(%(items)s::json) AS e
), locked AS MATERIALIZED (
    SELECT id FROM jobs WHERE id = ANY (ARRAY(SELECT id FROM items)) ORDER BY id FOR UPDATE
), done AS (
    UPDATE jobs SET status = 'COMPLETED', rev = rev + 1, finished_at = %(now)s, updated_at = %(now)s,
        result = items.result, last_error = NULL, lease_expires_at = NULL
    FROM items
    WHERE jobs.id = ANY (ARRAY(SELECT id FROM locked)) AND jobs.id = items.id
      AND jobs.lease_token = items.token AND coalesce(jobs.status IN {from_complete}, false)
    RETURNING jobs.id, jobs.queue
), refused AS (
    INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
    SELECT items.id, %(now)s::double precision, 'stale_write_refused', items.actor, NULL, items.refused
    FROM items WHERE NOT EXISTS (SELECT FROM done WHERE done.id = items.id)
), finished AS (
    SELECT count(CASE WHEN {waiters_gate} THEN {notify_waited}('{done_channel}', done.id) ELSE 0 END) AS n FROM done
), claimed AS ({sql:claim})
SELECT flag.controlled, (SELECT array_agg(done.id) FROM done, finished) AS done, claimed.*
FROM ({sql:claim_flag}) AS flag LEFT JOIN claimed ON true

-- name: completions_freed
-- complete_set_and_claim's {freed} in claim_flag: the running jobs of the control row's queue that
-- the statement completes.
(SELECT count(*) FROM done AS f WHERE f.queue = c.queue)

-- name: claim_after_locks
-- complete_set_and_claim's claim has this in its {uncontrolled} too: an uncorrelated subquery
-- runs once, before the first pending row is looked at, so every completed row is locked (and any
-- wait for another holder over) before a job is claimed and its lease written.
(SELECT count(*) FROM locked) >= 0

-- name: retry_one
-- The event carries the attempt's claim time (common.attempt_detail): the row's moves on. A
-- retry due at once (`due`) wakes the queue's idle workers, as a release does. A job whose cancel
-- an operator requested ends CANCELLED instead (ops.fail): `cancelled` and `done` update the row
-- under disjoint conditions on the same snapshot (cancel_requested, IS NOT TRUE), so one at most.
-- Returns the attempt and the status the job was left in; no row: refused.
WITH cancelled AS ({sql:ack_cancel}), done AS ({sql:retry}), recorded AS (
    INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
    SELECT %(id)s::bigint, %(now)s, 'retry_scheduled', %(actor)s::text, attempts,
           (%(detail)s::jsonb || jsonb_build_object('claimed_at', started_at))::text FROM done
    UNION ALL
    SELECT %(id)s::bigint, %(now)s, 'cancelled', %(actor)s::text, attempts,
           (%(cancel_detail)s::jsonb || jsonb_build_object('claimed_at', started_at))::text FROM cancelled
), refused AS (
    {sql:refused_event}
    WHERE NOT EXISTS (SELECT FROM done) AND NOT EXISTS (SELECT FROM cancelled)
), wake AS (
    SELECT count(pg_notify('{wake_channel}', queue)) AS n FROM done WHERE %(due)s::boolean
), finished AS (
    SELECT count(CASE WHEN {waiters_gate} THEN {notify_waited}('{done_channel}', %(id)s::bigint) ELSE 0 END) AS n FROM cancelled
)
SELECT attempts, 'PENDING' FROM done, wake
UNION ALL
SELECT attempts, 'CANCELLED' FROM cancelled, finished

-- name: fail_one
-- `finished` wakes whoever waits for the job (Queue.wait), in the same statement.
WITH done AS ({sql:fail}), recorded AS (
    INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
    SELECT %(id)s::bigint, %(now)s, 'failed', %(actor)s::text, attempts,
           (%(detail)s::jsonb || jsonb_build_object('claimed_at', started_at))::text FROM done
), refused AS (
    {sql:refused_event}
    WHERE NOT EXISTS (SELECT FROM done)
), finished AS (
    {sql:notify_finished}
)
SELECT attempts, 'FAILED' FROM done, finished
