-- The statements of `jobq backup` and `jobq restore` (SQLite): what a copy holds, and the id
-- floor that keeps a restored queue from handing out again the ids its predecessor used.

-- name: copy_summary
SELECT count(*), coalesce(max(id), 0) FROM jobs

-- name: newest_id_used
-- The newest id this queue has handed out, purged and deleted jobs included.
SELECT {next_job_id} - 1

-- name: raise_id_floor
UPDATE jobq_id_floor SET floor = max(floor, :id)
