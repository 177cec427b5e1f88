-- Every statement that touches the job_events table (PostgreSQL): each job's append-only history.

-- name: insert_event
INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
VALUES (%(job_id)s, %(at)s, %(kind)s, %(actor)s, %(attempt)s, %(detail)s)

-- name: events_of_job
SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events WHERE job_id = %(id)s ORDER BY id

-- name: recent_events
SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events{where} ORDER BY id DESC LIMIT %(limit)s

-- name: finished_by_kind
SELECT kind, count(*) FROM job_events
WHERE at >= %(since)s AND kind IN ('completed', 'failed', 'expired') GROUP BY kind

-- name: history_kinds
-- trunc, not a cast: a cast to integer rounds on PostgreSQL where SQLite's truncates.
SELECT trunc((at - %(since)s) / %(bucket)s)::bigint AS b, kind, count(*) FROM job_events
WHERE at >= %(since)s GROUP BY b, kind
