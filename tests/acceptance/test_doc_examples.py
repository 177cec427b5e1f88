"""The Python examples of docs/uniqueness.md, docs/schedules.md and docs/retries.md, run as written in a
fresh folder, each in a process of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["uniqueness.md", "schedules.md", "retries.md"]
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _examples() -> list[tuple[str, int, str]]:
    return [(page, i, code) for page in PAGES for i, code in enumerate(_BLOCK.findall((DOCS / page).read_text()))]


@pytest.mark.parametrize(("page", "index", "code"), _examples(), ids=lambda v: str(v)[:20])
def test_example_runs(page: str, index: int, code: str, tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(code)
    run = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{page} example {index}:\n{run.stderr}"
