"""Stopping the child processes a test started (by PID, never by name), also when it failed."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence


def stopped(pid: int) -> bool:
    """The kernel's word that process ``pid`` is stopped (SIGSTOP): state T in /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def stop_children(started: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each child still running (SIGCONT first: a test may have frozen it), then wait;
    one that does not end in 15 s is killed."""
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
    for proc in started:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
