-- Every statement that touches the workers table (SQLite): one row per worker process start.

-- name: register_worker
INSERT OR REPLACE INTO workers (id, name, host, pid, queues, started_at, last_seen_at, stopped_at,
                                current_jobs, jobs_done, jobs_failed, wake_address, process_table)
VALUES (:id, :name, :host, :pid, :queues, :started_at, :last_seen_at, :stopped_at,
        :current_jobs, :jobs_done, :jobs_failed, :wake_address, :process_table)

-- name: worker_seen
UPDATE workers SET last_seen_at = :now, current_jobs = :current, jobs_done = :done, jobs_failed = :failed
WHERE id = :id

-- name: worker_stopped
UPDATE workers SET stopped_at = :now, last_seen_at = :now, current_jobs = '[]' WHERE id = :id

-- name: list_workers
SELECT id, name, host, pid, queues, started_at, last_seen_at, stopped_at, current_jobs,
       jobs_done, jobs_failed, wake_address, process_table
FROM workers ORDER BY started_at DESC LIMIT :limit

-- name: live_wake_addresses
SELECT wake_address FROM workers
WHERE stopped_at IS NULL AND wake_address IS NOT NULL AND last_seen_at > :seen_after
