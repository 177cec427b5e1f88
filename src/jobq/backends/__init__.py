"""Backends, chosen by URL scheme: ``sqlite:///path`` (or a bare path) and ``postgresql://...``."""

from __future__ import annotations

from jobq.backends.base import Backend
from jobq.errors import ConfigError


def open_backend(url: str, *, create: bool = True) -> Backend:
    """Open (creating and migrating the schema if needed) the job store named by ``url``.

    With ``create=False`` a SQLite file that does not exist yet is an error (read-only viewers
    such as the ops app should say so rather than show an empty queue).
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else "sqlite"
    if scheme == "sqlite":
        from jobq.backends.sqlite import SqliteBackend

        return SqliteBackend(url, create=create)
    if scheme in ("postgresql", "postgres"):
        try:
            from jobq.backends.postgres import PostgresBackend
        except ImportError as exc:
            if not (exc.name or "").startswith("psycopg"):
                raise  # a bug of ours, not a missing extra: do not hide it
            raise ConfigError(
                f"PostgreSQL support is not installed ({exc.name}): pip install 'jobq[postgres]'"
            ) from None
        return PostgresBackend(url, create=create)
    raise ConfigError(f"unsupported database URL {url!r}: use sqlite:///path/to/queue.db or postgresql://...")
