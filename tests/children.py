"""Stopping the child processes a test started (by PID, never by name), also when it failed."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: Holds the write lock of the SQLite database named by argv[1] until stdin closes (or it is killed).
HOLD_LOCK = """
import sys, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""


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


def start_lock_holder(path: str | Path) -> subprocess.Popen[str]:
    """A process that takes the write lock of the SQLite database at ``path`` and keeps it; it
    holds it once ``wait_locked`` returned. End it with ``stop_lock_holder``."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def wait_locked(holder: subprocess.Popen[str]) -> None:
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"


def stop_lock_holder(holder: subprocess.Popen[str]) -> None:
    """Kill our own lock holder, by its handle (continued first, if a test froze it)."""
    if holder.poll() is None:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
    holder.wait(30)
    for pipe in (holder.stdin, holder.stdout):
        if pipe is not None:
            pipe.close()
