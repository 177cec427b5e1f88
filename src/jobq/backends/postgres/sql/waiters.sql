-- Queue.wait's registrations: a finishing transaction notifies only the jobs someone waits for.

-- name: register_waiter
-- Rows of waiters that crashed expire; each registration clears the expired ones.
WITH expired AS (DELETE FROM job_waiters WHERE expires_at < %(now)s)
INSERT INTO job_waiters (job_id, expires_at) VALUES (%(id)s, %(expires)s) RETURNING id

-- name: unregister_waiter
-- The row goes, and job_waiters_gone counts it (see waiters_gate): in the DELETE's statement, so
-- that a settle (waiters_settle), whose EXCLUSIVE lock waits for this statement's ROW EXCLUSIVE,
-- never runs between the two. setval, not nextval: a crash keeps the last setval exactly, where
-- nextval's value comes back up to 32 ahead (its WAL is written ahead), which would count waiters
-- gone that never were. Two unregistrations at once may both write the same value: one goes
-- uncounted, so the gate stays open (the waiters' check runs, as before), never wrongly shut.
-- Sent once: done again after a lost reply, it could count one registration twice (a DELETE
-- rolled back after its setval leaves the row to expire, uncounted again).
WITH gone AS (DELETE FROM job_waiters WHERE id = %(waiter)s RETURNING id)
SELECT setval('{waiters_gone}', coalesce(pg_sequence_last_value('{waiters_gone}'), 0) + 1) FROM gone

-- name: waiters_to_settle
-- Embedded ({sql:NAME}) below: the gate open, and no registration that has not expired.
{waiters_gate} AND NOT EXISTS (SELECT FROM job_waiters WHERE expires_at >= %(now)s)

-- name: waiters_settle_probe
-- Is there a count to settle?
SELECT {sql:waiters_to_settle}

-- name: waiters_settle_lock
-- No registration in flight: an INSERT holds ROW EXCLUSIVE from before it takes its id (its
-- nextval) to its commit, and an unregistration from before its DELETE to after its setval.
LOCK TABLE job_waiters IN EXCLUSIVE MODE

-- name: waiters_settle
-- The registrations of crashed waiters go; with none left, the count of waiters gone is set to
-- the count of registrations, which shuts the gate until the next registration.
-- (The statement's snapshot is taken once the lock is held; it does not see its own DELETE.)
WITH expired AS (DELETE FROM job_waiters WHERE expires_at < %(now)s)
SELECT setval('{waiters_gone}', pg_sequence_last_value('{waiters_made}')) WHERE {sql:waiters_to_settle}

-- name: waiters_settle_locked
-- The lock and the settle in one transaction sent as one pipeline (ops.Exec several=True): the
-- server takes the lock, settles and commits with nothing more from the client. Sent one by one,
-- a client that stopped after the LOCK (a rescuer frozen there: SIGSTOP, a stall) kept the lock,
-- and every registration (Queue.wait) waited for it until the server ended the session.
{sql:waiters_settle_lock};
{sql:waiters_settle}

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
SELECT count(CASE WHEN {waiters_gate} THEN {notify_waited}('{done_channel}', job_id) ELSE 0 END)
FROM unnest(%(ids)s::bigint[]) AS job_id
