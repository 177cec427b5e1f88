"""Which processes hold a SQLite database's write lock, from ``/proc``: for the one-line errors
of a write that gave up waiting (the worker's log, the CLI, the apps). On SQLite nothing can take
the lock from its holder; the operator can, once told who it is. A holder that is frozen
(SIGSTOP, a debugger) stops every writer for as long as it stays frozen, so it is named as such,
with the command that continues it."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

#: SQLite's WAL write lock: byte 120 of the ``-shm`` file (os_unix.c: UNIX_SHM_BASE + WAL_WRITE_LOCK).
WAL_WRITE_LOCK_BYTE = 120
#: Most of a holder's command line shown.
COMMAND_SHOWN_CHARS = 80
#: How long a running process must hold the write lock, with no commit by anyone meanwhile, to be
#: named as holding up the writes (``held_up_by``): a worker holds it for milliseconds at a time,
#: and commits; a transaction left open in a `sqlite3` shell holds it until it is ended.
HOLD_PROBE_SECONDS = 1.0
#: First and longest pause between two looks at the lock during that probe (doubling between).
HOLD_PROBE_FIRST_STEP_SECONDS = 0.01
HOLD_PROBE_STEP_SECONDS = 0.1


def lock_holders(path: str, proc: str = "/proc") -> list[int]:
    """PIDs holding the write lock of the SQLite database ``path`` (WAL mode), from ``/proc/locks``.

    SQLite's WAL writer holds a POSIX lock on byte ``WAL_WRITE_LOCK_BYTE`` of ``PATH-shm``; the
    kernel lists it with the owner's pid (0 when the owner is in another PID namespace: left out;
    the kernels here do not list such a lock at all, seen from ``unshare --pid --mount-proc``).
    Empty when nothing is found or the platform has no ``/proc/locks``: the caller then says
    "another process".
    """
    try:
        st = os.stat(path + "-shm")
        with open(os.path.join(proc, "locks"), encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    for line in lines:
        # "1: POSIX  ADVISORY  WRITE 4242 00:2e:1234 120 120" (a "->" marks a waiter: skip it)
        fields = line.split()
        if "->" in fields or len(fields) < 8 or fields[1] != "POSIX" or fields[3] != "WRITE":
            continue
        pid, where, start, end = fields[4], fields[5], fields[6], fields[7]
        if where != device or not pid.isdigit() or int(pid) <= 0:
            continue
        last = 2**63 if end == "EOF" else int(end)
        if int(start) <= WAL_WRITE_LOCK_BYTE <= last and int(pid) not in pids:
            pids.append(int(pid))
    return pids


def is_stopped(pid: int, proc: str = "/proc") -> bool:
    """Process ``pid`` is stopped by a signal (state T in ``/proc/PID/stat``; t, traced, too)."""
    try:
        stat = Path(proc, str(pid), "stat").read_text(errors="replace")
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()  # the command name in parentheses may hold spaces
    return bool(fields) and fields[0] in ("T", "t")


def describe_process(pid: int, proc: str = "/proc") -> str:
    """``pid 4242 (sqlite3 data/queue.db)``: the pid and its command line (shortened); for a
    stopped process also that, and how to continue it."""
    try:
        raw = Path(proc, str(pid), "cmdline").read_bytes()
    except OSError:
        raw = b""
    command = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    command = re.sub(r"\s+", " ", command).strip()
    cut = "…" if len(command) > COMMAND_SHOWN_CHARS else ""
    text = f"pid {pid} ({command[:COMMAND_SHOWN_CHARS]}{cut})" if command else f"pid {pid}"
    if is_stopped(pid, proc):
        text += f", which is stopped (SIGSTOP or a debugger; `kill -CONT {pid}` continues it)"
    return text


#: Why a write waits on a lock this process holds itself (POSIX locks never conflict within a
#: process: SQLite keeps them apart per connection, and the kernel lists the process as holder).
HELD_HERE = (
    "this process (pid {pid}) holds its write lock itself, in another connection: a transaction of "
    "its own that is still open (inside one, pass conn= to each jobq call)"
)


def holders_text(path: str, proc: str = "/proc") -> str | None:
    """``process pid 4242 (...) holds its write lock``, naming every other holder; when there is
    none, but this process holds it (an application's own transaction, and a jobq call that did
    not pass ``conn``), says so (``HELD_HERE``); None when none is found (another PID namespace,
    no ``/proc``)."""
    pids = lock_holders(path, proc)
    holders = [describe_process(pid, proc) for pid in pids if pid != os.getpid()]
    if holders:
        return "process " + ", ".join(holders) + " holds its write lock"
    return HELD_HERE.format(pid=os.getpid()) if os.getpid() in pids else None


def _held_throughout(
    path: str,
    pids: list[int],
    version: int,
    data_version: Callable[[], int],
    probe_seconds: float,
    proc: str,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> list[int]:
    """Those of ``pids`` that held the write lock at every look for ``probe_seconds`` (looks
    ``HOLD_PROBE_FIRST_STEP_SECONDS`` apart, doubling up to ``HOLD_PROBE_STEP_SECONDS``); none
    once anyone committed (``data_version`` moved from ``version``, read before the probe): the
    lock was let go in between."""
    deadline, step = clock() + probe_seconds, HOLD_PROBE_FIRST_STEP_SECONDS
    while pids and (left := deadline - clock()) > 0:
        sleep(min(step, left))
        step = min(step * 2, HOLD_PROBE_STEP_SECONDS)
        holding = lock_holders(path, proc)
        pids = [] if data_version() != version else [pid for pid in pids if pid in holding]
    return pids


class HeldSeen:
    """What ``held_up_by`` found held throughout its last probe, kept by its caller across calls:
    SQLite's ``data_version`` read before that probe and the pids it named. The same holders still
    holding the lock, with that version unchanged (nobody committed since), have held it all the
    while: they are named at once. An ops page refreshed every few seconds while a transaction is
    left open waits out the probe once, not at every refresh."""

    NOTHING: tuple[int, frozenset[int]] = (-1, frozenset())  # data_version is never negative

    def __init__(self) -> None:
        # One tuple, replaced whole: callers in several threads (the apps' sessions) read and
        # write it without a lock; each write is a probe's own finding.
        self.last = self.NOTHING

    def forget(self) -> None:
        """The next call probes anew (the lock let go, or a new connection: data_version is one
        connection's count)."""
        self.last = self.NOTHING


def held_up_by(
    path: str,
    data_version: Callable[[], int],
    probe_seconds: float = HOLD_PROBE_SECONDS,
    proc: str = "/proc",
    *,
    seen: HeldSeen | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """``describe_process`` of each other process that holds up the writes of the SQLite database
    ``path``: a holder of its write lock that is stopped (SIGSTOP, a debugger), at once; one that
    runs, when it held the lock at every look for ``probe_seconds`` while nobody committed
    (``data_version``: SQLite's ``PRAGMA data_version`` of one connection, which moves with every
    commit of another), or was found so before (``seen``) and nobody committed since. Either way
    every writer waits, and only an operator can end it. Returns at once when nothing holds the
    lock, and at the first commit: a busy queue's lock moves on."""
    pids = [pid for pid in lock_holders(path, proc) if pid != os.getpid()]
    stopped = [pid for pid in pids if is_stopped(pid, proc)]
    running = [pid for pid in pids if pid not in stopped]
    if running:
        version = data_version()  # after the holders were read: a commit since they were moves it
        last_version, last_held = seen.last if seen is not None else HeldSeen.NOTHING
        if version != last_version or not last_held.issuperset(running):
            running = _held_throughout(path, running, version, data_version, probe_seconds, proc, clock, sleep)
        if seen is not None:
            seen.last = (version, frozenset(running))
    elif seen is not None:
        seen.forget()  # let go since: a hold found later is a new one, probed anew
    held = (
        f", which has held it {probe_seconds:g} s or more while nobody committed: every write waits"
        " for its transaction to end (one left open in a shell: commit or roll it back)"
    )
    return [describe_process(pid, proc) for pid in stopped] + [describe_process(pid, proc) + held for pid in running]
