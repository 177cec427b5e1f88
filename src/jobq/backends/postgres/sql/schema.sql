-- The schema's own bookkeeping (PostgreSQL): which migrations were applied, and when.

-- name: schema_table
CREATE TABLE IF NOT EXISTS jobq_schema (version integer NOT NULL, applied_at double precision NOT NULL)

-- name: schema_version
SELECT coalesce(max(version), 0) FROM jobq_schema

-- name: record_version
INSERT INTO jobq_schema (version, applied_at) VALUES (%(version)s, %(at)s)
