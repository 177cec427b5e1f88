-- Due depth over time and per-queue waits, from the job rows alone (see backends/due_history.py).
-- Each job's latest due period runs from max(created_at, run_at) until started_at (claimed) or
-- finished_at (cancelled unclaimed).

-- name: due_pending_from
-- PENDING jobs due now, counted per first bucket whose end is at or after their due time (ceil - 1,
-- written with CAST since SQLite may lack ceil; everything before `since` in bucket -1). Walks the
-- partial index jobs_claim plus a row read per PENDING job, like stats' pending_by_queue.
SELECT max(CAST(x AS INTEGER) - (x = CAST(x AS INTEGER)), -1) AS b, count(*) FROM (
    SELECT (max(created_at, run_at) - :since) / :bucket AS x FROM jobs WHERE status = 'PENDING' AND run_at <= :now
) AS p GROUP BY b

-- name: due_running
SELECT queue, max(created_at, run_at), started_at, NULL FROM jobs WHERE status = 'PROCESSING'

-- name: due_finished
-- The newest `limit` jobs finished since `since`, read backwards along jobs_finished: bounded work
-- at any table size.
SELECT queue, max(created_at, run_at), started_at, finished_at FROM jobs
WHERE finished_at >= :since ORDER BY finished_at DESC LIMIT :limit
