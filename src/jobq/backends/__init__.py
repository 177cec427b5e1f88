"""Backends, chosen by URL scheme: ``sqlite:///path`` (or a bare path) and ``postgresql://...``."""

from __future__ import annotations

from jobq.backends.base import Backend, QueueCopy
from jobq.errors import ConfigError, StorageError
from jobq.redact import looks_like_keyword_string

#: ``backup`` and ``restore`` on a PostgreSQL store.
BACKUP_ELSEWHERE = (
    "jobq backup and restore copy a SQLite queue: back up PostgreSQL with pg_dump and pg_restore "
    "(docs/cli.md says how to keep job ids from being handed out again)"
)


def open_backend(url: str, *, create: bool = True) -> Backend:
    """Open (creating and migrating the schema if needed) the job store named by ``url``.

    With ``create=False`` a SQLite file that does not exist yet is an error (read-only viewers
    such as the ops app should say so rather than show an empty queue).
    """
    if _scheme(url) == "sqlite":
        from jobq.backends.sqlite import SqliteBackend

        return SqliteBackend(url, create=create)
    try:
        from jobq.backends.postgres import PostgresBackend
    except ImportError as exc:
        if not (exc.name or "").startswith("psycopg"):
            raise  # a bug of ours, not a missing extra: do not hide it
        raise ConfigError(f"PostgreSQL support is not installed ({exc.name}): pip install 'jobq[postgres]'") from None
    return PostgresBackend(url, create=create)


def check_copyable(url: str) -> None:
    """StorageError naming PostgreSQL's own tools unless ``url`` names a SQLite queue, which
    ``backup`` and ``restore`` copy; decided from the URL alone, before any connection (a server
    down made ``jobq backup`` report the connection, not that it would never copy a server)."""
    if _scheme(url) != "sqlite":
        raise StorageError(BACKUP_ELSEWHERE)


def restore_store(url: str, source: str, now: float) -> QueueCopy:
    """Put the backup ``source`` in place of the SQLite queue named by ``url`` (see
    ``jobq.backends.sqlite.copies``); no process may have the queue open."""
    check_copyable(url)
    from jobq.backends.sqlite import parse_sqlite_url
    from jobq.backends.sqlite.copies import restore

    path, _ = parse_sqlite_url(url)
    return restore(path, source, now)


def _scheme(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"``, or ConfigError for any other URL."""
    if looks_like_keyword_string(url):
        # Taken as a path, it would silently create a SQLite file named after the password.
        raise ConfigError(
            "a keyword connection string (key=value ...) is not supported: "
            "use a URL, postgresql://user:password@host:port/dbname"
        )
    scheme = url.split("://", 1)[0].lower() if "://" in url else "sqlite"
    if scheme == "sqlite":
        return scheme
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    # Name the scheme only: the rest of an unknown URL may hold a user name and a password.
    raise ConfigError(
        f"unsupported database URL scheme {scheme[:40]!r}: use sqlite:///path/to/queue.db or postgresql://..."
    )
