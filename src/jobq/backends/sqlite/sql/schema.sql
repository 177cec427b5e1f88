-- The schema's own bookkeeping (SQLite): which migrations were applied, and when.

-- name: schema_table
CREATE TABLE IF NOT EXISTS jobq_schema (version INTEGER NOT NULL, applied_at REAL NOT NULL)

-- name: schema_version
SELECT coalesce(max(version), 0) FROM jobq_schema

-- name: record_version
INSERT INTO jobq_schema (version, applied_at) VALUES (:version, :at)
