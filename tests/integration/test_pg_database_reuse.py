"""The PostgreSQL fixture hands each test an empty database: a new one, or one an earlier test
used, scrubbed back to new (tests/pg.py). What a test leaves behind must never reach the next."""

from __future__ import annotations

import psycopg
import pytest
from pg import PgServer, fresh_database, raw_connect

import jobq

pytestmark = pytest.mark.postgres


def _schemas_and_tables(url: str) -> tuple[list[str], list[str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        schemas = [
            r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg%' ORDER BY 1")
        ]
        tables = [
            r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace")
        ]
    return schemas, tables


def test_a_used_database_comes_back_empty_and_one_left_changed_is_not_reused(postgres_server: PgServer) -> None:
    with fresh_database(postgres_server) as url, jobq.Queue(url) as q:
        q.enqueue({"n": 1})
        with raw_connect(url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA decoy")
        first = url
    with fresh_database(postgres_server) as url:
        assert url == first, "a clean database is handed out again"
        assert _schemas_and_tables(url) == (["information_schema", "public"], [])
        with jobq.Queue(url) as q:
            assert q.counts() == {} or sum(q.counts().values()) == 0
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.left_behind (x int)")
    with fresh_database(postgres_server) as url:
        assert url != first, "a database with a table left in public is dropped, not reused"
        assert _schemas_and_tables(url) == (["information_schema", "public"], [])
        held = psycopg.connect(url, autocommit=True)  # a connection the test forgot to close
        second = url
    try:
        with fresh_database(postgres_server) as url:
            assert url != second, "a database someone is still connected to is dropped, not reused"
    finally:
        held.close()
