-- The schema's own bookkeeping (SQLite): which migrations were applied, and when.

-- name: schema_table
CREATE TABLE IF NOT EXISTS jobq_schema (version INTEGER NOT NULL, applied_at REAL NOT NULL)

-- name: schema_table_exists
-- Whether the file holds a jobq queue at all, read before anything is written (create=False).
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobq_schema'

-- name: schema_version
SELECT coalesce(max(version), 0) FROM jobq_schema

-- name: record_version
INSERT INTO jobq_schema (version, applied_at) VALUES (:version, :at)
