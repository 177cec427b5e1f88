"""A throwaway PostgreSQL server for the PostgreSQL rows (as in /work/shared/ENVIRONMENT.md).

Started on a free loopback port with its data folder in a temporary directory, and stopped by
``pg_ctl stop`` at the end (``run.py`` does it in a ``finally``). PostgreSQL refuses to run as
root, so as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import socket
import subprocess
import tempfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in p.split("/")[4].split(".")])
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
    return found[-1]


@dataclasses.dataclass
class PgServer:
    root: str
    bindir: str
    port: int
    version: str = ""

    @property
    def dsn_base(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    def fresh_database(self, name: str) -> None:
        """Drop (if any) and create database ``name``."""
        import psycopg

        with psycopg.connect(f"{self.dsn_base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(f"{self.dsn_base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        subprocess.run(
            self._as_owner([f"{self.bindir}/pg_ctl", "-D", f"{self.root}/data", "-m", "fast", "-w", "stop"]),
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(settings: dict[str, str] | None = None) -> PgServer:
    """initdb + pg_ctl start on a free port; fsync and synchronous_commit stay at their (safe) defaults.
    ``settings``: more server settings (e.g. ``shared_preload_libraries``), as ``-c name=value``."""
    bindir = _pg_bin()
    root = tempfile.mkdtemp(prefix="jobq-bench-pg-", dir="/tmp")
    os.chmod(root, 0o755)
    server = PgServer(root, bindir, _free_port())
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")

    def run(args: list[str]) -> None:
        done = subprocess.run(server._as_owner(args), capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{os.path.basename(args[0])} failed: {(done.stderr or done.stdout).strip()[-300:]}")

    try:
        run(
            [
                f"{bindir}/initdb",
                "-D",
                f"{root}/data",
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {server.port} -c unix_socket_directories={root} -c max_connections=200"
        )
        opts += "".join(f" -c {name}={value}" for name, value in (settings or {}).items())
        run([f"{bindir}/pg_ctl", "-D", f"{root}/data", "-l", f"{root}/server.log", "-w", "-o", opts, "start"])
    except BaseException:
        server.stop()
        raise
    import psycopg

    with psycopg.connect(f"{server.dsn_base}/postgres", autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        server.version = str(row[0]) if row else "?"
    return server
