-- Queue.wait's registrations: a finishing transaction notifies only the jobs someone waits for.

-- name: register_waiter
-- Rows of waiters that crashed expire; each registration clears the expired ones.
WITH expired AS (DELETE FROM job_waiters WHERE expires_at < %(now)s)
INSERT INTO job_waiters (job_id, expires_at) VALUES (%(id)s, %(expires)s) RETURNING id

-- name: unregister_waiter
DELETE FROM job_waiters WHERE id = %(waiter)s

-- name: get_job_locked
-- A registered waiter's read. Why it cannot miss a finish: a finish checks for waiters
-- (jobq_notify_waited) only after it holds the job's row FOR UPDATE (jobs.sql: lock_to_finish,
-- or the rescuer's and the operator's FOR UPDATE before their writes), and keeps that lock to its
-- commit. A finish whose check ran before this waiter's registration committed therefore held the
-- row before this read began; FOR KEY SHARE conflicts with FOR UPDATE, so the read waits for that
-- commit and returns the row as it left it (READ COMMITTED follows the update). A finish whose
-- check ran after sees the registration and NOTIFYs.
-- Why FOR KEY SHARE, not FOR SHARE: the claim locks FOR NO KEY UPDATE SKIP LOCKED, which FOR KEY
-- SHARE does not conflict with, so a claim never passes over a job because someone waits for it
-- (FOR SHARE made the woken worker skip it until its next poll, ~1 s). FOR KEY SHARE no longer
-- waits for a plain UPDATE (FOR NO KEY UPDATE): a claim, heartbeat or retry in flight is not
-- waited for, which is right, as none of them finishes the job.
{sql:get_job} FOR KEY SHARE

-- name: notify_waited
-- The batched forms' wake-up: one NOTIFY per finished job someone waits for.
SELECT count({notify_waited}('{done_channel}', job_id)) FROM unnest(%(ids)s::bigint[]) AS job_id
