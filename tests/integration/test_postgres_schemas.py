"""PostgreSQL: the queue in a schema of its own (``?schema=NAME``, default ``jobq``), a database of
the layout before schemas (tables in ``public``) moved in place, and two schemas in one database
being two independent queues: jobs, events, workers and notifications do not cross."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from handwritten import NOT_A_STATUS_OR_KEY_SCOPE, write_by_hand
from pg import PgServer, fresh_database, raw_connect

import jobq
from jobq import JobStatus
from jobq.testing import FakeClock
from jobq.testing.contract.workers import _worker

pytestmark = pytest.mark.postgres
psycopg = pytest.importorskip("psycopg")

JOBQ_TABLES = {
    "jobs",
    "job_events",
    "workers",
    "jobq_schema",
    "schedules",
    "job_waiters",
    "queue_controls",
    "queue_control_events",
    "schedule_actions",
}
#: Tables of migrations after the move to schemas (a schema-2 database has none of them).
LATER_TABLES = {"schedules", "job_waiters", "queue_controls", "queue_control_events", "schedule_actions"}


def _with(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


def _tables_by_schema(url: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    with raw_connect(url, autocommit=True) as conn:
        for schema, table in conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ):
            found.setdefault(schema, set()).add(table)
    return found


def _snapshot(q: jobq.Queue) -> tuple[object, ...]:
    """Everything a queue holds, as comparable values."""
    jobs = q.list_jobs(page=jobq.Page(limit=1000))
    return (
        sorted((j.id, j.status, j.payload, j.attempts, j.lease_token, j.result, j.last_error) for j in jobs),
        {j.id: [(e.kind, e.actor, e.attempt, e.detail) for e in q.events(j.id)] for j in jobs},
        sorted((w.id, w.host, w.pid, w.stopped_at, w.process_table) for w in q.workers()),
        q.counts(),
    )


def test_the_queue_lives_in_its_schema_never_in_public(postgres_url: str) -> None:
    with jobq.Queue(postgres_url) as q:
        q.enqueue("x")
    with jobq.Queue(_with(postgres_url, "schema=mail")) as q:
        q.enqueue("y")
    tables = _tables_by_schema(postgres_url)
    assert tables == {"jobq": JOBQ_TABLES, "mail": JOBQ_TABLES}
    with raw_connect(postgres_url, autocommit=True) as conn:
        # The trigger function moved with its schema and resolves job_events there, whatever the
        # search_path of the session that fires it.
        rows = conn.execute(
            "SELECT n.nspname, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.proname = 'jobq_external_status' ORDER BY 1"
        ).fetchall()
    assert rows == [("jobq", ["search_path=jobq"]), ("mail", ["search_path=mail"])]


def test_a_hand_made_change_is_recorded_whatever_the_session_search_path(postgres_url: str) -> None:
    with jobq.Queue(postgres_url) as q:
        job_id = q.enqueue("x")
        with psycopg.connect(postgres_url, autocommit=True) as psql:  # search_path: "$user", public
            psql.execute("UPDATE jobq.jobs SET status = 'FAILED' WHERE id = %s", (job_id,))
        assert q.get(job_id).status == JobStatus.FAILED
        assert [e.kind for e in q.events(job_id)][-1] == "external_update"


@pytest.mark.parametrize(
    "option",
    ["schema=public", "schema=Mail", "schema=pg_mail", "schema=1mail", "schema=a-b", "schema=" + "x" * 49, "schema="],
)
def test_a_bad_schema_name_is_one_clear_line(postgres_url: str, option: str) -> None:
    with pytest.raises(jobq.ConfigError, match="bad schema name") as caught:
        jobq.Queue(_with(postgres_url, option))
    assert "\n" not in str(caught.value)


def test_a_viewer_finds_no_queue_in_a_missing_schema_and_creates_nothing(postgres_url: str) -> None:
    with pytest.raises(jobq.StorageError, match=r"no jobq queue in .*\(schema absent\)"):
        jobq.Queue(_with(postgres_url, "schema=absent"), create=False)
    assert "absent" not in _tables_by_schema(postgres_url)


#: Released before schemas: the migrations a database of the public layout has.
RELEASED_BEFORE_SCHEMAS = 2
#: The undoing of each later migration, so that a store this code filled in ``public`` becomes
#: exactly the old layout (a migration added later must add its undoing here).
UNDO_LATER_MIGRATIONS = [
    ["ALTER FUNCTION public.jobq_external_status() RESET search_path"],
    [
        "DROP INDEX public.jobs_finished",
        "CREATE INDEX jobs_finished ON public.jobs (finished_at) WHERE finished_at IS NOT NULL",
    ],
    ["ALTER TABLE public.workers DROP COLUMN end_reason"],
    [
        "ALTER TABLE public.jobs DROP COLUMN progress, DROP COLUMN progress_message, "
        "DROP COLUMN progress_at, DROP COLUMN trace_context"
    ],
    [
        "DROP INDEX public.jobs_key",
        "CREATE UNIQUE INDEX jobs_key ON public.jobs (idempotency_key) WHERE idempotency_key IS NOT NULL",
        "ALTER TABLE public.jobs DROP COLUMN key_scope, DROP COLUMN key_expires_at",
    ],
    ["DROP TABLE public.schedules"],
    ["DROP FUNCTION public.jobq_notify_waited(text, bigint)", "DROP TABLE public.job_waiters"],
    [
        "DROP INDEX public.jobs_live",
        "CREATE INDEX jobs_claim ON public.jobs (queue, priority, run_at, id) WHERE status = 'PENDING'",
        "CREATE INDEX jobs_lease ON public.jobs (lease_expires_at) WHERE status = 'PROCESSING'",
        "DROP INDEX public.jobs_status",
        "CREATE INDEX jobs_status ON public.jobs (status, id)",
        "DROP INDEX public.jobs_finished",
        "CREATE INDEX jobs_finished ON public.jobs (finished_at, status, queue) WHERE finished_at IS NOT NULL",
    ],
    [
        "DROP TABLE public.queue_controls, public.queue_control_events",
        "ALTER TABLE public.jobs DROP COLUMN concurrency_key",
    ],
    ["DROP TABLE public.schedule_actions", "ALTER TABLE public.jobs DROP COLUMN policy"],
    ["ALTER TABLE public.queue_controls DROP CONSTRAINT queue_controls_enforceable"],
    [],  # jobq_notify_waited's new body: the undoing of its first version drops it
    ["ALTER TABLE public.workers DROP COLUMN clock_skew"],
    ["ALTER TABLE public.workers DROP COLUMN clock_base"],
    ["DROP SEQUENCE public.job_waiters_gone"],
    [
        "DROP TRIGGER jobs_external_status ON public.jobs",
        "ALTER TABLE public.jobs ALTER COLUMN status TYPE text, ALTER COLUMN key_scope TYPE text",
        "DROP DOMAIN public.jobq_status, public.jobq_key_scope",
        "ALTER TABLE public.jobs"
        " ADD CONSTRAINT jobs_status_check CHECK (status IN ('PENDING','PROCESSING','COMPLETED','FAILED','CANCELLED')),"
        " ADD CONSTRAINT jobs_key_scope_check CHECK (key_scope IN ('all', 'active', 'ttl', 'released'))",
        "CREATE TRIGGER jobs_external_status BEFORE UPDATE OF status ON public.jobs FOR EACH ROW"
        " WHEN (NEW.rev = OLD.rev AND NEW.status IS DISTINCT FROM OLD.status)"
        " EXECUTE FUNCTION public.jobq_external_status()",
    ],
]


@contextlib.contextmanager
def _public_layout(url: str) -> Iterator[None]:
    """Inside: this code's statements aimed at ``public``, on every migration; on leaving, the
    migrations released after the move to schemas are undone, so ``public`` holds jobq exactly as
    it was before schemas (its first two migrations), with the rows written inside."""
    import jobq.backends.postgres as pg_backend

    assert len(pg_backend.MIGRATIONS) == RELEASED_BEFORE_SCHEMAS + len(UNDO_LATER_MIGRATIONS), (
        "a new PostgreSQL migration: add its undoing to UNDO_LATER_MIGRATIONS"
    )
    real_split = pg_backend.split_url
    with pytest.MonkeyPatch.context() as m:
        # "public" is refused by the URL check; here it stands for the old, unqualified layout.
        m.setattr(pg_backend, "split_url", lambda url: dataclasses.replace(real_split(url), schema="public"))
        yield
    with raw_connect(url, autocommit=True) as conn, conn.transaction():
        for undo in reversed(UNDO_LATER_MIGRATIONS):
            for statement in undo:
                conn.execute(statement)
        conn.execute("DELETE FROM public.jobq_schema WHERE version > %s", (RELEASED_BEFORE_SCHEMAS,))


def _fill(q: jobq.Queue, clock: FakeClock) -> dict[str, int]:
    ids = {name: q.enqueue({"name": name}, key=f"k-{name}") for name in ("done", "failed", "held", "waiting", "gone")}
    q.enqueue_many([{"n": n} for n in range(20)], queue="bulk")
    q.register_worker(_worker("old-worker", socket.gethostname(), os.getpid(), "table", clock.now))
    for _ in range(3):
        job = q.claim("old-worker", lease=300, queue="default")
        assert job is not None
        if job.id == ids["done"]:
            q.complete(job, result={"ok": True})
        elif job.id == ids["failed"]:
            q.fail(job, "boom", retry=False)
    q.cancel(ids["gone"])
    return ids


def test_a_database_of_the_public_layout_is_moved_in_place_with_nothing_lost(
    postgres_url: str, clock: FakeClock
) -> None:
    with _public_layout(postgres_url), jobq.Queue(postgres_url, clock=clock) as old:
        ids = _fill(old, clock)
        before = _snapshot(old)
        held = old.get(ids["held"])
    assert _tables_by_schema(postgres_url) == {"public": JOBQ_TABLES - LATER_TABLES}  # schema 2
    assert held.status == JobStatus.PROCESSING and before[3]["PENDING"] == 21

    from jobq.backends.postgres import SCHEMA_VERSION

    # Opened by several at once: one moves the tables under the migration lock, the others find them.
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_it() -> None:
        barrier.wait()
        try:
            jobq.Queue(postgres_url).close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with jobq.Queue(postgres_url, clock=clock) as q:
        assert _tables_by_schema(postgres_url) == {"jobq": JOBQ_TABLES}
        assert _snapshot(q) == before
        with raw_connect(postgres_url, autocommit=True) as conn:
            versions = conn.execute("SELECT version FROM jobq_schema ORDER BY version").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        # The moved queue works on: the old lease still fences, keys and the id sequence carry on.
        q.complete(held, result="late but valid")
        assert q.get(ids["held"]).status == JobStatus.COMPLETED
        assert q.enqueue({"name": "again"}, key="k-waiting") == ids["waiting"]
        assert q.enqueue("new") > max(ids.values())
        assert q.claim("new-worker", queue="bulk") is not None


def test_two_schemas_in_one_database_are_two_independent_queues(postgres_url: str, clock: FakeClock) -> None:
    url_a, url_b = _with(postgres_url, "schema=queue_a"), _with(postgres_url, "schema=queue_b")
    with jobq.Queue(url_a, clock=clock) as a, jobq.Queue(url_b, clock=clock) as b:
        # A raw session listening on both channels sees which queue each wake-up belongs to.
        with raw_connect(postgres_url, autocommit=True) as watcher:
            watcher.execute('LISTEN "jobq_wakeup_queue_a"')
            watcher.execute('LISTEN "jobq_wakeup_queue_b"')
            job_a = a.enqueue("for a", key="same-key")
            job_b = b.enqueue("for b", key="same-key")
            heard = [(n.channel, n.payload) for n in watcher.notifies(timeout=30, stop_after=2)]
        assert heard == [("jobq_wakeup_queue_a", "default"), ("jobq_wakeup_queue_b", "default")]
        assert a.get(job_a).payload == "for a" and b.get(job_b).payload == "for b"  # keys are per queue

        a.register_worker(_worker("worker-a", "h", 1, None, clock.now))
        claimed = b.claim("worker-b", lease=5)
        assert claimed is not None and claimed.payload == "for b"
        assert b.claim("worker-b") is None  # a's job is not b's
        assert [w.id for w in a.workers()] == ["worker-a"] and b.workers() == []
        clock.advance(60)
        assert a.rescue_expired() == []  # b's expired lease is not a's to rescue
        assert [r.job_id for r in b.rescue_expired()] == [claimed.id]
        assert a.counts()["PENDING"] == 1 and a.counts()["PROCESSING"] == 0
        assert [e.kind for e in a.events(job_a)] == ["enqueued"]
        listener = a.listener("w", "default")
        try:
            assert listener._channel == "jobq_wakeup_queue_a"  # type: ignore[attr-defined]
        finally:
            listener.close()


# -- kill -9 in the middle of the move --------------------------------------------------------------
SRC = str(Path(__file__).resolve().parents[2] / "src")
#: Where the opening process kills itself (SIGKILL), inside the move's one transaction under the
#: migration lock: after the first table moved, after every table and the function moved, after
#: every later migration ran (COMMIT not sent).
MOVE_KILL_POINTS = ("first_table_moved", "moved", "migrated")
OPEN_AND_DIE = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import jobq
import jobq.backends.ops as ops
import jobq.backends.postgres as pg

point = sys.argv[3]

def die(here):
    if here == point:
        os.kill(os.getpid(), signal.SIGKILL)

class Counted:
    def __init__(self, cur):
        self._cur, self.moved = cur, 0
    def execute(self, query, *args, **kwargs):
        result = self._cur.execute(query, *args, **kwargs)
        text = query if isinstance(query, str) else query.as_string(self._cur)
        if text.startswith("ALTER TABLE public.") and "SET SCHEMA" in text:
            self.moved += 1
            if self.moved == 1:
                die("first_table_moved")
        return result
    def __getattr__(self, name):
        return getattr(self._cur, name)

real_place, real_migrate = pg.place_schema, ops.migrate

def place_schema(cur, schema, *, create):
    placed = real_place(Counted(cur), schema, create=create)
    die("moved")
    return placed

def migrate(*args, **kwargs):
    result = yield from real_migrate(*args, **kwargs)
    die("migrated")
    return result

pg.place_schema, ops.migrate = place_schema, migrate
jobq.Queue(sys.argv[2]).close()
"""


@pytest.mark.slow
def test_a_kill_in_the_middle_of_the_move_loses_nothing_and_the_next_open_completes_it(
    postgres_server: PgServer, clock: FakeClock, tmp_path: Path
) -> None:
    from jobq.backends.postgres import SCHEMA_VERSION

    script = tmp_path / "open_and_die.py"
    script.write_text(OPEN_AND_DIE)
    for point in MOVE_KILL_POINTS:
        # A database per point: the old public layout, filled by the old jobq.
        with fresh_database(postgres_server) as url:
            with _public_layout(url), jobq.Queue(url, clock=clock) as old:
                ids = _fill(old, clock)
                before = _snapshot(old)
                held = old.get(ids["held"])
            legacy = _tables_by_schema(url)

            opened = subprocess.run([sys.executable, str(script), SRC, url, point], capture_output=True, timeout=120)
            assert opened.returncode == -signal.SIGKILL, opened.stderr.decode()
            # Killed inside the transaction: the server rolled all of it back, the lock went with it.
            assert _tables_by_schema(url) == legacy, point

            with jobq.Queue(url, clock=clock) as q:  # the next process to open it completes the move
                assert _tables_by_schema(url) == {"jobq": JOBQ_TABLES}, point
                assert _snapshot(q) == before, point
                with raw_connect(url, autocommit=True) as conn:
                    versions = conn.execute("SELECT version FROM jobq.jobq_schema ORDER BY version").fetchall()
                assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
                q.complete(held, result="the old lease still fences")
                assert q.get(ids["held"]).status == JobStatus.COMPLETED
                assert q.enqueue({"name": "again"}, key="k-waiting") == ids["waiting"]


@pytest.mark.parametrize("write", NOT_A_STATUS_OR_KEY_SCOPE)
def test_a_status_or_key_scope_that_is_not_one_is_refused_in_hand_written_sql(postgres_url: str, write: str) -> None:
    """Schema 18 checks status and key_scope in domains, not in the table's CHECKs (their cost
    a statement: test_postgres_costs): the same values pass, any other is refused, and the row
    stays as it was."""
    import psycopg

    with jobq.Queue(postgres_url) as q:
        job_id = q.enqueue("x")
        with pytest.raises(psycopg.errors.CheckViolation, match=r"domain jobq_(status|key_scope)"):
            write_by_hand(postgres_url, write)
        assert q.get(job_id).status == JobStatus.PENDING and q.count() == 1
        # Every value allowed still passes, and the trigger made again records a status set by hand.
        scopes = ("released", "ttl", "active", "all")
        write_by_hand(postgres_url, *(f"UPDATE jobs SET key_scope = '{s}'" for s in scopes))
        for status in ("PROCESSING", "COMPLETED", "FAILED", "CANCELLED", "PENDING"):
            write_by_hand(postgres_url, f"UPDATE jobs SET status = '{status}' WHERE id = {job_id}")
            assert q.get(job_id).status == JobStatus(status)
        assert [e.kind for e in q.events(job_id)].count("external_update") == 5


def test_schema_18_moves_the_checks_to_domains_without_rewriting_the_jobs_table(
    postgres_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The migration changes the columns' type to a domain with no check yet (text to a domain over
    text: no rewrite), then gives the domains their checks (a scan). The table keeps its file and
    every row, and the queue works on."""
    import jobq.backends.postgres as pg_backend

    current = pg_backend.MIGRATIONS
    with monkeypatch.context() as m:
        m.setattr(pg_backend, "MIGRATIONS", current[:17])
        with jobq.Queue(postgres_url, clock=clock) as old:
            ids = _fill(old, clock)
            before = _snapshot(old)
            held = old.get(ids["held"])
    with raw_connect(postgres_url, autocommit=True) as conn:
        (file_before,) = conn.execute("SELECT pg_relation_filenode('jobs')").fetchone()
        assert conn.execute("SELECT max(version) FROM jobq_schema").fetchone() == (17,)
    with jobq.Queue(postgres_url, clock=clock) as q:
        assert _snapshot(q) == before
        with raw_connect(postgres_url, autocommit=True) as conn:
            assert conn.execute("SELECT pg_relation_filenode('jobs')").fetchone() == (file_before,)
            assert conn.execute("SELECT max(version) FROM jobq_schema").fetchone() == (18,)
        q.complete(held, result="after the migration")
        assert q.get(ids["held"]).status == JobStatus.COMPLETED
        assert q.enqueue({"name": "again"}, key="k-waiting") == ids["waiting"]
        assert q.claim("new-worker", queue="bulk") is not None
