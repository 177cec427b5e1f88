"""A throwaway PostgreSQL server for the tests, and a fresh database per test.

``postgres_server`` (session): the server named by ``JOBQ_TEST_POSTGRES_URL`` if set, else a
private one started with the Debian binaries (``initdb`` in a temp dir owned by ``postgres``,
a free port on 127.0.0.1), stopped by ``pg_ctl`` in the finalizer, also when tests fail.
``postgres_url`` (function): an empty database of its own on that server: ``CREATE DATABASE
t_<random>``, or one an earlier test used, scrubbed back to new (``fresh_database``).

Without PostgreSQL the PostgreSQL tests are skipped, except under ``CI=true`` where they fail:
CI must prove both backends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import pytest

ENV_URL = "JOBQ_TEST_POSTGRES_URL"
START_ATTEMPTS = 3
PG_CTL_TIMEOUT_SECONDS = 60


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


def with_database(url: str, dbname: str) -> str:
    """``url`` with its database name replaced (query options kept)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class PgServer:
    """A running server: ``url`` names its maintenance database ``postgres``."""

    url: str
    data_dir: str | None = None
    """Set when this session started the server (so it may restart it); None for an external one."""
    pg_bin: str = ""
    log_path: str = ""
    options: str = ""

    @property
    def managed(self) -> bool:
        return self.data_dir is not None

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.data_dir is not None, "cannot control an external server"
        cmd = [os.path.join(self.pg_bin, "pg_ctl"), "-D", self.data_dir, "-w", "-t", str(PG_CTL_TIMEOUT_SECONDS), *args]
        return subprocess.run(
            _as_postgres(cmd), capture_output=True, text=True, timeout=PG_CTL_TIMEOUT_SECONDS + 30, check=False
        )

    def _pg_ctl_or_raise(self, what: str, *args: str) -> None:
        done = self._pg_ctl(*args)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {what} failed: {done.stderr.strip() or done.stdout.strip()}")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every client connection is cut, the data survives."""
        self._pg_ctl_or_raise("restart", "-l", self.log_path, "-o", self.options, "-m", "fast", "restart")

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``, then start: the server stops without a checkpoint, as if
        it crashed, and recovers from its WAL on start (every client connection is cut)."""
        self._pg_ctl_or_raise("stop -m immediate", "-m", "immediate", "stop")
        self.start()

    def start(self) -> None:
        """Start a managed server again after :meth:`stop` (same port, same data)."""
        self._pg_ctl_or_raise("start", "-l", self.log_path, "-o", self.options, "start")

    def stop(self) -> None:
        if self.data_dir is not None:
            self._pg_ctl("-m", "fast", "stop")

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: drop to the postgres user when we are root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_bin() -> str | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) for x in p.split("/")[4].split(".") if x.isdigit()],
    )
    for path in reversed(candidates):
        if os.path.exists(os.path.join(path, "pg_ctl")):
            return path
    found = shutil.which("pg_ctl")
    return os.path.dirname(found) if found else None


def _start_server(listen: Sequence[str] = (), hba: Sequence[str] = ()) -> PgServer:
    """Start a private server on 127.0.0.1 (and the addresses ``listen``), accepting without a
    password what the default pg_hba.conf accepts plus the ``hba`` lines."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        _unavailable("no PostgreSQL binaries (apt-get install -y postgresql)")
    base = tempfile.mkdtemp(prefix="jobq-pg-", dir="/tmp")  # not under /root: postgres must reach it
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data = os.path.join(base, "data")
    init = subprocess.run(
        _as_postgres(
            [
                os.path.join(pg_bin, "initdb"),
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        _unavailable(f"initdb failed: {init.stderr.strip()[-300:]}")
    if hba:
        with open(os.path.join(data, "pg_hba.conf"), "a") as f:
            f.write("".join(f"{line}\n" for line in hba))
    last_error = ""
    for _ in range(START_ATTEMPTS):  # a free port can be taken between probing and binding
        port = _free_port()
        # fsync off: a throwaway test server needs no durability across power loss, and a clean
        # `pg_ctl restart -m fast` still writes everything out.
        options = (
            f"-c listen_addresses={','.join(['127.0.0.1', *listen])} -p {port} "
            f"-c unix_socket_directories={base} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        server = PgServer(
            url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
            data_dir=data,
            pg_bin=pg_bin,
            log_path=os.path.join(base, "server.log"),
            options=options,
        )
        started = server._pg_ctl("-l", server.log_path, "-o", options, "start")
        if started.returncode == 0:
            return server
        last_error = server.log_tail(5) or started.stderr
        server.stop()
    shutil.rmtree(base, ignore_errors=True)
    _unavailable(f"pg_ctl start failed: {last_error.strip()[-300:]}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (external via JOBQ_TEST_POSTGRES_URL, or a private one)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'jobq[postgres]')")
    external = os.environ.get(ENV_URL)
    if external:
        server = PgServer(url=external)
        yield server
        drop_pooled(server)
        return
    server = _start_server()
    try:
        yield server
    finally:
        _POOL.pop(server.url, None)  # dropped with the data directory
        server.stop()
        assert server.data_dir is not None
        shutil.rmtree(os.path.dirname(server.data_dir), ignore_errors=True)


def raw_connect(url: str, **kwargs: Any) -> Any:
    """A plain psycopg connection to ``url``'s database, as an outside tool (psql) would open it,
    with ``search_path`` set to the queue's schema so that tests may name jobq's tables unqualified
    (jobq's own options, such as ``schema=``, are taken out of the URL first)."""
    import psycopg

    from jobq.backends.postgres.url import split_url

    options = split_url(url)
    return psycopg.connect(options.libpq_url, options=f"-c search_path={options.schema}", **kwargs)


#: Everything about a database that a test could leave behind outside its own schemas, read in
#: the database itself: a scrubbed database is handed out again only if this reads as it did
#: when the database was new.
FINGERPRINT = """
SELECT (SELECT datacl::text || '/' || datdba::text FROM pg_database WHERE datname = current_database()),
       (SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension),
       (SELECT string_agg(nspname || ':' || coalesce(nspacl::text, '') || ':' || nspowner::text, ',' ORDER BY nspname)
        FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'),
       (SELECT count(*) FROM pg_db_role_setting
        WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())),
       (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace)
         + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace)
         + (SELECT count(*) FROM pg_type WHERE typnamespace = 'public'::regnamespace)
         + (SELECT count(*) FROM pg_operator WHERE oprnamespace = 'public'::regnamespace),
       (SELECT count(*) FROM pg_default_acl) + (SELECT count(*) FROM pg_event_trigger)
         + (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_largeobject_metadata)
         + (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database())
"""
#: The schemas a scrub drops: every one a test or jobq made (not the system's, not public).
OWN_SCHEMAS = """SELECT nspname FROM pg_namespace
WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public')"""

#: How often, and how long apart, a scrub looks again for other sessions before it gives up on
#: reusing the database (a server process exits a moment after its client closed).
SCRUB_WAITS = 5
SCRUB_WAIT_SECONDS = 0.02

#: Scrubbed databases ready to be handed out again, by server URL; and each server's fingerprint
#: of a new database. CREATE DATABASE took ~150 ms here and its DROP ~40, against ~30 for a scrub:
#: ~100 s of the suite's ~660 PostgreSQL tests.
_POOL: dict[str, list[str]] = {}
_NEW: dict[str, tuple[Any, ...]] = {}


def _scrub(url: str, fingerprint: tuple[Any, ...]) -> bool:
    """Make the database at ``url`` new again (drop the schemas made in it) if nothing else is
    connected to it and nothing outside those schemas changed; False when it cannot be."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        for _ in range(SCRUB_WAITS):
            others = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if others is not None and not others[0]:
                break
            time.sleep(SCRUB_WAIT_SECONDS)
        else:  # a connection left open (a test that failed, PgBouncer's pool)
            return False
        for (schema,) in conn.execute(OWN_SCHEMAS).fetchall():
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        return conn.execute(FINGERPRINT).fetchone() == fingerprint


@contextlib.contextmanager
def fresh_database(server: PgServer) -> Iterator[str]:
    """An empty database on ``server``, new or scrubbed back to new; yields its URL. Afterwards it
    is scrubbed for the next test, or dropped when that cannot be done (see ``_scrub``)."""
    import psycopg

    pool = _POOL.setdefault(server.url, [])
    name = pool.pop() if pool else None
    if name is None:
        name = f"t_{secrets.token_hex(6)}"
        deadline = time.monotonic() + 30
        while True:  # right after a restart the server may still refuse connections for a moment
            try:
                with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    url = with_database(server.url, name)
    if server.url not in _NEW:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            _NEW[server.url] = tuple(conn.execute(FINGERPRINT).fetchone() or ())
    try:
        yield url
    finally:
        reused = False
        with contextlib.suppress(psycopg.Error):
            reused = _scrub(url, _NEW[server.url])
        if reused:
            pool.append(name)
        else:
            _drop(server, name)


def _drop(server: PgServer, name: str) -> None:
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(server.url, autocommit=True) as admin:
        # FORCE: a test that failed may have left connections open (PostgreSQL 13+).
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_pooled(server: PgServer) -> None:
    """Drop the scrubbed databases kept for ``server`` (at the end of the session: an external
    server keeps nothing of the suite's)."""
    for name in _POOL.pop(server.url, []):
        _drop(server, name)


@pytest.fixture
def postgres_url(postgres_server: PgServer) -> Iterator[str]:
    """A URL naming a fresh, empty database of its own for this test."""
    with fresh_database(postgres_server) as url:
        yield url
