-- Every statement that touches the job_events table (SQLite): each job's append-only history.

-- name: insert_event
INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
VALUES (:job_id, :at, :kind, :actor, :attempt, :detail)

-- name: refusal_recorded
-- A refused worker write repeated after its outcome was unknown: is the same refusal (the job,
-- the operation and the lease, in the detail) recorded already? (ops.core._refused_unless_applied)
SELECT 1 FROM job_events WHERE job_id = :id AND kind = 'stale_write_refused' AND detail = :detail LIMIT 1

-- name: action_event_at
-- An operator's chunk or a rescue whose COMMIT reply was lost: did it commit? Its first job done
-- has its event of that action (the actor's, stamped with the action's time) only if it did
-- (ops.core.event_made).
SELECT 1 FROM job_events
WHERE job_id = :id AND at = :at AND actor = :actor
    AND kind IN ('cancelled', 'cancel_requested', 'resubmitted', 'moved', 'rescued', 'expired')
LIMIT 1

-- name: insert_events_set
-- An event of one kind for each job of a chunk (ops.operator): :items is a JSON array of
-- [job id, detail] in order, each detail JSON text or null (Dialect.event_items).
INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
SELECT value ->> 0, :at, :kind, :actor, :attempt, value ->> 1 FROM json_each(:items) ORDER BY key

-- name: events_of_job
SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events WHERE job_id = :id ORDER BY id

-- name: recent_events
SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events{where} ORDER BY id DESC LIMIT :limit

-- name: finished_by_kind
SELECT kind, count(*) FROM job_events
WHERE at >= :since AND kind IN ('failed', 'expired') GROUP BY kind

-- name: history_kinds
-- Enqueues, claims and completions are counted from the job rows (history_enqueued) and from the
-- events that end an attempt
-- (history_row_claims, history_carried_claims, history_completed), never from stored rows of
-- those kinds (written by a jobq before schema 8): each is counted once.
SELECT CAST((at - :since) / :bucket AS INTEGER) AS b, kind, count(*) FROM job_events
WHERE at >= :since AND kind NOT IN ('enqueued', 'claimed', 'completed') GROUP BY b, kind

-- name: history_carried_claims
-- The claims of attempts that ended in an event (a retry, a failure, a rescue...): the event
-- carries its claim time (common.attempt_detail), and was written after it.
SELECT CAST((claimed_at - :since) / :bucket AS INTEGER) AS b, count(*) FROM (
    SELECT CASE WHEN json_valid(detail) THEN json_extract(detail, '$.claimed_at') END AS claimed_at
    FROM job_events WHERE at >= :since AND detail LIKE '%claimed_at%'
) AS ended WHERE claimed_at >= :since GROUP BY b
