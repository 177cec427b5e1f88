"""Shared fixtures. ``backend_url`` runs a test once per backend (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobq
from jobq.testing import FakeClock
from jobq.testing.appconn import AppConnection, app_connections

# The contract suite lives in the package (jobq.testing.contract) so other backends can run it:
# have pytest rewrite its asserts like a test module's, for readable failures.
pytest.register_assert_rewrite("jobq.testing.contract")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

try:  # the PostgreSQL server fixtures (tests/pg.py) start a throwaway server once per session
    from pg import postgres_server, postgres_url  # noqa: F401
    from pgbouncer import pgbouncer_server  # noqa: F401 - and PgBouncer in front of it, when asked for
except ImportError:

    @pytest.fixture
    def postgres_url() -> str:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL fixtures (tests/pg.py) are missing")
        pytest.skip("PostgreSQL fixtures not available")


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL for each test, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/queue.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/queue.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(backend_url: str, clock: FakeClock) -> Iterator[jobq.Queue]:
    """A Queue on a fresh database of each backend, driven by the fake clock."""
    settings = jobq.Settings(database_url=backend_url)
    q = jobq.Queue(settings=settings, clock=clock)
    yield q
    q.close()


@pytest.fixture
def open_queue(backend_url: str, clock: FakeClock) -> Iterator[object]:
    """Open more handles on the same database (as other processes would)."""
    opened: list[jobq.Queue] = []

    def _open() -> jobq.Queue:
        q = jobq.Queue(settings=jobq.Settings(database_url=backend_url), clock=clock)
        opened.append(q)
        return q

    yield _open
    for q in opened:
        q.close()


@pytest.fixture
def app_connect(backend_url: str) -> Iterator[object]:
    """Open application connections (every kind jobq accepts) on the test's database."""
    opened: list[AppConnection] = []

    def _connect() -> list[AppConnection]:
        made = app_connections(backend_url)
        opened.extend(made)
        return made

    yield _connect
    for app in opened:
        app.close()


#: The files that take a minute or more (a real Chromium, a built wheel, supervisord). `make test`
#: runs files in two processes as they are collected: these ran last and left one process alone
#: with them for the run's last minutes. Collected first, the many short files fill in after.
SLOW_FILES_FIRST = ("tests/web/test_browser", "tests/acceptance/test_wheel.py", "tests/acceptance/test_supervisord.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FILES_FIRST))  # stable: else as collected


def _utf8(text: str) -> str:
    """``text`` with each lone surrogate written as its escape. pytest-xdist sends every report to
    the controlling process as UTF-8; one holding a lone surrogate (a test's captured log of an
    error about a file name's undecodable byte) ended the whole run with an internal error."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="backslashreplace").decode()
    return text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, _utf8(text)) for title, text in report.sections]
    if report.longrepr is not None and not isinstance(report.longrepr, tuple):  # tuple: a skip's
        text = str(report.longrepr)
        escaped = _utf8(text)
        if escaped != text:  # a failure whose message holds one: its text, escaped
            report.longrepr = escaped
