-- Every statement that touches the schedules table (sqlite). See jobq.schedules and
-- jobq.worker.scheduler: a slot is taken by moving the row off it (advance_schedule), guarded by
-- the slot the scheduler read, in the transaction that enqueues the slot's job.

-- name: save_schedule
-- Its definition is replaced; its state (next run, pause) is kept unless its timing changed.
INSERT INTO schedules (name, task, queue, payload_json, cron, every, zone, priority, catchup, overlap, origin, next_run_at, created_at, updated_at)
VALUES (:name, :task, :queue, :payload_json, :cron, :every, :zone, :priority, :catchup, :overlap, :origin, :next_run_at, :now, :now)
ON CONFLICT (name) DO UPDATE SET
    task = excluded.task, queue = excluded.queue, payload_json = excluded.payload_json,
    priority = excluded.priority, catchup = excluded.catchup, overlap = excluded.overlap,
    origin = excluded.origin, cron = excluded.cron, every = excluded.every, zone = excluded.zone,
    next_run_at = CASE WHEN schedules.cron IS excluded.cron AND schedules.every IS excluded.every
        AND schedules.zone = excluded.zone THEN schedules.next_run_at ELSE excluded.next_run_at END,
    updated_at = excluded.updated_at

-- name: list_schedules
SELECT name, task, queue, payload_json, cron, every, zone, priority, catchup, overlap, origin, next_run_at, last_run_at, last_job_id, paused, paused_by, paused_at FROM schedules ORDER BY name

-- name: due_schedules
SELECT name, task, queue, payload_json, cron, every, zone, priority, catchup, overlap, origin, next_run_at, last_run_at, last_job_id, paused, paused_by, paused_at FROM schedules WHERE paused = 0 AND next_run_at <= :now ORDER BY next_run_at, name

-- name: advance_schedule
UPDATE schedules SET next_run_at = :next, last_run_at = coalesce(:last, last_run_at),
    updated_at = :now
WHERE name = :name AND next_run_at = :expected AND paused = 0
RETURNING name

-- name: schedule_last_job
UPDATE schedules SET last_job_id = :job WHERE name = :name

-- name: pause_schedule
-- A resume moves the next run to the first slot after it: slots passed while paused never run.
UPDATE schedules SET paused = :paused, paused_by = :actor, paused_at = :now,
    next_run_at = coalesce(:next, next_run_at), updated_at = :now
WHERE name = :name
RETURNING name

-- name: insert_schedule_action
-- Every pause and resume, in the transaction of the change it records (an audit history).
INSERT INTO schedule_actions (name, action, actor, at) VALUES (:name, :action, :actor, :now)

-- name: schedule_action_at
-- A pause or resume whose COMMIT reply was lost: is its history row there (ops.schedules)?
SELECT 1 FROM schedule_actions
WHERE name = :name AND action = :action AND actor = :actor AND at = :now
LIMIT 1

-- name: schedule_actions
-- The latest pauses and resumes, newest first; of one schedule, or (name NULL) of every one.
SELECT name, action, actor, at FROM schedule_actions
WHERE :name IS NULL OR name = :name
ORDER BY at DESC, id DESC
LIMIT :limit

-- name: delete_schedule
DELETE FROM schedules WHERE name = :name RETURNING name
