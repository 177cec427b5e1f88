"""A jobq writer that commits and is then killed with SIGKILL: its -wal and -shm are left behind,
with commits no checkpoint has moved into the database file (a host that died with the queue open)."""

from __future__ import annotations

import subprocess
import sys


def commit_then_die(url: str, *statements: str) -> None:
    """Run ``statements`` (Python, with ``q`` a ``jobq.Queue`` on ``url``) in a process of their
    own, which then kills itself with SIGKILL."""
    code = "\n".join(["import os, signal, sys, jobq", "q = jobq.Queue(sys.argv[1])", *statements])
    killed = subprocess.run(
        [sys.executable, "-c", code + "\nos.kill(os.getpid(), signal.SIGKILL)\n", url], capture_output=True, timeout=120
    )
    assert killed.returncode == -9, killed.stderr
