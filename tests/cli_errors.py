"""Running the ``jobq`` command in tests, and what it must print when it fails: one readable line."""

from __future__ import annotations

import os
import re
import subprocess


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
