-- Due depth over time and per-queue waits, from the job rows alone (see backends/due_history.py).
-- Each job's latest due period runs from greatest(created_at, run_at) until started_at (claimed)
-- or finished_at (cancelled unclaimed).

-- name: due_pending_from
-- PENDING jobs due now, counted per first bucket whose end is at or after their due time (ceil - 1;
-- everything before `since` in bucket -1). Walks the PENDING rows only, like stats' pending_by_queue.
-- The due time is clamped to [since - bucket, now] first: a created_at written by hand as NaN or
-- Infinity (then due now: run_at <= now holds) or -Infinity (due before since) failed the read's
-- ::bigint; a time past now (a producer's clock ahead) lands in the last bucket as before.
SELECT greatest(ceil((greatest(least(greatest(created_at, run_at), %(now)s), %(since)s - %(bucket)s) - %(since)s)
                     / %(bucket)s)::bigint - 1, -1) AS b, count(*)
FROM jobs WHERE status = 'PENDING' AND run_at <= %(now)s GROUP BY b

-- name: due_running
SELECT queue, greatest(created_at, run_at), started_at, NULL::double precision FROM jobs WHERE status = 'PROCESSING'

-- name: due_finished
-- The newest `limit` jobs finished since `since`, read backwards along jobs_finished: bounded work
-- at any table size.
SELECT queue, greatest(created_at, run_at), started_at, finished_at FROM jobs
WHERE finished_at >= %(since)s ORDER BY finished_at DESC LIMIT %(limit)s
