-- Every statement that touches the job_events table (PostgreSQL): each job's append-only history.

-- name: insert_event
INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
VALUES (%(job_id)s, %(at)s, %(kind)s, %(actor)s, %(attempt)s, %(detail)s)

-- name: refusal_recorded
-- A refused worker write repeated after its outcome was unknown: is the same refusal (the job,
-- the operation and the lease, in the detail) recorded already? (ops.core._refused_unless_applied)
SELECT 1 FROM job_events WHERE job_id = %(id)s AND kind = 'stale_write_refused' AND detail = %(detail)s LIMIT 1

-- name: action_event_at
-- An operator's chunk or a rescue whose COMMIT reply was lost: did it commit? Its first job done
-- has its event of that action (the actor's, stamped with the action's time) only if it did
-- (ops.core.event_made).
SELECT 1 FROM job_events
WHERE job_id = %(id)s AND at = %(at)s AND actor = %(actor)s
    AND kind IN ('cancelled', 'cancel_requested', 'resubmitted', 'moved', 'rescued', 'expired')
LIMIT 1

-- name: insert_events_set
-- An event of one kind for each job of a chunk (ops.operator), in order: its detail at the same
-- place of :details (JSON text or null).
INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
SELECT j, %(at)s, %(kind)s, %(actor)s, %(attempt)s, dt
FROM unnest(%(ids)s::bigint[], %(details)s::text[]) WITH ORDINALITY AS t(j, dt, n) ORDER BY n

-- name: events_of_job
SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events WHERE job_id = %(id)s ORDER BY id

-- name: recent_events
SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events{where} ORDER BY id DESC LIMIT %(limit)s

-- name: finished_by_kind
SELECT kind, count(*) FROM job_events
WHERE at >= %(since)s AND kind IN ('failed', 'expired') GROUP BY kind

-- name: history_kinds
-- trunc, not a cast: a cast to integer rounds on PostgreSQL where SQLite's truncates.
-- Enqueues, claims and completions are counted from the job rows (history_enqueued) and from the
-- events that end an attempt
-- (history_row_claims, history_carried_claims, history_completed), never from stored rows of
-- those kinds (written by a jobq before schema 9): each is counted once.
SELECT trunc((at - %(since)s) / %(bucket)s)::bigint AS b, kind, count(*) FROM job_events
WHERE at >= %(since)s AND at < 'Infinity' AND kind NOT IN ('enqueued', 'claimed', 'completed') GROUP BY b, kind

-- name: history_carried_claims
-- The claims of attempts that ended in an event (a retry, a failure, a rescue...): the event
-- carries its claim time (common.attempt_detail), and was written after it.
-- The time is read from the text, not through ::jsonb and a cast: a detail written by hand that is
-- no JSON, or whose claimed_at is text, a list, true or out of double precision's range (1e999),
-- failed the whole read. A plain decimal number (what jobq writes) is taken; anything else is no
-- claim time, as on SQLite and in common.carried_events.
SELECT trunc((claimed_at - %(since)s) / %(bucket)s)::bigint AS b, count(*) FROM (
    SELECT substring(detail from '"claimed_at"\s*:\s*(-?[0-9]{1,15}(?:\.[0-9]{1,30})?)\s*[,}]')::double precision
           AS claimed_at
    FROM job_events WHERE at >= %(since)s AND detail LIKE '%%claimed_at%%'
) AS ended WHERE claimed_at >= %(since)s AND claimed_at < 'Infinity' GROUP BY b
