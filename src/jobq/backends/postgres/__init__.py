"""PostgreSQL backend, through psycopg 3 and a small connection pool: the same queue across machines.

Same semantics as the SQLite backend (the contract suite runs unchanged on both); how it differs
inside, and its limits, stated openly:

- One round trip per call: enqueue (jobs without keys, any number; or one job with a key), claim, and the one-job forms
  of heartbeat, complete and fail are each one statement sent alone in autocommit, its events
  (and NOTIFY) carried by data-modifying CTEs (``sql/jobs.sql``, "one statement per call"), where
  BEGIN, the statements and COMMIT would cost three round trips or more. Batches of worker writes,
  repeats, operator actions and reads run in BEGIN ... COMMIT.
- Claim is one statement: a CTE picks due PENDING rows ``FOR NO KEY UPDATE SKIP LOCKED`` in claim order
  (priority, run_at, id) and an ``UPDATE ... RETURNING`` leases them. Concurrent workers never
  wait on each other and never get the same job. A lease token is a random nonce of the claim
  plus the job id, so a claim whose COMMIT reply was lost reads back what it handed out.
- Times are the caller's float UNIX seconds in ``double precision`` columns, exactly as on SQLite.
  Leases therefore compare clocks of different hosts: keep them in sync with NTP (a 30 s lease
  tolerates far more skew than NTP leaves).
- Every worker write is fenced by the lease token and every operator action locks its target rows
  (``FOR UPDATE``, in id order) and is guarded by the status it read. Rows are always locked in id
  order, so two transactions cannot deadlock on each other; a deadlock reported anyway (e.g. by a
  hand-written transaction) is retried.
- Every object lives in a PostgreSQL schema of its own, named by the URL (``?schema=NAME``,
  default ``jobq``; never ``public``): two schemas in one database are two independent queues,
  with their own NOTIFY channel. Statements name tables qualified by the schema, which works
  behind a transaction pooler (no session state). Other options jobq reads from the URL:
  ``pooler=transaction`` and ``listen_url=...`` (see ``url.py``).
- The schema is created and migrated on first open, under ``pg_advisory_xact_lock``, so several
  processes starting at once on an empty database do not race. A database whose jobq tables are
  in ``public`` (a jobq from before schemas) has them moved into the schema then, data and all.
  A trigger records status changes made by hand in SQL (the ``rev`` column did not move) as
  ``external_update`` events.
- Wake-up: the enqueue/resubmit transaction sends ``NOTIFY jobq_wakeup_<schema>`` (payload: the
  queue); each idle worker LISTENs on a dedicated connection (to ``listen_url`` when given; behind
  a transaction pooler without it, idle workers poll instead). Delivery is at commit, so a worker is never
  woken for a job it cannot see yet. A missed notification is covered by polling.
- Connection loss (server restart, failover): the pool drops broken connections and reconnects.
  An operation that failed *before* its COMMIT was sent rolled back on the server, so it is
  retried once on a fresh connection. A statement sent alone commits as it runs, so once sent it
  counts as committing; before sending one, a connection the server already ended while it was
  idle (its last words wait in the socket: a poll, no round trip) is found out and replaced. One
  that failed while committing has an unknown outcome,
  and is settled on a fresh connection: worker writes are repeated (each is idempotent for its
  lease: one that had committed is recognised by its kept token, neither redone nor recorded as
  refused), a claim reads back the jobs its nonce leased, and an enqueue whose jobs all have
  idempotency keys is sent again (each key then names the job the first try made). Operator
  actions and other enqueues raise ``StorageError`` and the caller decides: an ``enqueue``
  without an idempotency key is not safe to repeat (it may insert the job twice), so give jobs a
  key when that matters.
- Text columns cannot hold NUL characters on PostgreSQL: NULs in error messages, actors and
  worker names are replaced by ``\\0``. Payloads and results are JSON, where NUL is escaped anyway.
- Payloads are stored as text (not ``jsonb``), so a search matches the same text on both backends.
- Connections are never carried across ``fork()``: a forked child opens its own pool.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import select
import threading
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self, TypeVar, cast

import psycopg
import psycopg.errors
from psycopg import generators, pq
from psycopg.abc import PQGen
from psycopg.abc import Transformer as AdaptTransformer
from psycopg.adapt import PyFormat, Transformer
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from jobq.backends import BACKUP_ELSEWHERE, ops, store
from jobq.backends.base import Clock, Completion, Listener, NewJob, QueueCopy
from jobq.backends.common import clock_offset_of, process_id
from jobq.backends.postgres.caller import CallerCheck, identity
from jobq.backends.postgres.listener import FinishListener, PollingListener, PostgresListener
from jobq.backends.postgres.lockwatch import (
    LOCK_WAIT_NOTICE_SECONDS,
    Q_BLOCKING,
    LockWatch,
    describe_holder,
    gave_up_text,
)
from jobq.backends.postgres.schema import MIGRATIONS, SCHEMA_VERSION, place_schema, qualify
from jobq.backends.postgres.url import SCHEMA_DEFAULT, PgOptions, split_url
from jobq.backends.statements import STATIC_FRAGMENTS, Dialect, Params, load_statements
from jobq.backends.store import MakeOp, SqlStore
from jobq.config import CLOCK_SAMPLES
from jobq.errors import ConfigError, OutcomeUnknown, StorageError
from jobq.job import Job
from jobq.redact import redact_text

__all__ = ["SCHEMA_VERSION", "PostgresBackend", "describe_url", "storage_error"]

T = TypeVar("T")
Cursor = psycopg.Cursor[tuple[Any, ...]]
Connection = psycopg.Connection[tuple[Any, ...]]


class AloneStatements:
    """What ``PooledConnection.run_alone`` and ``AsyncPooledConnection.arun_alone`` share: the
    parameters dumped by psycopg's own Transformer, the statements a connection has prepared
    under jobq's names, and the result read as psycopg's cursor reads it. Only the waits differ
    (``Connection.wait`` and ``AsyncConnection.wait`` on the same protocol generator).

    For the statements of the per-job API, run once or twice a job: the cursor's bookkeeping
    around them (the query parsed for its placeholders, psycopg's prepare manager, the result's
    description) cost ~65 us of the client's ~210 us of CPU a job (raw's claim+complete through
    a cursor: 146 us a job, the same statements this way: 79; issue 13). As psycopg does, a
    statement is prepared on the server once the connection has run it ``prepare_threshold``
    times (never with ``prepare_threshold=none``: behind a transaction pooler), under a name of
    jobq's own, in a round trip of its own before the statement (a connection lost then is lost
    before anything that commits was sent); past ``ALONE_PREPARED_MAX`` statements on one
    connection the others are sent unprepared.

    ``psycopg.generators`` (the protocol steps psycopg's cursors run, C in psycopg[binary]) is
    not in psycopg's documented API: its version is locked (uv.lock), and the contract suite
    runs every per-job statement through here."""

    connecting_since = 0.0
    """When this connection began to connect (``time.monotonic()``, set by ``connect``): see
    ``_lost_again``."""
    _alone_adapter: AdaptTransformer | None = None
    _alone_runs: dict[tuple[bytes, tuple[int, ...]], int] = {}
    """Per statement and parameter types: how many times it was sent alone on this connection
    (the class's empty dict until the first run makes the connection's own)."""
    _alone_names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
    """The same keys: the statement's name on the server, once prepared."""
    prepare_threshold: int | None
    pgconn: pq.abc.PGconn

    if TYPE_CHECKING:  # psycopg's BaseConnection's: declared here, never defined (it would shadow it)

        def _check_connection_ok(self) -> None: ...

    def _alone_steps(
        self, sql: str, params: Params, attempt: _Attempt
    ) -> Generator[PQGen[list[pq.abc.PGresult]], list[pq.abc.PGresult], list[tuple[Any, ...]]]:
        """The protocol steps of one statement sent alone, for ``run_alone`` and ``arun_alone`` to
        drive under the connection's lock: each step yielded is psycopg's generator for one round
        trip, and is sent back its results (``Connection.wait``, or ``AsyncConnection.wait``
        awaited). The optional prepare, then the statement; returns its rows."""
        query, names = _numbered(sql)
        adapter = self._alone_adapter
        if adapter is None:
            adapter = self._alone_adapter = Transformer(self)  # type: ignore[arg-type]  # a connection
            self._alone_runs, self._alone_names = {}, {}
        values = adapter.dump_sequence([params[n] for n in names], [_AUTO] * len(names))
        types, formats = tuple(adapter.types or ()), adapter.formats
        # Its name on the server (None: sent unprepared), or the name to prepare it under first.
        name = fresh = None
        threshold = self.prepare_threshold
        if threshold is not None:
            key = (query, types)
            prepared = self._alone_names
            name = prepared.get(key)
            if name is None:
                runs = self._alone_runs[key] = self._alone_runs.get(key, 0) + 1
                # Past the threshold only once: a statement left unprepared at the cap stays so.
                if runs == threshold + 1 and len(prepared) < ALONE_PREPARED_MAX:
                    fresh = b"_jobq_%d" % len(prepared)
        pgconn = self.pgconn
        if pgconn.status != _CONNECTION_OK:
            self._check_connection_ok()  # raises, as a cursor's execute would
        if fresh is not None:
            pgconn.send_prepare(fresh, query, param_types=types)
            self._result_of((yield generators.execute(pgconn)))
            name = self._alone_names[query, types] = fresh
        attempt.committing = True
        if name is None:
            pgconn.send_query_params(query, values, param_formats=formats, param_types=types, result_format=_BINARY)
        else:
            pgconn.send_query_prepared(name, values, param_formats=formats, result_format=_BINARY)
        result = self._result_of((yield generators.execute(pgconn)))
        if result.status != _TUPLES_OK:
            return []
        adapter.set_pgresult(result)
        return adapter.load_rows(0, result.ntuples, tuple)

    def _result_of(self, results: list[pq.abc.PGresult]) -> pq.abc.PGresult:
        """The last of a statement's results; an error as psycopg's cursor raises it."""
        for result in results:
            status = result.status
            if status != _TUPLES_OK and status != _COMMAND_OK:
                if status == pq.ExecStatus.FATAL_ERROR:
                    encoding = cast("psycopg.BaseConnection[Any]", self).info.encoding
                    raise psycopg.errors.error_from_result(result, encoding=encoding)
                raise psycopg.InternalError(f"unexpected result status: {pq.ExecStatus(status).name}")
        if not results:
            raise psycopg.InternalError("got no result from the statement")
        return results[-1]


class PooledConnection(AloneStatements, psycopg.Connection[tuple[Any, ...]]):
    """A connection of jobq's pool, with one cursor that runs jobq's statements on it (but the
    one-statement writes sent alone: ``run_alone``, without a cursor).

    A cursor made per statement (psycopg sets up its adapters and row maker each time) was ~55 of
    the ~300 Python calls of a per-job claim+complete (issue 13). The cursor is used by whoever
    holds the connection, one thread at a time, and goes with the connection; it keeps the last
    statement's result until the next one (one result per pooled connection).

    Its results come in binary: psycopg unpacks a double precision rather than parsing its text
    (the ops page's 13,000 recent jobs' times, four floats each: 7 ms against 18, issue 13). Every
    statement of jobq's returns built-in types that psycopg loads from binary as it does from text
    (a type without a binary loader would come back as bytes: the contract suite would show it)."""

    _statement_cursor: Cursor | None = None

    @classmethod
    def connect(cls, *args: Any, **kwargs: Any) -> Self:
        started = time.monotonic()
        conn = super().connect(*args, **kwargs)
        conn.connecting_since = started
        return conn

    def statement_cursor(self) -> Cursor:
        cur = self._statement_cursor
        if cur is None:
            cur = self._statement_cursor = self.cursor(binary=True)
        return cur

    def run_alone(self, sql: str, params: Params, attempt: _Attempt) -> list[tuple[Any, ...]]:
        """``sql`` with ``params``, in autocommit, and its rows: what ``statement_cursor().execute``
        and ``fetchall`` do, with the same adapters, without the cursor (``AloneStatements``).
        ``attempt.committing`` is set once nothing but the statement itself is left to send."""
        steps = self._alone_steps(sql, params, attempt)
        with self.lock:
            try:
                wait = next(steps)
                while True:
                    wait = steps.send(self.wait(wait))
            except StopIteration as done:
                rows: list[tuple[Any, ...]] = done.value
                return rows


ALONE_PREPARED_MAX = 64
"""Statements ``PooledConnection.run_alone`` prepares on one connection (the per-job API's: a
claim's statement per list of queues, a completion's, an enqueue's); more are sent unprepared."""
_AUTO = PyFormat.AUTO
_BINARY = pq.Format.BINARY
_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_CONNECTION_OK = pq.ConnStatus.OK
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%|%")
_NUMBERED: dict[str, tuple[bytes, tuple[str, ...]]] = {}
NUMBERED_CACHED_MAX = 1024


def _numbered(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """``sql`` with its ``%(name)s`` placeholders numbered for the server (``$1``, ``$2``...; a
    name used twice keeps its number) and ``%%`` made ``%``, and the names in their numbers'
    order, as psycopg converts a query with a dict of parameters (cached per statement)."""
    done = _NUMBERED.get(sql)
    if done is not None:
        return done
    if len(_NUMBERED) >= NUMBERED_CACHED_MAX:  # statements made per list of queues: bounded
        _NUMBERED.clear()
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        name = m.group(1)
        if name is None:
            if m.group(0) == "%%":
                return "%"
            raise ValueError(f"only %(name)s placeholders may be sent alone: {sql[:80]!r}")
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    done = _NUMBERED[sql] = (_PLACEHOLDER.sub(number, sql).encode(), tuple(names))
    return done


POSTGRES_MIN_VERSION_NUM = 130000
"""The oldest server tested (and ``DROP DATABASE ... WITH (FORCE)``, used by the tests, needs 13)."""
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4
STICKY_CONNECTION_SECONDS = 60.0
"""How long a backend keeps one pooled connection out for itself (``PostgresBackend._take``)
before it hands it back to the pool and takes one again, so that the pool's rules on a
connection's age apply to it too."""
CONNECT_TIMEOUT_SECONDS = 10
DEADLOCK_RETRIES = 5
#: Key of the advisory lock that serialises schema migrations (per database, all schemas).
MIGRATION_LOCK_KEY = 0x6A6F6271  # "jobq"

Q_NOTIFY = "SELECT pg_notify(%s, %s)"


LOCK_WAIT_COUNTED_SECONDS = 0.25
"""A one-statement heartbeat adds to the lease the time it waited for its row lock, when longer
than this (shorter waits cost less than a lease that no longer equals the caller's clock)."""


def _counted_wait(since: str) -> str:
    """Seconds from ``since()`` (``statement_timestamp``: this statement's own lock waits;
    ``transaction_timestamp``: also the earlier statements' of one pipeline, BEGIN sent with
    them, so the transaction began when the caller read its clock) to now, when over
    LOCK_WAIT_COUNTED_SECONDS; else 0."""
    wait = f"extract(epoch FROM clock_timestamp() - {since}())::double precision"
    return f"(CASE WHEN {wait} > {LOCK_WAIT_COUNTED_SECONDS} THEN {wait} ELSE 0 END)"


def _waiters_gate(schema: str) -> str:
    """Whether anyone may be waiting for a job at all: registrations made (``job_waiters``' id
    sequence, taken by each INSERT before it commits) outnumber those gone (``job_waiters_gone``,
    counted as each waiter's row is deleted). A finishing statement calls the waiters' check
    (``jobq_notify_waited``, a plpgsql call for its fresh snapshot: ~25 of a completion's ~91 us
    on the server, its largest part, issue 13) only while it holds.

    Sequences are read as they stand, under no snapshot, so the gate sees a registration that
    committed after the statement began, as the check itself must (see the function). The gone
    count is read first: both only grow, so a waiter that registered and left between the two
    reads can open the gate, never shut it. Each miscount (a crashed waiter's row, a count lost
    to a race) leaves the gate open, never shut; ``waiters_settle`` closes it again once no
    registration is left. Sequences in the schema of the tables (``place_schema`` moves them with
    their table: the gone one is OWNED BY it)."""
    gone = f"coalesce(pg_sequence_last_value('{schema}.job_waiters_gone'), 0)"
    made = f"coalesce(pg_sequence_last_value('{schema}.job_waiters_id_seq'), 0)"
    return f"({gone} < {made})"


_STATEMENT = re.compile(r"\{sql:(\w+)\}")


def _embed(text: str, sql: dict[str, str]) -> str:
    """``text`` with each ``{sql:NAME}`` replaced by the named statement, itself embedded."""
    return _STATEMENT.sub(lambda m: _embed(sql[m.group(1)], sql), text)


class PostgresDialect(Dialect):
    """PostgreSQL's SQL: ``%(name)s`` parameters, arrays for lists, rows locked as they are read;
    tables qualified by the queue's schema."""

    locks_rows = True

    def __init__(self, schema: str = SCHEMA_DEFAULT) -> None:
        self.schema = schema
        self.channel = PgOptions(libpq_url="", schema=schema).channel
        self.done_channel = PgOptions(libpq_url="", schema=schema).done_channel
        fragments = {
            **STATIC_FRAGMENTS,
            "wake_channel": self.channel,
            "done_channel": self.done_channel,
            "notify_waited": f"{schema}.jobq_notify_waited",
            "waiters_made": f"{schema}.job_waiters_id_seq",
            "waiters_gone": f"{schema}.job_waiters_gone",
            "waiters_gate": _waiters_gate(schema),
            "lock_wait": _counted_wait("statement_timestamp"),
            "txn_wait": _counted_wait("transaction_timestamp"),
        }
        sql = load_statements(Path(__file__).parent / "sql", fragments)
        # The one-statement forms embed the named statements they extend ({sql:complete}): one copy
        # of every fence and guard. An embedded statement may embed others in turn (complete
        # embeds lock_to_finish).
        # Then every table name is qualified by the queue's schema (see schema.qualify).
        self.sql = {name: qualify(_embed(text, sql), schema) for name, text in sql.items()}
        self._rendered = {}
        self._for_queues = {}

    def param(self, name: str) -> str:
        return f"%({name})s"

    def any_of(self, column: str, name: str, values: Sequence[Any], params: Params) -> str:
        if not values:
            return "FALSE"
        if len(values) == 1:
            # An equality lets the planner walk an index in order and stop at LIMIT; "= ANY(array)"
            # made the claim sort every pending row (about 6x slower with 20,000 waiting jobs).
            params[name] = values[0]
            return f"{column} = %({name})s"
        params[name] = list(values)
        return f"{column} = ANY(%({name})s)"

    def ids(self, job_ids: Sequence[int]) -> Any:
        # An array parameter (bigint[]): ``= ANY(...)`` and ``unnest(...)`` read it.
        return [int(i) for i in job_ids]

    def event_items(self, job_ids: Sequence[int], details: Sequence[str | None]) -> Params:
        # Two arrays of the same length, unnested together.
        return {"ids": self.ids(job_ids), "details": list(details)}

    def text(self, value: str | None) -> str | None:
        """PostgreSQL text cannot hold NUL: make it visible instead of failing the write."""
        return value.replace("\x00", "\\0") if value is not None and "\x00" in value else value

    def like(self, column: str, name: str, params: Params) -> str:
        # ILIKE folds every letter (with the database's ctype: C.UTF-8 or a language's locale).
        return f"{column} ILIKE %({name})s ESCAPE '\\'"

    def order(self, sort: str, descending: bool) -> str:
        # Sort like SQLite: NULLs are the smallest values, text compares by code point. The id is
        # never NULL (the primary key), so it takes no NULLS clause: with one, its index (ASC NULLS
        # LAST, or DESC NULLS FIRST read backwards) could not give the order, and the manager's
        # first list sorted every job of its statuses (200,000 at 10,000,000 stored: 460 ms,
        # against 0.3 ms read backwards along the index).
        direction = "DESC NULLS LAST" if descending else "ASC NULLS FIRST"
        by_id = "id DESC" if descending else "id ASC"
        if sort == "id":
            return by_id
        column = 'status COLLATE "C"' if sort == "status" else sort
        return f"{column} {direction}, {by_id}"


_DIALECTS: dict[str, PostgresDialect] = {}
_DIALECTS_LOCK = threading.Lock()


def dialect_for(schema: str) -> PostgresDialect:
    """The dialect of the queue in ``schema`` (one per schema and process: statements render once)."""
    with _DIALECTS_LOCK:
        dialect = _DIALECTS.get(schema)
        if dialect is None:
            dialect = _DIALECTS[schema] = PostgresDialect(schema)
        return dialect


DIALECT = dialect_for(SCHEMA_DEFAULT)
"""The default schema's dialect."""


def describe_url(url: str) -> str:
    """``host:port/dbname`` of a PostgreSQL URL, for messages (never the password)."""
    try:
        info = conninfo_to_dict(split_url(url).libpq_url)
    except (psycopg.ProgrammingError, ConfigError):
        return "PostgreSQL"
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    port = str(info.get("port") or "5432")
    dbname = str(info.get("dbname") or info.get("user") or "postgres")
    # A password with an unescaped "@" makes libpq read part of it as the host: mask it there too.
    return redact_text(f"{host}:{port}/{dbname}", url)


def _reason(exc: BaseException) -> str:
    """One readable line from a psycopg error (libpq's messages span several lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if "failed: " in text:  # 'connection failed: connection to server at "h", port p failed: REASON'
        text = text.rsplit("failed: ", 1)[1]
    for prefix in ("FATAL:", "ERROR:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return " ".join(text.split())


def outcome_unknown(exc: BaseException, url: str) -> OutcomeUnknown:
    """The connection was lost after COMMIT was sent, and the write has no way to settle that."""
    reason = redact_text(_reason(exc), url)
    return OutcomeUnknown(
        f"PostgreSQL at {describe_url(url)}: connection lost while committing, the outcome is unknown ({reason})"
    )


def storage_error(exc: BaseException, url: str, *, connecting: bool = False) -> StorageError:
    """Turn a psycopg error into a StorageError of one readable line naming the server."""
    where = describe_url(url)
    reason = redact_text(_reason(exc), url)  # libpq may quote parts of the URL it could not use
    if connecting:
        return StorageError(f"cannot connect to PostgreSQL at {where}: {reason}")
    return StorageError(f"PostgreSQL at {where}: {reason}")


#: Server settings of jobq's own connections (libpq ``options``), unless the URL sets ``options``.
#: JIT off: jobq's statements are short, and JIT compiled a plan the planner thought costly anew on
#: every run: the ops page's history read at 10,000,000 stored jobs took 163 ms with it and 99 ms
#: without (20 ms of compiling per run of one statement), ``stats`` 79 ms and 49 ms (issue 13).
#: ``idle_in_transaction_session_timeout``: the server ends a jobq session that sits inside an open
#: transaction this long, waiting for its client (every jobq transaction sends its statements back
#: to back: milliseconds). Such a client is frozen (SIGSTOP, a paused VM, a debugger): its locks
#: held a concurrency-limited queue's control row (no worker of any host could claim from it), a
#: schedule's row, or jobs that rescuers then pass over (SKIP LOCKED), for as long as it stayed
#: frozen. Ended, its transaction rolls back; continued, the client finds its commit's outcome
#: unknown and settles it like a lost reply (nothing was committed).
IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000
SESSION_OPTIONS = f"-c jit=off -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"


def _connect_kwargs(
    url: str, prepare_threshold: int | None = 5, *, session: bool = False, lock_timeout_ms: int | None = None
) -> dict[str, Any]:
    """Defaults for every connection, unless the URL (a libpq one: no jobq options) says otherwise.
    ``session``: also ``SESSION_OPTIONS`` (not behind a transaction pooler: PgBouncer refuses the
    ``options`` startup parameter, and a setting would not follow a transaction to its server),
    and ``lock_timeout_ms`` (the URL's ``lock_timeout``) when given."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        # libpq's message quotes the token it could not parse, which may be the password.
        raise ConfigError(f"bad PostgreSQL URL: {redact_text(_reason(exc), url)}") from None
    # None behind a transaction pooler: a statement prepared on one server connection is unknown
    # to the next transaction's (PgBouncer before 1.21, or without max_prepared_statements).
    kwargs: dict[str, Any] = {"prepare_threshold": prepare_threshold}
    if "connect_timeout" not in info:
        kwargs["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    if "application_name" not in info:
        kwargs["application_name"] = "jobq"
    # TCP keepalives: a LISTEN connection to a host that vanished would otherwise wait forever.
    if "keepalives" not in info:
        kwargs.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
    if session and "options" not in info:
        # After PGOPTIONS, which an options keyword would replace: the environment's settings stay.
        lock_timeout = f" -c lock_timeout={lock_timeout_ms}" if lock_timeout_ms else ""
        kwargs["options"] = f"{os.environ.get('PGOPTIONS', '')} {SESSION_OPTIONS}{lock_timeout}".strip()
    return kwargs


class _Attempt:
    """Tracks whether COMMIT was sent, to know if a failed transaction may be retried."""

    __slots__ = ("committing",)

    def __init__(self) -> None:
        self.committing = False


# Pools inherited across fork() belong to the parent: never close or reuse them in a child, and
# keep a reference so that garbage collection does not touch their sockets either.
_ABANDONED_POOLS: list[object] = []


class PostgresBackend(SqlStore):
    """The scale-out backend. See the module docstring for its design and limits."""

    single_host = False  # workers may run on many machines: only leases tell who is gone
    clock_reading: tuple[float, float] | None = None  # measured at open (_migrate)
    generation = 0  # a server's database is never replaced under a connection (Backend.generation)
    dialect: PostgresDialect

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Connect to ``url`` and create or migrate the schema.

        With ``create=False`` a database without jobq's tables is an error instead (read-only
        viewers such as the ops app say so rather than show an empty queue).
        Raises ConfigError for a malformed URL (or jobq option), StorageError when the server
        cannot be used.
        """
        self.url = url  # as given: shown (redacted) in messages
        self.options = split_url(url)
        self._conninfo = self.options.libpq_url  # what libpq gets: without jobq's own options
        self.dialect = dialect_for(self.options.schema)
        self._create = create
        self._kwargs = _connect_kwargs(
            self._conninfo,
            self.options.prepare_threshold,
            session=not self.options.behind_transaction_pooler,
            lock_timeout_ms=self.options.lock_timeout_ms,
        )
        self._lock = threading.Lock()
        self._pool: ConnectionPool[PooledConnection] | None = None
        self._pid = -1
        self._sticky_lock = threading.Lock()  # held by the thread that uses the sticky connection
        self._sticky: PooledConnection | None = None  # see _take; always of self._pool
        self._sticky_until = 0.0  # time.monotonic() when it goes back to the pool
        # The transactions in flight, for this process's LockWatch (made with its pool): noted
        # by _run, and by the async store's, while they run.
        self.in_flight: dict[object, float] = {}
        self._in_flight_pid = process_id()
        self._watch: LockWatch | None = None
        self._caller = CallerCheck(describe_url(url), self._identity)
        # Migrate now on a direct connection: a wrong URL or a server that is down is reported at
        # open time, in one line, like SQLite does; the pool itself opens on first use.
        self._migrate()

    # -- connections and transactions ------------------------------------------------------
    def _identity(self) -> tuple[Any, ...]:
        """Which database on which server jobq's own connections reach (see caller.py)."""
        try:
            with self._get_pool().connection() as conn:
                return identity(conn)
        except PoolTimeout:
            raise self._cannot_connect() from None
        except psycopg.Error as exc:
            raise storage_error(exc, self.url) from None

    def _connect(self) -> Connection:
        try:
            return psycopg.connect(self._conninfo, autocommit=True, **self._kwargs)
        except psycopg.Error as exc:
            raise storage_error(exc, self.url, connecting=True) from None

    def _migrate(self) -> None:
        conn = self._connect()
        try:
            with conn.transaction():
                # Transaction-scoped: released at commit, also if this process dies meanwhile.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
                version_num = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
                if version_num < POSTGRES_MIN_VERSION_NUM:
                    raise StorageError(
                        f"PostgreSQL at {describe_url(self.url)} is version {version_num // 10000}: "
                        "jobq needs 13 or newer"
                    )
                schema = self.options.schema
                with conn.cursor() as cur:
                    where = f"the PostgreSQL database {describe_url(self.url)} (schema {schema})"
                    if not place_schema(cur, schema, create=self._create):
                        raise StorageError(f"no jobq queue in {where} (start a producer or worker to create it)")
                    # Migrations create their objects in the queue's schema: they name them
                    # unqualified, and search_path is the schema alone for this transaction.
                    cur.execute("SELECT set_config('search_path', %s, true)", (schema,))
                    _drive_on(
                        cur,
                        lambda: ops.migrate(self.dialect, MIGRATIONS, where, create=self._create),
                        self.dialect.channel,
                    )
            # Hosts' clocks may differ: leases and run times written by one host are read by
            # another's rescuer and claims, so a Queue with the default clock reads the server's
            # time (Queue.clock_offset). Measured here, on the connection already open.
            with conn.cursor() as cur:
                self.clock_reading = clock_offset_of(
                    lambda: _drive_on(cur, lambda: ops.store_time(self.dialect), self.dialect.channel), CLOCK_SAMPLES
                )
        except psycopg.Error as exc:
            raise storage_error(exc, self.url) from None
        finally:
            conn.close()

    def _get_pool(self) -> ConnectionPool[PooledConnection]:
        current = self._pool  # the usual case without the lock: this process's pool, open
        if current is not None and self._pid == process_id():
            return current
        with self._lock:
            if self._pid == process_id():
                if self._pool is not None:
                    return self._pool
            else:
                # A new process (after fork(), or before the first pool): what it inherited is
                # the parent's, kept referenced and never used, the pool and the sticky
                # connection, and the lock (a thread of the parent may have held it at the fork:
                # it would stay held here for good).
                for inherited in (self._pool, self._sticky):
                    if inherited is not None:
                        _ABANDONED_POOLS.append(inherited)
                self._sticky, self._sticky_lock = None, threading.Lock()
            pool: ConnectionPool[PooledConnection] = ConnectionPool(
                self._conninfo,
                connection_class=PooledConnection,
                kwargs={"autocommit": True, **self._kwargs},
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                timeout=self.options.pool_timeout_seconds,
                name="jobq",
                open=False,
            )
            pool.open(wait=False)
            self._pool = pool
            self._pid = process_id()
            self._start_lock_watch()
            return pool

    def start_lock_watch(self) -> None:
        """This process's ``LockWatch``, started unless it runs (the async store's pool calls
        this: an asyncio application may never open the blocking pool)."""
        with self._lock:
            self._start_lock_watch()

    def _start_lock_watch(self) -> None:
        if self._watch is not None and self._watch.pid == process_id():
            return
        if self.options.behind_transaction_pooler:
            return  # a pooler hands out a backend pid of its own: the server knows no such session
        if self._in_flight_pid != process_id():
            # A new process: its thread is not inherited by fork(), nor are the parent's
            # transactions in flight, whose entries the fork copied. (In the same process, after
            # close(), they are this process's own, ended by the threads that run them.)
            self.in_flight.clear()
            self._in_flight_pid = process_id()
        self._watch = LockWatch(self.in_flight, self._connect)

    def _run(self, make: MakeOp[T], *, write: bool = True, on_unknown: MakeOp[T] | None = None) -> T:
        """Run the operation ``make()`` as one transaction on a pooled connection (see ``_drive``)."""
        d = self.dialect
        return self._on_connection(
            lambda conn, attempt: _drive(conn, make, attempt, d.channel, d.sql["notify_waited"], write=write),
            write=write,
            on_unknown=on_unknown,
        )

    def _on_connection(
        self,
        body: Callable[[PooledConnection, _Attempt], T],
        *,
        write: bool = True,
        on_unknown: MakeOp[T] | None = None,
    ) -> T:
        """``body(conn, attempt)``, one transaction, on a pooled connection: ``_run``'s, or a
        statement of the per-job API sent alone (``_send_alone``).

        Retries: a deadlock or serialisation failure rolled the whole transaction back, so it is
        run again; a lost connection is retried once on a fresh one, but only if nothing that
        commits had been sent (COMMIT, or a statement sent alone). If it had, the outcome is
        unknown: ``on_unknown`` then finds out what happened in a new transaction (a worker write
        is simply repeated, being idempotent for its lease; a claim reads back what it handed out);
        without it, StorageError tells the caller.
        """
        lost: _Lost | None = None
        deadlocks = 0
        while True:
            pool = self._get_pool()
            attempt = _Attempt()
            conn: PooledConnection | None = None
            try:
                # getconn/putconn, not pool.connection(): its context managers (and the no-op COMMIT
                # of `with conn:` in autocommit) were ~20 of a per-job claim+complete's ~340 Python
                # calls. A transaction is ended by conn.transaction(); putconn rolls back or drops
                # a connection left in any other state.
                conn, sticky = self._take(pool)
                running = self.in_flight  # whom it waits for is named if it waits long (lockwatch.py)
                running[conn] = time.monotonic()
                try:
                    return body(conn, attempt)
                finally:
                    del running[conn]
                    self._give(pool, conn, sticky)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                deadlocks += 1
                if deadlocks > DEADLOCK_RETRIES:
                    raise storage_error(exc, self.url) from None
                time.sleep(0.01 * deadlocks * (0.5 + random.random()))
            except PoolTimeout:
                raise self._cannot_connect() from None
            except psycopg.errors.LockNotAvailable:  # an OperationalError, but a server's answer
                raise self.gave_up() from None
            except psycopg.OperationalError as exc:
                if write and attempt.committing and on_unknown is not None:
                    pool.check()  # drop the dead connections, then ask a fresh one what happened
                    return self._run(on_unknown, write=True)
                if _lost_again(lost, conn) or (write and attempt.committing) or _is_server_error(exc):
                    if write and attempt.committing:
                        raise outcome_unknown(exc, self.url) from None
                    raise storage_error(exc, self.url) from None
                lost = _one_more_loss(lost)
                pool.check()  # drop the other dead connections too (a restart cuts them all)
            except psycopg.errors.IdleInTransactionSessionTimeout as exc:
                # The server ended this session, frozen inside the transaction past
                # IDLE_IN_TRANSACTION_TIMEOUT_MS, and rolled the transaction back: nothing of it
                # committed, even if its COMMIT was then sent. Run it again on a fresh connection.
                if _lost_again(lost, conn):
                    raise storage_error(exc, self.url) from None
                lost = _one_more_loss(lost)
                pool.check()
            except psycopg.Error as exc:
                raise storage_error(exc, self.url) from None

    def _take(self, pool: ConnectionPool[PooledConnection]) -> tuple[PooledConnection, bool]:
        """A connection for one transaction, and whether it is the sticky one. The backend keeps
        one pooled connection out for itself: the thread that finds it free uses it without the
        pool's getconn and putconn (~20 us of a ~130 us enqueue's CPU, locks and checks of a pool
        shared by threads: issue 13); a thread that finds it in use takes one from the pool."""
        if not self._sticky_lock.acquire(blocking=False):
            return pool.getconn(), False
        try:
            conn = self._sticky
            if conn is None or time.monotonic() >= self._sticky_until:
                self._sticky = None
                if conn is not None:
                    pool.putconn(conn)
                conn = self._sticky = pool.getconn()
                self._sticky_until = time.monotonic() + STICKY_CONNECTION_SECONDS
        except BaseException:
            self._sticky_lock.release()
            raise
        return conn, True

    def _give(self, pool: ConnectionPool[PooledConnection], conn: PooledConnection, sticky: bool) -> None:
        """After ``_take``'s transaction: the sticky connection is kept while it is sound and idle
        (the pool's putconn would roll back or drop it otherwise, and so it is given that)."""
        if not sticky:
            pool.putconn(conn)
            return
        try:
            # `conn` is self._sticky: close() changes it only under the lock this thread holds, and
            # a new process's _get_pool before any of its threads took that lock.
            # pgconn's status, not conn.info's: that makes a ConnectionInfo and an enum each time.
            if conn.broken or conn.pgconn.transaction_status != _IDLE:
                self._sticky = None
                pool.putconn(conn)
        finally:
            self._sticky_lock.release()

    # -- the per-job API: its one statement sent as it is -------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], now: float, traces: Sequence[str | None] = ()) -> list[int]:
        # ``ops.enqueue``'s usual case (one job without a key: ``enqueue_one_statement``) sent as
        # it is, as the claim below. No settle of a lost reply: without a key, SqlStore's has
        # none either (the caller is told the outcome is unknown).
        statement = ops.enqueue_one_statement(self.dialect, jobs, now, traces)
        if statement is None:
            return super().enqueue(jobs, now, traces)
        rows = self._on_connection(lambda conn, attempt: _send_alone(conn, attempt, *statement))
        return [int(rows[0][0])]

    def claim(self, worker_id: str, queues: Sequence[str], limit: int, lease_seconds: float, clock: Clock) -> list[Job]:
        # ``ops.claim``'s statement and rows (``claim_flagged_*``) without the plan, the operation's
        # generator and its commands, as SQLite's claim runs its statements directly (issue 13).
        # The same settle of an unknown outcome, and the same claim of controlled queues after.
        d, nonce = self.dialect, store._nonce()  # the store's one source of nonces

        def body(conn: PooledConnection, attempt: _Attempt) -> tuple[ops.Claimed, int]:
            # The clock is read once the connection is held: a lease runs from when it is written.
            statement = ops.claim_flagged_statement(d, worker_id, queues, limit, lease_seconds, clock(), nonce)
            return ops.claim_flagged_rows(_send_alone(conn, attempt, *statement))

        claimed, controlled = self._on_connection(body, on_unknown=self._claimed_back(worker_id, nonce))
        jobs = claimed.build()
        if not controlled or len(jobs) >= limit:
            return jobs
        return self._run_plan(
            self._claim_controlled_too(jobs, controlled, worker_id, queues, limit, lease_seconds, clock, nonce)
        )

    def complete(self, items: Sequence[Completion], clock: Clock, *, repeat: bool = False) -> list[bool]:
        d = self.dialect
        if not ops.complete_in_one(d, items, repeat):
            return super().complete(items, clock, repeat=repeat)
        item = items[0]

        def body(conn: PooledConnection, attempt: _Attempt) -> list[bool]:
            return [bool(_send_alone(conn, attempt, *ops.complete_one_statement(d, item, clock())))]

        return self._on_connection(body, on_unknown=self._completed_again(items, clock))

    def blockers(self, waited: float = LOCK_WAIT_NOTICE_SECONDS) -> list[str]:
        """The sessions holding up the queue's writes: each has made a session of this database
        wait ``waited`` seconds or more for a lock, and holds a lock on a table of the queue's
        schema (an application's transaction left open after a ``SELECT ... FOR UPDATE``). The
        ops app raises them as an alert: the expired leases and waiting jobs they cause follow."""

        def read() -> ops.Op[list[str]]:
            rows = yield ops.Exec(Q_BLOCKING, {"waited": waited, "schema": self.options.schema})
            return [describe_holder(row) for row in rows]

        return self._run(read, write=False)

    def gave_up(self) -> StorageError:
        """A statement waited the URL's ``lock_timeout`` for a lock and gave up (its transaction
        rolled back): one line naming the likely holders, read on a connection of its own."""
        ms = self.options.lock_timeout_ms
        waited = ms / 1000 if ms is not None else None
        try:
            conn: Connection | None = self._connect()
        except StorageError:
            conn = None
        try:
            return StorageError(
                f"PostgreSQL at {describe_url(self.url)}: {gave_up_text(conn, self.options.schema, waited)}"
            )
        finally:
            if conn is not None:
                conn.close()

    def _cannot_connect(self) -> StorageError:
        """The pool gave up waiting: connect directly once to say why, in one line."""
        try:
            psycopg.connect(self._conninfo, autocommit=True, **self._kwargs).close()
        except psycopg.Error as exc:
            return storage_error(exc, self.url, connecting=True)
        return StorageError(
            f"PostgreSQL at {describe_url(self.url)}: no free connection within {self.options.pool_timeout_seconds:g} s"
        )

    def _transaction(self, make: MakeOp[T], *, write: bool, on_unknown: MakeOp[T] | None = None) -> T:
        return self._run(make, write=write, on_unknown=on_unknown)

    def _in_caller_transaction(self, conn: object, make: MakeOp[T]) -> T:
        # The application's connection, in its transaction: see caller.py for what is checked.
        # No retry and no settling of unknown outcomes: the transaction (and its COMMIT) is the
        # caller's. NOTIFY inside it is delivered at that COMMIT, never on a rollback.
        checked = self._caller.check(conn)
        try:
            with checked.cursor(row_factory=tuple_row) as cur:
                return _drive_on(cur, make, self.dialect.channel, self.dialect.sql["notify_waited"])
        except psycopg.Error as exc:
            raise StorageError(f"{storage_error(exc, self.url)} (in your transaction: roll it back)") from None

    async def _in_async_caller_transaction(self, conn: object, make: MakeOp[T]) -> T:
        """``_in_caller_transaction`` on a ``psycopg.AsyncConnection``: the same generator, driven
        by ``ops.adrive`` (the same rules, no second copy), never committed here."""
        checked = await self._caller.acheck(conn)
        channel, done = self.dialect.channel, self.dialect.sql["notify_waited"]

        try:
            async with checked.cursor(row_factory=tuple_row) as cur:

                async def run(command: ops.Command) -> ops.Rows:
                    if isinstance(command, ops.Exec):
                        if command.several:
                            return await aexecute_several(cur, command)
                        await cur.execute(command.sql, command.params or None)
                        return await cur.fetchall() if cur.description is not None else []
                    if isinstance(command, ops.ExecMany):
                        rows: ops.Rows = []
                        for params in command.params:  # the caller's few jobs: no pipeline
                            await cur.execute(command.sql, params)
                            if cur.description is not None:
                                rows.extend(await cur.fetchall())
                        return rows
                    for queue in sorted(command.queues):
                        await cur.execute(Q_NOTIFY, (channel, queue))
                    if command.finished:
                        await cur.execute(done, {"ids": sorted(command.finished)})
                    return []

                return await ops.adrive(make(), run)
        except psycopg.Error as exc:
            raise StorageError(f"{storage_error(exc, self.url)} (in your transaction: roll it back)") from None

    def close(self) -> None:
        with self._lock:
            # Like SQLite's, a closed backend reopens on its next use (a new pool).
            pool, self._pool = self._pool, None
            if pool is not None and self._pid == process_id():
                # The sticky connection back first (once a transaction on it has ended).
                with self._sticky_lock:
                    sticky, self._sticky = self._sticky, None
                if sticky is not None:
                    pool.putconn(sticky)
                pool.close(timeout=5.0)
            watch, self._watch = self._watch, None
            if watch is not None and watch.pid == process_id():
                watch.close()

    def backup(self, dest: str, *, compact: bool = False) -> QueueCopy:
        raise StorageError(BACKUP_ELSEWHERE)

    def async_store(self) -> Any:
        """This queue's operations as coroutines on an asyncio pool (``jobq.AsyncQueue``)."""
        from jobq.backends.postgres.aio import AsyncPostgresStore  # here: aio imports this module

        return AsyncPostgresStore(self)

    # -- wake-up ---------------------------------------------------------------------------
    def listener(self, worker_id: str, queues: Sequence[str]) -> Listener:
        """LISTEN on ``listen_url`` when given, else on the main URL; behind a transaction pooler
        without ``listen_url``, poll (LISTEN needs a session of its own, which a transaction
        pooler does not keep: the notifications would go to another client's server connection)."""
        channel = self.dialect.channel
        if self.options.listen_url is not None:
            url = self.options.listen_url
            return PostgresListener(url, _connect_kwargs(url), queues, channel)
        if self.options.behind_transaction_pooler:
            return PollingListener()
        return PostgresListener(self._conninfo, self._kwargs, queues, channel)

    def finish_waiter(self, job_id: int) -> Listener:
        """Wakes when job ``job_id`` finishes: LISTEN on the done channel (``listen_url`` when
        given); behind a transaction pooler without it, the caller polls."""
        channel = self.dialect.done_channel
        if self.options.listen_url is not None:
            url = self.options.listen_url
            return FinishListener(url, _connect_kwargs(url), channel, job_id)
        if self.options.behind_transaction_pooler:
            return PollingListener()
        return FinishListener(self._conninfo, self._kwargs, channel, job_id)


def _execute_many(cur: Cursor, command: ops.ExecMany) -> ops.Rows:
    """Every row the statement returned, over all parameter sets (psycopg pipelines them)."""
    if not command.params:
        return []
    if len(command.params) == 1:  # one job (the per-job API): a pipeline costs more than it saves
        cur.execute(command.sql, command.params[0])
        return cur.fetchall() if cur.rownumber is not None else []
    cur.executemany(command.sql, command.params, returning=True)
    rows: ops.Rows = []
    while True:
        if cur.rownumber is not None:
            rows.extend(cur.fetchall())
        if not cur.nextset():
            return rows


#: Where one statement of an ``Exec`` with ``several`` ends: a ``;`` at the end of a line.
_STATEMENT_END = re.compile(r";[ \t]*\n")


def _execute_several(cur: Cursor, command: ops.Exec) -> ops.Rows:
    """``command.sql``'s statements in one psycopg pipeline, one round trip: wrapped in BEGIN and
    COMMIT when no transaction is open (a command sent ``alone``), else in the one open. Unlike
    one message of several statements (the simple query protocol), each stays a prepared
    statement: measured on ``claim_concurrency_locked``, 0.75 ms against 1.3 ms, and against
    1.0-1.2 ms for BEGIN, the statements and COMMIT one round trip each. The last one's rows."""
    conn = cur.connection
    own = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    try:
        with conn.pipeline():
            if own:
                conn.execute("BEGIN")
            for sql in _STATEMENT_END.split(command.sql):
                cur.execute(sql, command.params)
            if own:
                conn.execute("COMMIT")
    except BaseException:
        if own:
            _roll_back_open(conn)
        raise
    return cur.fetchall() if cur.rownumber is not None else []


async def aexecute_several(cur: psycopg.AsyncCursor[Any], command: ops.Exec) -> ops.Rows:
    """``_execute_several`` on an asyncio cursor."""
    conn = cur.connection
    own = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    try:
        async with conn.pipeline():
            if own:
                await conn.execute("BEGIN")
            for sql in _STATEMENT_END.split(command.sql):
                await cur.execute(sql, command.params)
            if own:
                await conn.execute("COMMIT")
    except BaseException:
        if own:
            await _aroll_back_open(conn)
        raise
    return await cur.fetchall() if cur.rownumber is not None else []


def _runner(cur: Cursor, channel: str, done_sql: str = "") -> Callable[[ops.Command], ops.Rows]:
    """Executes one command of an operation on ``cur``; wake-ups go to ``channel`` (the queue's
    schema's); ``done_sql`` (the dialect's ``notify_waited``) tells the waiters of the jobs it finished."""

    def run(command: ops.Command) -> ops.Rows:
        if isinstance(command, ops.Exec):
            if command.several:
                return _execute_several(cur, command)
            # No parameters, no placeholder parsing (DDL may hold a literal %). rownumber, not
            # description, tells whether rows came back: description builds a Column per column.
            cur.execute(command.sql, command.params or None)
            return cur.fetchall() if cur.rownumber is not None else []
        if isinstance(command, ops.ExecMany):
            return _execute_many(cur, command)
        for queue in sorted(command.queues):  # delivered at commit: the woken worker sees the jobs
            cur.execute(Q_NOTIFY, (channel, queue))
        if command.finished and done_sql:
            # A NOTIFY only for the jobs someone waits for (job_waiters): each one takes the global
            # notify-queue lock at commit. The statement runs after the finishing writes, with a
            # snapshot of its own: it sees every waiter registered before those writes locked
            # their rows (docs/architecture.md, "Waiting for a result").
            cur.execute(done_sql, {"ids": sorted(command.finished)})
        return []

    return run


def _drive_on(cur: Cursor, make: MakeOp[T], channel: str, done_sql: str = "") -> T:
    """Run the operation ``make()`` on ``cur``, inside the caller's transaction."""
    return ops.drive(make(), _runner(cur, channel, done_sql))


def _send_all(
    op: ops.Op[T], command: ops.Command, run: Callable[[ops.Command], ops.Rows], *, only_alone: bool = False
) -> T:
    """Drive ``op`` from ``command`` on and return its result; with ``only_alone``, every command
    after the first must be sent ``alone`` too (an operation that began outside a transaction)."""
    while True:
        try:
            command = op.send(run(command))
        except StopIteration as stop:
            result: T = stop.value
            return result
        if only_alone and not (isinstance(command, ops.Exec) and command.alone):
            raise RuntimeError("an operation yielded a command in a transaction after one it sent alone")


def _drive(
    conn: PooledConnection, make: MakeOp[T], attempt: _Attempt, channel: str, done_sql: str, *, write: bool = True
) -> T:
    """Run the operation ``make()`` on ``conn`` (in autocommit) as one transaction.

    An operation whose first command is an ``Exec`` sent ``alone`` is one statement, its own
    transaction: one round trip, where BEGIN, the statement and COMMIT cost three (a keyed enqueue
    that lost a race sends its statement again, each its own transaction). Any other runs
    inside BEGIN ... COMMIT. ``attempt.committing`` is set before whatever commits is sent: from
    then on, a lost connection leaves the outcome unknown.

    A read (``write`` false) sends each of its statements alone. jobq runs at READ COMMITTED,
    PostgreSQL's default, where every statement takes a new snapshot inside BEGIN ... COMMIT as
    well: a read of several statements saw no single moment before either, and a read takes no
    lock that must outlast its statement (``get_job_locked``'s FOR KEY SHARE only waits for a
    finishing commit). BEGIN and COMMIT bought two round trips: a one-statement read
    (``Queue.get``, ``counts``) is now one."""
    op = make()
    try:
        command = next(op)
    except StopIteration as stop:
        empty: T = stop.value
        return empty
    run = _runner(conn.statement_cursor(), channel, done_sql)
    if not write:
        return _send_all(op, command, run)
    if isinstance(command, ops.Exec) and command.alone:
        _found_alive(conn)

        def run_alone(command: ops.Command) -> ops.Rows:
            # The worker's other one-statement writes (heartbeat, fail, a keyed enqueue) as the
            # per-job claim and completion: without the cursor (PooledConnection.run_alone).
            statement = alone_statement(command)
            if statement is not None:
                return conn.run_alone(*statement, attempt)
            attempt.committing = True
            return run(command)

        return _send_all(op, command, run_alone, only_alone=True)
    return _in_transaction(conn, op, command, run, attempt)


def alone_statement(command: ops.Command) -> tuple[str, Params] | None:
    """The statement and parameters of a command sent alone that goes without the cursor
    (``run_alone``, ``arun_alone``): one statement with named parameters. None for the others
    (several statements, a list of parameter sets), which the cursor runs."""
    if isinstance(command, ops.Exec) and isinstance(command.params, dict) and not command.several:
        return command.sql, command.params
    return None


def _found_alive(conn: PooledConnection) -> None:
    """Before a statement that commits as it is sent (alone, in autocommit; ``run_alone`` then
    sets ``attempt.committing``): the connection found alive."""
    if _input_waiting(conn):
        # The server spoke on an idle connection: most likely it closed it (a restart, an idle
        # timeout, pg_terminate_backend) and its last words wait in the socket. Find out with a
        # no-op, before the statement is sent: an error here is safe to retry.
        conn.execute("SELECT 1")


def _send_alone(conn: PooledConnection, attempt: _Attempt, sql: str, params: Params) -> ops.Rows:
    """One statement sent alone, its own transaction, without an operation's generator and
    commands: the per-job claim's and completion's (issue 13), whose statements wake whom they
    must themselves."""
    _found_alive(conn)
    return conn.run_alone(sql, params, attempt)


def _in_transaction(
    conn: PooledConnection,
    op: ops.Op[T],
    command: ops.Command,
    run: Callable[[ops.Command], ops.Rows],
    attempt: _Attempt,
) -> T:
    """BEGIN ... COMMIT around the rest of ``op``, in two round trips fewer than psycopg's
    ``transaction()``: BEGIN goes in one pipeline with the first statement, and the wake-ups
    (``Notify``: statements whose rows no operation reads) in one with COMMIT. The waiters' notice
    then runs after every write of the transaction, as it must (``_runner`` says why). A failure
    before COMMIT was sent leaves nothing committed: the transaction is rolled back and may be
    retried."""
    deferred: list[ops.Command] = []

    def run_or_defer(command: ops.Command) -> ops.Rows:
        if isinstance(command, ops.Notify):
            deferred.append(command)
            return []
        return run(command)

    try:
        rows = _begin_with(conn, command, run_or_defer)
        try:
            command = op.send(rows)
        except StopIteration as stop:
            result: T = stop.value
        else:
            result = _send_all(op, command, run_or_defer)
        attempt.committing = True
        if deferred:
            with conn.pipeline():
                for notify in deferred:
                    run(notify)
                conn.statement_cursor().execute(b"COMMIT")
        else:
            conn.statement_cursor().execute(b"COMMIT")
    except BaseException:
        _roll_back_open(conn)
        raise
    return result


def _begin_with(conn: PooledConnection, command: ops.Command, run: Callable[[ops.Command], ops.Rows]) -> ops.Rows:
    """BEGIN, then ``command``: one pipeline, one round trip, for a plain statement (its rows are
    read once the pipeline is synced; before, a cursor in a pipeline has none to show)."""
    cur = conn.statement_cursor()
    plain = isinstance(command, ops.Exec) and not command.several
    if not plain and not (isinstance(command, ops.ExecMany) and command.params):
        cur.execute(b"BEGIN")
        return run(command)
    with conn.pipeline():  # its end syncs it: the results reach the cursor (the last one's)
        cur.execute(b"BEGIN")
        if isinstance(command, ops.ExecMany):
            cur.executemany(command.sql, command.params, returning=True)  # syncs the pipeline itself
        elif isinstance(command, ops.Exec):
            cur.execute(command.sql, command.params or None)
    rows: ops.Rows = []
    while True:  # an ExecMany's every parameter set, as _execute_many
        if cur.rownumber is not None:
            rows.extend(cur.fetchall())
        if not cur.nextset():
            return rows


#: Transaction states in which a failed transaction of jobq's own must be rolled back.
_OPEN = (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)
_IDLE = psycopg.pq.TransactionStatus.IDLE


def _roll_back_open(conn: Connection) -> None:
    """After a failure inside a BEGIN jobq sent: ROLLBACK, so the pool gets an idle connection
    (nothing to do when the connection is gone, or the transaction never began)."""
    if conn.info.transaction_status in _OPEN:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")


async def _aroll_back_open(conn: psycopg.AsyncConnection[Any]) -> None:
    """``_roll_back_open`` on an asyncio connection."""
    if conn.info.transaction_status in _OPEN:
        with contextlib.suppress(psycopg.Error):
            await conn.execute("ROLLBACK")


def _input_waiting(conn: Connection) -> bool:
    """Whether the server sent anything on this idle connection (costs a poll, not a round trip)."""
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return bool(readable)


#: Most lost connections one call goes past (``_lost_again``): more than any of its pools holds,
#: so that only a pool that kept handing out dead connections could reach it.
LOST_CONNECTIONS_MAX = 16


class _Lost(NamedTuple):
    """A call's lost connections so far: when it lost the first (``time.monotonic()``), and how
    many (``_lost_again``)."""

    first_at: float
    losses: int


def _one_more_loss(lost: _Lost | None) -> _Lost:
    return _Lost(time.monotonic(), 1) if lost is None else _Lost(lost.first_at, lost.losses + 1)


def _lost_again(lost: _Lost | None, conn: AloneStatements | None) -> bool:
    """Whether a lost connection ends a call's retries: a call is retried once on a fresh
    connection (``PostgresBackend._on_connection``); ``lost`` is what it lost before this one.

    A connection that began to connect before the first loss is not the fresh one, and its loss
    does not count: it is as stale as the first, put back by another thread or added by the
    pool's growth after the retry's ``pool.check()``. Such losses are few (each connection is
    discarded as it is put back broken, and the pool holds a handful), and only a fresh
    connection's ends it; past ``LOST_CONNECTIONS_MAX`` losses, any does.
    """
    if lost is None:
        return False
    return conn is None or conn.connecting_since >= lost.first_at or lost.losses >= LOST_CONNECTIONS_MAX


def _is_server_error(exc: psycopg.OperationalError) -> bool:
    """True for an error the server reported on a working connection (retrying would not help).

    A lost connection has no SQLSTATE, or one of class 08 (connection exception) or 57P (the
    server is shutting down or restarting).
    """
    state = exc.sqlstate
    return state is not None and not state.startswith(("08", "57P"))
