-- Every statement that touches the workers table (PostgreSQL): one row per worker process start.

-- name: register_worker
INSERT INTO workers (id, name, host, pid, queues, started_at, last_seen_at, stopped_at, current_jobs,
                     jobs_done, jobs_failed, wake_address, process_table, clock_skew, clock_base)
VALUES (%(id)s, %(name)s, %(host)s, %(pid)s, %(queues)s, %(started_at)s, %(last_seen_at)s, %(stopped_at)s,
        %(current_jobs)s, %(jobs_done)s, %(jobs_failed)s, %(wake_address)s, %(process_table)s, %(clock_skew)s, %(clock_base)s)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, host = EXCLUDED.host, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
    started_at = EXCLUDED.started_at, last_seen_at = EXCLUDED.last_seen_at, stopped_at = EXCLUDED.stopped_at,
    current_jobs = EXCLUDED.current_jobs, jobs_done = EXCLUDED.jobs_done, jobs_failed = EXCLUDED.jobs_failed,
    wake_address = EXCLUDED.wake_address, process_table = EXCLUDED.process_table,
    clock_skew = EXCLUDED.clock_skew, clock_base = EXCLUDED.clock_base

-- name: worker_seen
-- A worker judged lost that heartbeats again was only slow or cut off: it is alive again.
UPDATE workers SET last_seen_at = %(now)s, clock_skew = %(skew)s, clock_base = %(base)s, current_jobs = %(current)s, jobs_done = %(done)s,
    jobs_failed = %(failed)s,
    stopped_at = CASE WHEN end_reason = 'lost' THEN NULL ELSE stopped_at END,
    end_reason = CASE WHEN end_reason = 'lost' THEN NULL ELSE end_reason END
WHERE id = %(id)s
RETURNING id

-- name: worker_stopped
-- The worker's own clean stop always wins; a rescuer's verdict lands only on a row not yet ended,
-- and keeps the last heartbeat it had (when the worker was last heard of).
UPDATE workers SET stopped_at = %(now)s, end_reason = %(reason)s, current_jobs = '[]',
    last_seen_at = CASE WHEN %(reason)s = 'stopped' THEN %(now)s ELSE last_seen_at END
WHERE id = %(id)s AND (%(reason)s = 'stopped' OR stopped_at IS NULL)

-- name: lost_workers_probe
SELECT 1 FROM workers WHERE stopped_at IS NULL AND last_seen_at < %(before)s LIMIT 1

-- name: mark_lost_workers
UPDATE workers SET stopped_at = %(now)s, end_reason = 'lost', current_jobs = '[]'
WHERE stopped_at IS NULL AND last_seen_at < %(before)s
RETURNING id

-- name: workers_marked_lost_at
-- The rows one marking of lost workers ended (its time is the marking's own): read back when its
-- commit's reply was lost. A worker that beat again since is alive and not among them.
SELECT id FROM workers WHERE end_reason = 'lost' AND stopped_at = %(now)s

-- name: prune_workers_probe
SELECT 1 FROM workers WHERE stopped_at < %(before)s LIMIT 1

-- name: prune_workers
-- Rows of workers that ended before the cutoff (a row per start, kept for the ops app's record of
-- who stopped, crashed or was lost); a running worker's row stays. A lost worker that comes back
-- after its row went registers again (Backend.worker_seen is False).
DELETE FROM workers WHERE stopped_at < %(before)s
RETURNING id

-- name: store_time
-- The server's clock (Queue.sync_clock): clock_timestamp(), not now(), which is the
-- transaction's start and would be as old as a transaction left open by a pooler.
SELECT extract(epoch FROM clock_timestamp())::double precision

-- name: list_workers
-- Every running worker, however many rows were added after it (a worker restarted in a loop adds
-- one a start), and the newest stopped ones up to the limit: the readers of this list judge
-- liveness from it (jobq workers, the ops app's alerts, the metrics, the rescuer's peers).
SELECT * FROM (
    SELECT {worker_columns} FROM workers WHERE stopped_at IS NULL
    UNION ALL
    SELECT * FROM (
        SELECT {worker_columns} FROM workers WHERE stopped_at IS NOT NULL ORDER BY started_at DESC LIMIT %(limit)s
    ) AS stopped
) AS listed ORDER BY started_at DESC
