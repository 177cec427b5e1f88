-- The statements of `jobq backup` and `jobq restore` (SQLite): what a copy holds, and the id
-- floor that keeps a restored queue from handing out again the ids its predecessor used.

-- name: copy_summary
SELECT count(*), coalesce(max(id), 0) FROM jobs

-- name: newest_id_used
-- The newest id this queue has handed out, purged and deleted jobs included.
SELECT {next_job_id} - 1

-- name: raise_id_floor
UPDATE jobq_id_floor SET floor = max(floor, :id)

-- name: table_names
SELECT name FROM sqlite_master WHERE type = 'table'

-- The newest id a queue jobq cannot open handed out (damaged, or made by a newer jobq), from
-- what of it can be read: each of these is tried alone, any may fail.
-- name: damaged_newest_job
SELECT max(id) FROM jobs

-- name: damaged_id_floor
SELECT floor FROM jobq_id_floor

-- name: damaged_autoincrement
-- Before schema 14, AUTOINCREMENT's counter.
SELECT seq FROM sqlite_sequence WHERE name = 'jobs'
