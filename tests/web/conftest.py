"""Fixtures for the web apps: a temporary database seeded with jobs in every status."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from seeding import Seeded, seed


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seeded]:
    """A seeded temporary database; JOBQ_DATABASE_URL points at it and JOBQ_OPERATOR is 'alice'."""
    url = f"sqlite:///{tmp_path}/queue.db"
    ids = seed(url)
    monkeypatch.setenv("JOBQ_DATABASE_URL", url)
    monkeypatch.setenv("JOBQ_OPERATOR", "alice")
    monkeypatch.delenv("JOBQ_MANAGER_PASSWORD", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray jobq.toml from the working directory
    yield Seeded(url, ids)
    os.environ.pop("JOBQ_MANAGER_PASSWORD", None)
