-- The statements of observability (PostgreSQL): a handler's progress, trace contexts, and the reads
-- behind `jobq metrics`. They touch jobs and job_events, but live apart from jobs.sql: the hot
-- path there (claim, complete) is tuned on its own and none of these run on it.

-- name: progress
-- Fenced like a heartbeat: only the lease that holds the job may report its progress.
UPDATE jobs SET progress = %(fraction)s, progress_message = %(message)s, progress_at = %(now)s
WHERE id = %(id)s AND coalesce(status = 'PROCESSING', false) AND lease_token = %(token)s
RETURNING cancel_requested

-- name: progress_of_jobs
SELECT id, progress, progress_message, progress_at FROM jobs WHERE {ids} AND progress_at IS NOT NULL

-- name: set_trace_context
UPDATE jobs SET trace_context = %(context)s WHERE id = %(id)s

-- name: trace_contexts
SELECT id, trace_context FROM jobs WHERE {ids} AND trace_context IS NOT NULL

-- name: metric_pending
-- Walks the partial index jobs_live (its PENDING range): the cost follows the backlog, never
-- the finished history.
-- Scheduled (not yet due) jobs are counted, and the oldest run_at is the oldest due one when it
-- is due at all: half the cost of a due count and a min() over due rows (SQLite: 6 ms rather
-- than 11 per 60,000 pending jobs, on every scrape).
SELECT queue, count(*), sum(CASE WHEN run_at > %(now)s THEN 1 ELSE 0 END), min(run_at)
FROM jobs WHERE status = 'PENDING' GROUP BY queue

-- name: metric_processing
SELECT queue, count(*), sum(CASE WHEN lease_expires_at < %(now)s OR lease_expires_at IS NULL OR NOT lease_expires_at < 'Infinity' THEN 1 ELSE 0 END)
FROM jobs WHERE status = 'PROCESSING' GROUP BY queue

-- name: metric_last_event_id
SELECT coalesce(max(id), 0) FROM job_events

-- name: metric_last_job_id
SELECT coalesce(max(id), 0) FROM jobs

-- name: metric_last_job_id_before
-- The newest job made before the given time, read backwards along the primary key: it stops at
-- the first older job, so it reads only the jobs made since (the exporter's start on a file put in
-- place of the one it read, SQLite: a second or two of them). A made time written by hand past it
-- is read over.
SELECT id FROM jobs WHERE created_at < %(before)s ORDER BY id DESC LIMIT 1

-- name: metric_last_event_id_before
-- The same for the events.
SELECT id FROM job_events WHERE at < %(before)s ORDER BY id DESC LIMIT 1

-- name: metric_job_first
-- Where one read of enqueue_totals starts: the first job after the cursor (one seek of the
-- primary key; an OFFSET walked every row of the range, ~0.1 us per job, issue 17). Enqueues
-- are not events (issue 13): the exporter follows the jobs' primary key.
SELECT min(id) FROM jobs WHERE id > %(after)s

-- name: metric_job_unsettled
-- The first job of the range too young to count yet (PostgreSQL: see the exporter's limits). Only
-- a time up to `horizon` is young: a later one, NaN (PostgreSQL sorts it above every number) or text
-- (SQLite) was written by hand or by a host whose clock is far ahead, and would hold back every job
-- after it for good (ops.metrics.METRICS_CLOCK_AHEAD_MAX_SECONDS).
SELECT min(id) FROM jobs WHERE id > %(after)s AND id <= %(end)s AND created_at > %(until)s AND created_at <= %(horizon)s

-- name: metric_enqueue_counts
-- The jobs made in the range, by queue: one row per queue, not per job.
SELECT queue, count(*) FROM jobs WHERE id > %(after)s AND id <= %(end)s GROUP BY queue

-- name: metric_events
-- Events after a cursor, by primary key, each with its job's queue and times (a primary-key
-- lookup per event): the exporter turns them into counters and histograms.
SELECT e.id, e.kind, e.at, e.attempt, j.queue, j.run_at, j.started_at, j.finished_at, e.detail
FROM job_events e LEFT JOIN jobs j ON j.id = e.job_id
WHERE e.id > %(after)s ORDER BY e.id LIMIT %(limit)s

-- name: metric_event_first
-- Where one read of event_totals starts: the first event after the cursor (as metric_job_first).
SELECT min(id) FROM job_events WHERE id > %(after)s

-- name: metric_event_unsettled
-- The first event of the range too young to count yet: as metric_job_unsettled.
SELECT min(id) FROM job_events WHERE id > %(after)s AND id <= %(end)s AND at > %(until)s AND at <= %(horizon)s

-- name: metric_event_counts
-- The events of the kinds counted, not read ({kinds}: enqueued, one per job), by queue and kind.
SELECT j.queue, e.kind, count(*)
FROM job_events e JOIN jobs j ON j.id = e.job_id
WHERE e.id > %(after)s AND e.id <= %(end)s AND {kinds}
GROUP BY j.queue, e.kind

-- name: metric_events_between
-- The other events of the range, one row each (as metric_events).
SELECT e.id, e.kind, e.at, e.attempt, j.queue, j.run_at, j.started_at, j.finished_at, e.detail
FROM job_events e LEFT JOIN jobs j ON j.id = e.job_id
WHERE e.id > %(after)s AND e.id <= %(end)s AND NOT {kinds} ORDER BY e.id

-- name: metric_completion_cursor
-- Where a cursor over completions starts: the newest job finished by now (jobs_finished, backwards).
-- By now: a finished_at written by hand in the future, as Infinity or (PostgreSQL) NaN, which sorts
-- above every number, put the cursor past every completion to come, and the exporter counted none.
SELECT finished_at, id FROM jobs WHERE finished_at <= %(now)s ORDER BY finished_at DESC, id DESC LIMIT 1

-- name: metric_completions
-- Completions are not events (issue 13): the exporter follows jobs_finished from a cursor
-- (finished_at, id): a range of the index from the cursor's time, those at that time filtered by id.
SELECT id, attempts, queue, run_at, started_at, finished_at FROM jobs
WHERE finished_at >= %(at)s AND NOT (finished_at = %(at)s AND id <= %(id)s) AND finished_at <= %(until)s AND status = 'COMPLETED'
ORDER BY finished_at, id LIMIT %(limit)s

-- name: metric_completion_probe
-- Whether more than `skip` completions follow the cursor, and if so the time of the next one: an
-- OFFSET along jobs_finished in its own order (0.05 us a job against a count's 0.08, issue 17). A fold
-- then ends before that time (metric_completion_last with until just below it), so that one instant's
-- completions are never split and the range needs no sort by id.
SELECT finished_at FROM jobs
WHERE finished_at >= %(at)s AND NOT (finished_at = %(at)s AND id <= %(id)s) AND finished_at <= %(until)s AND status = 'COMPLETED'
ORDER BY finished_at LIMIT 1 OFFSET %(skip)s

-- name: metric_completion_bound
-- How far one fold of metric_completion_totals reaches when more than its limit of completions
-- share the instants it could fold (metric_completion_probe found no earlier end): the (skip + 1)-th
-- completion after the cursor, in metric_completions' order (a sort of the range by id).
SELECT finished_at, id FROM jobs
WHERE finished_at >= %(at)s AND NOT (finished_at = %(at)s AND id <= %(id)s) AND finished_at <= %(until)s AND status = 'COMPLETED'
ORDER BY finished_at, id LIMIT 1 OFFSET %(skip)s

-- name: metric_completion_last
-- The last completion up to `until`, and its queue (SQLite sums that queue's cheaper).
SELECT finished_at, id, queue FROM jobs
WHERE finished_at >= %(at)s AND NOT (finished_at = %(at)s AND id <= %(id)s) AND finished_at <= %(until)s AND status = 'COMPLETED'
ORDER BY finished_at DESC, id DESC LIMIT 1

-- name: metric_completion_totals
-- The completions after one cursor up to another (end_at, end_id), at most `rows` of them, counted
-- here by queue and histogram slot rather than read row by row: reading each row cost the exporter
-- ~4 us of Python per completed job, 8 % of a worker's own CPU per job (issue 17). The slots of
-- wait, run time and attempts are CASE expressions (Dialect.bucket_of), -1 where the value is NULL;
-- the sums count a negative value as 0 and leave an infinite or NaN one out (a time written by
-- hand; PostgreSQL sorts NaN above Infinity): one would make the exporter's sum infinite or NaN for
-- good. The three slots are grouped as one number (ops.metrics packs and unpacks it), the queue's
-- name after it as text (SQLite's shape for a queue other than the last job's; a hash aggregate
-- here has no sort to spare).
SELECT slots::text || ' ' || queue, n, w, r, a FROM (
    SELECT queue, {slots} AS slots, count(*) AS n,
           sum(CASE WHEN wait < 'Infinity' THEN greatest(wait, 0) END) AS w,
           sum(CASE WHEN run < 'Infinity' THEN greatest(run, 0) END) AS r, sum(greatest(attempts, 0)) AS a
    FROM (
        SELECT queue, started_at - run_at AS wait, finished_at - started_at AS run,
               CASE WHEN started_at IS NOT NULL THEN attempts END AS attempts
        FROM jobs
        WHERE finished_at >= %(at)s AND NOT (finished_at = %(at)s AND id <= %(id)s)
          AND (finished_at < %(end_at)s OR (finished_at = %(end_at)s AND id <= %(end_id)s)) AND status = 'COMPLETED'
        LIMIT %(rows)s
    ) AS c
    GROUP BY 1, 2
) AS g
