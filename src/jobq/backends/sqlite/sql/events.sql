-- Every statement that touches the job_events table (SQLite): each job's append-only history.

-- name: insert_event
INSERT INTO job_events (job_id, at, kind, actor, attempt, detail)
VALUES (:job_id, :at, :kind, :actor, :attempt, :detail)

-- name: events_of_job
SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events WHERE job_id = :id ORDER BY id

-- name: recent_events
SELECT id, job_id, at, kind, actor, attempt, detail FROM job_events{where} ORDER BY id DESC LIMIT :limit

-- name: finished_by_kind
SELECT kind, count(*) FROM job_events
WHERE at >= :since AND kind IN ('completed', 'failed', 'expired') GROUP BY kind

-- name: history_kinds
SELECT CAST((at - :since) / :bucket AS INTEGER) AS b, kind, count(*) FROM job_events
WHERE at >= :since GROUP BY b, kind
