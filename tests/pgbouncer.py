"""A throwaway PgBouncer in transaction pooling mode, in front of the tests' PostgreSQL server.

``pgbouncer_server`` (session): Debian's ``pgbouncer`` started on a free port of 127.0.0.1 with a
generated ini (``pool_mode = transaction``, ``auth_type = trust``, every database of the test
server reachable by its name), as the ``postgres`` user when we are root, stopped by its pid in
the finalizer, also when tests fail. ``pgbouncer_url(postgres_url)`` turns a test database's URL
into the same database through PgBouncer.

Without PgBouncer its tests are skipped, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from typing import NoReturn

import pytest
from pg import PgServer, _free_port

START_ATTEMPTS = 3
START_TIMEOUT_SECONDS = 20.0
#: Server connections per database and user: fewer than the clients' pools hold, so that
#: consecutive transactions of one client really land on different server connections.
DEFAULT_POOL_SIZE = 3


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PgBouncer is required in CI: {reason}")
    pytest.skip(f"PgBouncer not available: {reason}")


@dataclasses.dataclass
class Bouncer:
    port: int
    proc: subprocess.Popen[bytes]
    base: str

    def url_for(self, postgres_url: str) -> str:
        """``postgres_url`` (a database of the test server) reached through PgBouncer."""
        parts = urllib.parse.urlsplit(postgres_url)
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0] + "@" if len(netloc) == 2 else ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def let_go(self, postgres_url: str) -> None:
        """Close the bouncer's connections to ``postgres_url``'s database now (admin console
        ``KILL``, then ``RESUME`` so that it serves the name again): otherwise it keeps idle server
        connections for ``server_idle_timeout``, and the database cannot be scrubbed for reuse
        (tests/pg.py)."""
        import psycopg

        name = urllib.parse.urlsplit(postgres_url).path.lstrip("/")
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(
                f"postgresql://postgres@127.0.0.1:{self.port}/pgbouncer", autocommit=True, connect_timeout=5
            ) as admin,
        ):
            for command in (f"KILL {name}", f"RESUME {name}"):  # the console speaks the simple protocol only
                admin.pgconn.exec_(command.encode())

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(os.path.join(self.base, "pgbouncer.log"), encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # immediate shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _ini(base: str, port: int, server: PgServer) -> str:
    target = urllib.parse.urlsplit(server.url)
    return f"""[databases]
; Every database of the test server, by its own name (the tests create one per test).
* = host={target.hostname} port={target.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {base}/userlist.txt
pool_mode = transaction
default_pool_size = {DEFAULT_POOL_SIZE}
max_client_conn = 500
; Test databases are dropped WITH (FORCE) at teardown: don't keep idle server connections long.
server_idle_timeout = 5
server_lifetime = 60
; As docs/multi-host.md sets it: a client frozen inside a transaction is ended after 10 s.
idle_transaction_timeout = 10
logfile = {base}/pgbouncer.log
pidfile = {base}/pgbouncer.pid
admin_users = postgres
"""


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def pgbouncer_server(postgres_server: PgServer) -> Iterator[Bouncer]:
    """A PgBouncer in transaction mode in front of the session's PostgreSQL server."""
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if binary is None:
        _unavailable("no pgbouncer binary (apt-get install -y pgbouncer)")
    base = tempfile.mkdtemp(prefix="jobq-pgbouncer-", dir="/tmp")
    as_root = os.geteuid() == 0
    with open(os.path.join(base, "userlist.txt"), "w") as f:
        f.write('"postgres" ""\n')
    if as_root:  # pgbouncer refuses to run as root: -u drops to postgres, who must reach the files
        shutil.chown(base, "postgres", "postgres")
    bouncer = None
    for _ in range(START_ATTEMPTS):  # a free port can be taken between probing and binding
        port = _free_port()
        ini = os.path.join(base, "pgbouncer.ini")
        with open(ini, "w") as f:
            f.write(_ini(base, port, postgres_server))
        if as_root:
            for name in ("pgbouncer.ini", "userlist.txt"):
                shutil.chown(os.path.join(base, name), "postgres", "postgres")
        # Foreground (no -d): the pid we hold is pgbouncer's own, and it is what we stop.
        cmd = [binary, *(["-u", "postgres"] if as_root else []), ini]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        candidate = Bouncer(port=port, proc=proc, base=base)
        if _wait_listening(port, proc):
            bouncer = candidate
            break
        candidate.stop()
    if bouncer is None:
        log = Bouncer(0, proc, base).log_tail(5)
        shutil.rmtree(base, ignore_errors=True)
        _unavailable(f"pgbouncer did not start: {log.strip()[-300:]}")
    try:
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(base, ignore_errors=True)


def through_pgbouncer(bouncer: Bouncer, postgres_url: str, *, listen: bool = True) -> str:
    """A jobq URL of ``postgres_url``'s database through PgBouncer (``pooler=transaction``), with
    a direct ``listen_url`` for wake-ups when ``listen``."""
    url = bouncer.url_for(postgres_url) + "?pooler=transaction"
    if listen:
        url += "&listen_url=" + urllib.parse.quote(postgres_url, safe="")
    return url
