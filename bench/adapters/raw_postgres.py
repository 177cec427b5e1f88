"""The raw PostgreSQL limit: the simplest correct transactions, through psycopg, no library.

Each call is one statement in autocommit, so one round trip and one commit: an enqueue is one
``INSERT``; a claim is one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING``; a completion one ``UPDATE`` guarded by the owner and status. A batch enqueue is one
``INSERT ... SELECT`` from a JSON array parsed by the server (1,000 rows: ~2.5x psycopg's pipelined
``executemany`` and ~3.5x ``unnest`` of arrays bound from Python, measured here). The payload is
text, as in jobq (no ``jsonb`` parsing on either side). Statements are prepared by psycopg after
their fifth run. fsync and synchronous_commit stay at their safe defaults. An idle worker polls
with a read every ms."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bench.adapters.base import Adapter, Consumer
from bench.core import Record, record_of

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS jobs (
        id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL DEFAULT 'default', payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'PENDING', priority INTEGER NOT NULL DEFAULT 0,
        run_at DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, lease_owner TEXT,
        created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (queue, priority, run_at, id) WHERE status = 'PENDING'",
]
INSERT = "INSERT INTO jobs (payload, run_at, created_at, updated_at) VALUES (%s, %s, %s, %s)"
INSERT_MANY = """INSERT INTO jobs (payload, run_at, created_at, updated_at)
SELECT p, %s, %s, %s FROM json_array_elements_text(%s::json) AS p"""
PENDING = "SELECT 1 FROM jobs WHERE status = 'PENDING' AND queue = 'default' LIMIT 1"
CLAIM = """UPDATE jobs SET status = 'PROCESSING', attempts = attempts + 1, lease_owner = %s, updated_at = %s
WHERE id IN (SELECT id FROM jobs WHERE status = 'PENDING' AND queue = 'default' AND run_at <= %s
             ORDER BY priority, run_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, payload"""
COMPLETE = (
    "UPDATE jobs SET status = 'COMPLETED', updated_at = %s WHERE id = %s AND status = 'PROCESSING' AND lease_owner = %s"
)


def connect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


class RawPgConsumer(Consumer):
    def __init__(self, dsn: str, index: int) -> None:
        self.conn = connect(dsn)
        self.owner = f"raw-{os.getpid()}-{index}"

    def take(self) -> list[Record]:
        now = time.time()
        rows = self.conn.execute(CLAIM, (self.owner, now, now, 1)).fetchall()
        claimed_at = time.time()
        if not rows:
            return []
        self.conn.execute(COMPLETE, (time.time(), rows[0][0], self.owner))
        return [record_of(json.loads(rows[0][1]), claimed_at)]

    def wait(self, timeout: float) -> None:
        # Poll with a plain read every ms (cheaper for the server than an UPDATE per poll).
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.conn.execute(PENDING).fetchall():
                return
            time.sleep(self.poll_seconds)

    def close(self) -> None:
        self.conn.close()


class RawPostgres(Adapter):
    def __init__(self, options: dict[str, Any], env: dict[str, Any]) -> None:
        super().__init__(options, env)
        self.dsn = f"{env['dsn_base']}/{env['run']}"
        self._conn: Any = None

    @classmethod
    def unavailable(cls, options: dict[str, Any], env: dict[str, Any]) -> str | None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "psycopg is not installed"
        return None if env.get("dsn_base") else "no PostgreSQL server"

    def setup(self) -> None:
        self._conn = connect(self.dsn)
        for sql in SCHEMA:
            self._conn.execute(sql)

    def enqueue(self, payload: dict[str, Any]) -> None:
        now = time.time()
        self._conn.execute(INSERT, (json.dumps(payload), now, now, now))

    def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        now = time.time()
        self._conn.execute(INSERT_MANY, (now, now, now, json.dumps([json.dumps(p) for p in payloads])))

    def consumer(self, index: int) -> Consumer:
        return RawPgConsumer(self.dsn, index)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
