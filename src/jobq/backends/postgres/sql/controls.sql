-- Flow control (docs/flow-control.md): the queue_controls table, its history, and the claim of
-- the queues it controls (statements over jobs that only that claim and its reads use). Named
-- parameters are %(name)s; {braces} are filled per call (see statements.py).
--
-- A queue is controlled while it is paused or has a limit. The lock-free claim (jobs.sql: claim)
-- passes over controlled queues and says whether the worker asked for any; only then does the
-- worker run ops.claim_controlled, which locks the queues' control rows (FOR UPDATE, in queue
-- order) before it counts what runs: two claims under READ COMMITTED could otherwise each count
-- N-1 running jobs and both take one. Each statement after the lock reads a fresh snapshot, so
-- the counts see every claim that committed before the lock was granted.

-- name: controls_active
SELECT queue, paused, concurrency, per_key, rate_count, rate_window, rate_tat FROM queue_controls
WHERE {queues} AND (paused OR concurrency IS NOT NULL OR per_key IS NOT NULL OR rate_count IS NOT NULL)
ORDER BY queue

-- name: lock_controls
-- Held until the claim commits: claims of a limited queue run one at a time (see above). A claim
-- waits for a row another claim holds (milliseconds): with SKIP LOCKED instead, the claims that
-- found every row taken came back empty, their workers saw due jobs and claimed again at once,
-- and 12 workers of three limited queues spent the machine's CPU on empty claims. Rows are locked
-- in queue order, so two claims cannot deadlock on them; they come back as the last commit left
-- them (READ COMMITTED re-reads a row it waited for).
SELECT queue, paused, concurrency, per_key, rate_count, rate_window, rate_tat FROM queue_controls
WHERE {queues} AND (paused OR concurrency IS NOT NULL OR per_key IS NOT NULL OR rate_count IS NOT NULL)
ORDER BY queue
FOR UPDATE

-- name: claim_limited
-- The claim of one locked queue without a per-key limit, in one statement: the limit is read from
-- the queue's row and what runs is counted (a fresh snapshot, taken after the lock was granted,
-- so every claim that committed before is seen), at most room jobs (and no more than the
-- concurrency limit leaves) are picked in claim order, and leased as the claim in jobs.sql leases
-- them (no event rows, as there). %(alone)s: the caller knows only that the queue was limited by
-- its concurrency alone when the lock-free claim read it (claim_concurrency_locked): a row that is
-- not so any more (paused, or given a per-key or rate limit since) gives nothing. Alone, the
-- caller read its clock before the lock was granted: a lease adds the wait when it was long
-- ({txn_wait}), so that it runs from when it is granted (ops.claim_controlled's own path reads
-- the clock after the lock).
WITH ctl AS (
    SELECT concurrency FROM queue_controls
    WHERE queue = %(queue)s
      AND (NOT %(alone)s::boolean
           OR (NOT paused AND concurrency IS NOT NULL AND per_key IS NULL AND rate_count IS NULL))
), room AS (
    SELECT CASE WHEN ctl.concurrency IS NULL THEN %(room)s::integer
                ELSE least(%(room)s::integer, ctl.concurrency - (
                    SELECT count(*) FROM jobs WHERE status = 'PROCESSING' AND queue = %(queue)s)::integer)
           END AS n
    FROM ctl
), picked AS (
    SELECT id FROM jobs
    WHERE status = 'PENDING' AND queue = %(queue)s AND run_at <= %(now)s
    ORDER BY priority, run_at, id
    LIMIT coalesce((SELECT greatest(n, 0) FROM room), 0)
    FOR NO KEY UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs SET status = 'PROCESSING', attempts = attempts + 1, rev = rev + 1,
        lease_owner = %(worker)s, lease_token = %(nonce)s || '-' || jobs.id::text,
        lease_expires_at = %(expires)s + CASE WHEN %(alone)s::boolean THEN {txn_wait} ELSE 0 END,
        started_at = %(now)s, updated_at = %(now)s, cancel_requested = false
    FROM picked WHERE jobs.id = picked.id
    RETURNING {jobs_job_columns}
)
SELECT {job_columns} FROM claimed

-- name: claim_concurrency_locked
-- The claim of one queue limited by its concurrency alone (the claim's flag said so), as two
-- statements in one transaction sent as one pipeline (ops.Exec several=True: one round trip):
-- the control row's lock, then claim_limited (its snapshot taken after the lock was granted:
-- READ COMMITTED gives each statement its own) with alone=true. lock_controls, claim_limited and
-- COMMIT were three round trips, two of them with the row locked: with six claimers of one queue
-- limited to 4, each claim waited for the others' (bench/flow_rows.py). A row that is no longer
-- limited by its concurrency alone gives nothing: the worker's next claim reads the flag again
-- and takes the general path.
SELECT FROM queue_controls WHERE queue = %(queue)s FOR UPDATE;
{sql:claim_limited}

-- name: running_count
-- PROCESSING rows are few (at most every worker's slots): counted from the jobs_live partial index.
SELECT count(*) FROM jobs WHERE status = 'PROCESSING' AND queue = %(queue)s

-- name: running_by_key
SELECT concurrency_key, count(*) FROM jobs
WHERE status = 'PROCESSING' AND queue = %(queue)s AND concurrency_key IS NOT NULL
GROUP BY concurrency_key

-- name: candidates
-- Due jobs of one queue in claim order (jobs_live), past the keys that are at their limit.
SELECT id, concurrency_key FROM jobs
WHERE status = 'PENDING' AND queue = %(queue)s AND run_at <= %(now)s AND {unblocked}
ORDER BY priority, run_at, id LIMIT %(limit)s
FOR NO KEY UPDATE SKIP LOCKED

-- name: claim_ids
-- The jobs ops.claim_controlled chose, leased exactly as the claim in jobs.sql leases them.
UPDATE jobs SET status = 'PROCESSING', attempts = attempts + 1, rev = rev + 1,
    lease_owner = %(worker)s, lease_token = %(nonce)s || '-' || id::text, lease_expires_at = %(expires)s,
    started_at = %(now)s, updated_at = %(now)s, cancel_requested = false
WHERE {ids} AND status = 'PENDING'
RETURNING {job_columns}

-- name: set_rate_tat
UPDATE queue_controls SET rate_tat = %(tat)s WHERE queue = %(queue)s

-- name: due_at_in_queue
-- The earliest run_at a claim of this queue could take (past the keys at their limit).
SELECT min(run_at) FROM jobs WHERE status = 'PENDING' AND queue = %(queue)s AND {unblocked}

-- name: due_count
SELECT count(*) FROM jobs WHERE status = 'PENDING' AND queue = %(queue)s AND run_at <= %(now)s AND {blocked}

-- name: ensure_control
INSERT INTO queue_controls (queue, updated_at) VALUES (%(queue)s, %(now)s) ON CONFLICT (queue) DO NOTHING

-- name: control_for_update
SELECT queue, paused, paused_by, paused_at, concurrency, per_key, rate_count, rate_window, rate_tat, updated_by, updated_at FROM queue_controls WHERE queue = %(queue)s FOR UPDATE

-- name: write_control
UPDATE queue_controls SET paused = %(paused)s, paused_by = %(paused_by)s, paused_at = %(paused_at)s,
    concurrency = %(concurrency)s, per_key = %(per_key)s, rate_count = %(rate_count)s,
    rate_window = %(rate_window)s, rate_tat = %(rate_tat)s, updated_by = %(actor)s, updated_at = %(now)s
WHERE queue = %(queue)s

-- name: insert_control_event
INSERT INTO queue_control_events (queue, at, actor, action, detail)
VALUES (%(queue)s, %(now)s, %(actor)s, %(action)s, %(detail)s)

-- name: list_controls
SELECT queue, paused, paused_by, paused_at, concurrency, per_key, rate_count, rate_window, rate_tat, updated_by, updated_at FROM queue_controls ORDER BY queue

-- name: control_history
SELECT id, queue, at, actor, action, detail FROM queue_control_events{where} ORDER BY id DESC LIMIT %(limit)s
