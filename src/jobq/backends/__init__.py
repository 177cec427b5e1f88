"""Backends, chosen by URL scheme: ``sqlite:///path`` (or a bare path) and ``postgresql://...``."""

from __future__ import annotations

from jobq.backends.base import Backend
from jobq.errors import ConfigError


def open_backend(url: str) -> Backend:
    """Open (creating and migrating the schema if needed) the job store named by ``url``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else "sqlite"
    if scheme == "sqlite":
        from jobq.backends.sqlite import SqliteBackend

        return SqliteBackend(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from jobq.backends.postgres import PostgresBackend
        except ImportError as exc:
            raise ConfigError(
                f"PostgreSQL support is not installed ({exc.name}): pip install 'jobq[postgres]'"
            ) from None
        return PostgresBackend(url)
    raise ConfigError(f"unsupported database URL {url!r}: use sqlite:///path/to/queue.db or postgresql://...")
