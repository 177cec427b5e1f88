-- Flow control (docs/flow-control.md): the queue_controls table, its history, and the claim of
-- the queues it controls (statements over jobs that only that claim and its reads use). Named
-- parameters are :name; {braces} are filled per call (see statements.py).
--
-- A queue is controlled while it is paused or has a limit; only then does the claim take the
-- slower path of claim_controlled (ops.claim_controlled). Every claim runs under BEGIN IMMEDIATE:
-- SQLite's one writer serialises the counts and the claim, no row lock is needed.

-- name: controls_active
SELECT queue, paused, concurrency, per_key, rate_count, rate_window, rate_tat FROM queue_controls
WHERE {queues} AND (paused <> 0 OR concurrency IS NOT NULL OR per_key IS NOT NULL OR rate_count IS NOT NULL)
ORDER BY queue

-- name: running_count
-- PROCESSING rows are few (at most every worker's slots): read from the jobs_live partial index.
SELECT count(*) FROM jobs WHERE status = 'PROCESSING' AND queue = :queue

-- name: running_by_key
SELECT concurrency_key, count(*) FROM jobs
WHERE status = 'PROCESSING' AND queue = :queue AND concurrency_key IS NOT NULL
GROUP BY concurrency_key

-- name: candidates
-- Due jobs of one queue in claim order (jobs_live), past the keys that are at their limit.
SELECT id, concurrency_key FROM jobs
WHERE status = 'PENDING' AND queue = :queue AND run_at <= :now AND {unblocked}
ORDER BY priority, run_at, id LIMIT :limit

-- name: claim_ids
-- The jobs ops.claim_controlled chose, leased exactly as the claim in jobs.sql leases them.
UPDATE jobs SET status = 'PROCESSING', attempts = attempts + 1, rev = rev + 1,
    lease_owner = :worker, lease_token = :nonce || '-' || id, lease_expires_at = :expires,
    started_at = :now, updated_at = :now, cancel_requested = 0
WHERE {ids} AND status = 'PENDING'
RETURNING {job_columns}

-- name: set_rate_tat
UPDATE queue_controls SET rate_tat = :tat WHERE queue = :queue

-- name: due_at_in_queue
-- The earliest run_at a claim of this queue could take (past the keys at their limit).
SELECT min(run_at) FROM jobs WHERE status = 'PENDING' AND queue = :queue AND {unblocked}

-- name: due_count
SELECT count(*) FROM jobs WHERE status = 'PENDING' AND queue = :queue AND run_at <= :now AND {blocked}

-- name: ensure_control
INSERT INTO queue_controls (queue, updated_at) VALUES (:queue, :now) ON CONFLICT (queue) DO NOTHING

-- name: control_for_update
SELECT queue, paused, paused_by, paused_at, concurrency, per_key, rate_count, rate_window, rate_tat, updated_by, updated_at FROM queue_controls WHERE queue = :queue

-- name: write_control
UPDATE queue_controls SET paused = :paused, paused_by = :paused_by, paused_at = :paused_at,
    concurrency = :concurrency, per_key = :per_key, rate_count = :rate_count,
    rate_window = :rate_window, rate_tat = :rate_tat, updated_by = :actor, updated_at = :now
WHERE queue = :queue

-- name: insert_control_event
INSERT INTO queue_control_events (queue, at, actor, action, detail)
VALUES (:queue, :now, :actor, :action, :detail)

-- name: list_controls
SELECT queue, paused, paused_by, paused_at, concurrency, per_key, rate_count, rate_window, rate_tat, updated_by, updated_at FROM queue_controls ORDER BY queue

-- name: control_history
SELECT id, queue, at, actor, action, detail FROM queue_control_events{where} ORDER BY id DESC LIMIT :limit
