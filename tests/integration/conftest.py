"""The ``procs`` fixture: processes started by a test are stopped when it ends, also on failure.
``no_periodic_refresh``: once-a-second refreshes held off, for tests that count a call's cost."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import Procs


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.stop_all()


@pytest.fixture
def no_periodic_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that count what each call makes (Python calls, statements), not what one call
    a second makes for all of them. SQLite's check that its path still names the open file
    (``FILE_CHECK_SECONDS``: 2 calls) and the enqueue's reload of the wake-up addresses
    (``ADDRESS_CACHE_SECONDS``: 16 calls, one statement) fell inside counted calls whenever a
    test ran past a second (a loaded machine, ``make test``'s two processes): a claim counted 28
    calls against 26, an enqueue 35 against 19. Each is made once at a test's warm-up, then not
    again; PostgreSQL's once-a-minute clock and connection renewals likewise."""
    import jobq.backends.sqlite as sqlite
    import jobq.backends.sqlite.wake as wake
    import jobq.queue as queue

    hour = 3600.0
    monkeypatch.setattr(sqlite, "FILE_CHECK_SECONDS", hour)
    monkeypatch.setattr(wake, "ADDRESS_CACHE_SECONDS", hour)
    monkeypatch.setattr(queue, "CLOCK_SYNC_SECONDS", hour)
    with contextlib.suppress(ImportError):  # without psycopg the PostgreSQL tests skip
        import jobq.backends.postgres as postgres

        monkeypatch.setattr(postgres, "STICKY_CONNECTION_SECONDS", hour)
