-- Queue.wait's registrations: a finishing transaction notifies only the jobs someone waits for.

-- name: register_waiter
-- Rows of waiters that crashed expire; each registration clears the expired ones.
WITH expired AS (DELETE FROM job_waiters WHERE expires_at < %(now)s)
INSERT INTO job_waiters (job_id, expires_at) VALUES (%(id)s, %(expires)s) RETURNING id

-- name: unregister_waiter
DELETE FROM job_waiters WHERE id = %(waiter)s

-- name: get_job_locked
-- A registered waiter's read: FOR SHARE waits for a finishing transaction that holds the row, so
-- a finish whose NOTIFY check ran before the registration committed is read here once committed.
{sql:get_job} FOR SHARE

-- name: notify_waited
-- The batched forms' wake-up: one NOTIFY per finished job someone waits for.
SELECT count({notify_waited}('{done_channel}', job_id)) FROM unnest(%(ids)s::bigint[]) AS job_id
