"""The ``procs`` fixture: processes started by a test are stopped when it ends, also on failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import Procs


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.stop_all()
