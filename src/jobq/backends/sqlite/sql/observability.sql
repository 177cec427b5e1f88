-- The statements of observability (SQLite): a handler's progress, trace contexts, and the reads
-- behind `jobq metrics`. They touch jobs and job_events, but live apart from jobs.sql: the hot
-- path there (claim, complete) is tuned on its own and none of these run on it.

-- name: progress
-- Fenced like a heartbeat: only the lease that holds the job may report its progress.
UPDATE jobs SET progress = :fraction, progress_message = :message, progress_at = :now
WHERE id = :id AND status = 'PROCESSING' AND lease_token = :token
RETURNING cancel_requested

-- name: progress_of_jobs
SELECT id, progress, progress_message, progress_at FROM jobs WHERE {ids} AND progress_at IS NOT NULL

-- name: set_trace_context
UPDATE jobs SET trace_context = :context WHERE id = :id

-- name: trace_contexts
SELECT id, trace_context FROM jobs WHERE {ids} AND trace_context IS NOT NULL

-- name: metric_pending
-- Walks the partial index jobs_live (its PENDING range): the cost follows the backlog, never
-- the finished history.
SELECT queue, count(*), sum(CASE WHEN run_at <= :now THEN 1 ELSE 0 END),
       min(CASE WHEN run_at <= :now THEN run_at END)
FROM jobs WHERE status = 'PENDING' GROUP BY queue

-- name: metric_processing
SELECT queue, count(*), sum(CASE WHEN lease_expires_at < :now THEN 1 ELSE 0 END)
FROM jobs WHERE status = 'PROCESSING' GROUP BY queue

-- name: metric_last_event_id
SELECT coalesce(max(id), 0) FROM job_events

-- name: metric_last_job_id
SELECT coalesce(max(id), 0) FROM jobs

-- name: metric_enqueues
-- Enqueues are not events (issue 13): the exporter follows the jobs' primary key from a cursor.
SELECT id, created_at, queue, run_at FROM jobs WHERE id > :after ORDER BY id LIMIT :limit

-- name: metric_events
-- Events after a cursor, by primary key, each with its job's queue and times (a primary-key
-- lookup per event): the exporter turns them into counters and histograms.
SELECT e.id, e.kind, e.at, e.attempt, j.queue, j.run_at, j.started_at, j.finished_at, e.detail
FROM job_events e LEFT JOIN jobs j ON j.id = e.job_id
WHERE e.id > :after ORDER BY e.id LIMIT :limit

-- name: metric_completion_cursor
-- Where a cursor over completions starts: the newest finished job (jobs_finished, backwards).
SELECT finished_at, id FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT 1

-- name: metric_completions
-- Completions are not events (issue 13): the exporter follows jobs_finished from a cursor
-- (finished_at, id): a range of the index from the cursor's time, those at that time filtered by id.
SELECT id, attempts, queue, run_at, started_at, finished_at FROM jobs
WHERE finished_at >= :at AND NOT (finished_at = :at AND id <= :id) AND finished_at <= :until AND status = 'COMPLETED'
ORDER BY finished_at, id LIMIT :limit
