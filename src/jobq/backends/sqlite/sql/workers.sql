-- Every statement that touches the workers table (SQLite): one row per worker process start.

-- name: register_worker
INSERT OR REPLACE INTO workers (id, name, host, pid, queues, started_at, last_seen_at, stopped_at,
                                current_jobs, jobs_done, jobs_failed, wake_address, process_table, clock_skew, clock_base)
VALUES (:id, :name, :host, :pid, :queues, :started_at, :last_seen_at, :stopped_at,
        :current_jobs, :jobs_done, :jobs_failed, :wake_address, :process_table, :clock_skew, :clock_base)

-- name: worker_seen
-- A worker judged lost that heartbeats again was only slow or cut off: it is alive again.
UPDATE workers SET last_seen_at = :now, clock_skew = :skew, clock_base = :base, current_jobs = :current, jobs_done = :done, jobs_failed = :failed,
    stopped_at = CASE WHEN end_reason = 'lost' THEN NULL ELSE stopped_at END,
    end_reason = CASE WHEN end_reason = 'lost' THEN NULL ELSE end_reason END
WHERE id = :id
RETURNING id

-- name: worker_stopped
-- The worker's own clean stop always wins; a rescuer's verdict lands only on a row not yet ended,
-- and keeps the last heartbeat it had (when the worker was last heard of).
UPDATE workers SET stopped_at = :now, end_reason = :reason, current_jobs = '[]',
    last_seen_at = CASE WHEN :reason = 'stopped' THEN :now ELSE last_seen_at END
WHERE id = :id AND (:reason = 'stopped' OR stopped_at IS NULL)

-- name: lost_workers_probe
SELECT 1 FROM workers WHERE stopped_at IS NULL AND last_seen_at < :before LIMIT 1

-- name: mark_lost_workers
UPDATE workers SET stopped_at = :now, end_reason = 'lost', current_jobs = '[]'
WHERE stopped_at IS NULL AND last_seen_at < :before
RETURNING id

-- name: workers_marked_lost_at
-- The rows one marking of lost workers ended (its time is the marking's own): read back when its
-- commit's reply was lost. A worker that beat again since is alive and not among them.
SELECT id FROM workers WHERE end_reason = 'lost' AND stopped_at = :now

-- name: prune_workers_probe
SELECT 1 FROM workers WHERE stopped_at < :before LIMIT 1

-- name: prune_workers
-- Rows of workers that ended before the cutoff (a row per start, kept for the ops app's record of
-- who stopped, crashed or was lost); a running worker's row stays. A lost worker that comes back
-- after its row went registers again (Backend.worker_seen is False).
DELETE FROM workers WHERE stopped_at < :before
RETURNING id

-- name: store_time
-- The store's clock (Queue.sync_clock): this host's, read by SQLite to the millisecond.
SELECT (julianday('now') - 2440587.5) * 86400.0

-- name: list_workers
-- Every running worker, however many rows were added after it (a worker restarted in a loop adds
-- one a start), and the newest stopped ones up to the limit: the readers of this list judge
-- liveness from it (jobq workers, the ops app's alerts, the metrics, the rescuer's peers).
SELECT * FROM (
    SELECT {worker_columns} FROM workers WHERE stopped_at IS NULL
    UNION ALL
    SELECT * FROM (
        SELECT {worker_columns} FROM workers WHERE stopped_at IS NOT NULL ORDER BY started_at DESC LIMIT :limit
    ) AS stopped
) AS listed ORDER BY started_at DESC

-- name: live_wake_addresses
SELECT wake_address FROM workers
WHERE stopped_at IS NULL AND wake_address IS NOT NULL AND last_seen_at > :seen_after
