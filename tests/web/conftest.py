"""Fixtures for the web apps: a temporary database seeded with jobs in every status."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import APP_LOGS, app_log_tail
from seeding import Seeded, seed
from streamlit.testing.v1.util import patch_config_options

from jobq.web import access


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A browser test that fails reports the tail of each app server's log it started: the
    sessions Streamlit made and the script runs (the servers log at debug level), or an error."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        # The servers of a module's fixture are in the module's stash: read the whole chain.
        for path in (p for node in item.listchain() for p in node.stash.get(APP_LOGS, [])):
            report.sections.append((f"app log {path.name} (last lines)", app_log_tail(path)))


@pytest.fixture(autouse=True)
def served_on_loopback() -> Iterator[None]:
    """AppTest serves nothing, so Streamlit's ``server.address`` is unset (every interface) and the
    apps would refuse to serve; say 127.0.0.1, as the repo's config and `jobq manager` do. Also
    forget wrong passwords of earlier tests (the login guard counts per process)."""
    access.LOGIN_GUARD.reset()
    with patch_config_options({"server.address": "127.0.0.1"}):
        yield
    access.LOGIN_GUARD.reset()


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seeded]:
    """A seeded temporary database; JOBQ_DATABASE_URL points at it and JOBQ_OPERATOR is 'alice'."""
    url = f"sqlite:///{tmp_path}/queue.db"
    ids = seed(url)
    monkeypatch.setenv("JOBQ_DATABASE_URL", url)
    monkeypatch.setenv("JOBQ_OPERATOR", "alice")
    monkeypatch.delenv("JOBQ_MANAGER_PASSWORD", raising=False)
    monkeypatch.delenv("JOBQ_OPS_PASSWORD", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray jobq.toml from the working directory
    yield Seeded(url, ids)
    os.environ.pop("JOBQ_MANAGER_PASSWORD", None)
