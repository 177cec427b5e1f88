"""Running the ``jobq`` command in tests, and what it must print when it fails: one readable line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

#: The ``jobq`` command of this venv.
JOBQ = Path(sys.executable).parent / "jobq"


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Assert the command failed with one readable line (naming one of ``words``); return it, with the
    temporary directory shown as ``<tmp>``."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("jobq: error: "), proc.stderr
    assert not words or any(w in lines[0].lower() for w in words), lines[0]
    return re.sub(r"/tmp/\S*?/(?=[^/\s]+\.db\b|nowhere-|a-file)", "<tmp>/", lines[0])


def without_jobq_settings() -> dict[str, str]:
    """This environment without ``JOBQ_*`` variables: the command reads only what its arguments say."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}


def run_jobq(*args: str, cwd: Path | str) -> subprocess.CompletedProcess[str]:
    """``jobq args...`` in ``cwd`` without ``JOBQ_*`` settings, its output captured."""
    return subprocess.run(
        [str(JOBQ), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=without_jobq_settings()
    )
