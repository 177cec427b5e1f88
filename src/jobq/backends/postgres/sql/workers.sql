-- Every statement that touches the workers table (PostgreSQL): one row per worker process start.

-- name: register_worker
INSERT INTO workers (id, name, host, pid, queues, started_at, last_seen_at, stopped_at, current_jobs,
                     jobs_done, jobs_failed, wake_address, process_table)
VALUES (%(id)s, %(name)s, %(host)s, %(pid)s, %(queues)s, %(started_at)s, %(last_seen_at)s, %(stopped_at)s,
        %(current_jobs)s, %(jobs_done)s, %(jobs_failed)s, %(wake_address)s, %(process_table)s)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, host = EXCLUDED.host, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
    started_at = EXCLUDED.started_at, last_seen_at = EXCLUDED.last_seen_at, stopped_at = EXCLUDED.stopped_at,
    current_jobs = EXCLUDED.current_jobs, jobs_done = EXCLUDED.jobs_done, jobs_failed = EXCLUDED.jobs_failed,
    wake_address = EXCLUDED.wake_address, process_table = EXCLUDED.process_table

-- name: worker_seen
UPDATE workers SET last_seen_at = %(now)s, current_jobs = %(current)s, jobs_done = %(done)s,
    jobs_failed = %(failed)s
WHERE id = %(id)s

-- name: worker_stopped
UPDATE workers SET stopped_at = %(now)s, last_seen_at = %(now)s, current_jobs = '[]' WHERE id = %(id)s

-- name: list_workers
SELECT id, name, host, pid, queues, started_at, last_seen_at, stopped_at, current_jobs,
       jobs_done, jobs_failed, wake_address, process_table
FROM workers ORDER BY started_at DESC LIMIT %(limit)s
