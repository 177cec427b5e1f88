"""Who holds a SQLite database's write lock, read from a /proc written by the test."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from jobq.backends.sqlite import holders


def _proc(tmp_path: Path, *lines: str) -> str:
    (tmp_path / "q.db-shm").write_bytes(b"")
    st = os.stat(tmp_path / "q.db-shm")
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    (tmp_path / "locks").write_text("".join(line.format(device=device) + "\n" for line in lines))
    return str(tmp_path)


def _process(proc: str, pid: int, cmdline: bytes, state: str) -> None:
    Path(proc, str(pid)).mkdir()
    Path(proc, str(pid), "cmdline").write_bytes(cmdline)
    Path(proc, str(pid), "stat").write_text(f"{pid} (my (odd) name) {state} 1 {pid} {pid} 0 -1\n")


def test_lock_holders_reads_proc_locks(tmp_path: Path) -> None:
    proc = _proc(
        tmp_path,
        "1: POSIX  ADVISORY  READ  11 {device} 128 128",
        "2: POSIX  ADVISORY  WRITE 4242 {device} 120 120",
        "2: -> POSIX  ADVISORY  WRITE 77 {device} 120 120",
        "3: POSIX  ADVISORY  WRITE 0 {device} 120 120",
        "4: POSIX  ADVISORY  WRITE 99 00:01:1 120 120",
        "5: POSIX  ADVISORY  WRITE 4343 {device} 0 EOF",
    )
    assert holders.lock_holders(str(tmp_path / "q.db"), proc=proc) == [4242, 4343]
    assert holders.lock_holders(str(tmp_path / "missing.db"), proc=proc) == []


def test_a_stopped_holder_is_named_so_with_the_command_that_continues_it(tmp_path: Path) -> None:
    proc = _proc(
        tmp_path, "1: POSIX  ADVISORY  WRITE 4242 {device} 120 120", "2: POSIX  ADVISORY  WRITE 4343 {device} 120 120"
    )
    _process(proc, 4242, b"python\0-m\0jobq\0worker\0", "T")
    _process(proc, 4343, b"sqlite3\0q.db\0", "S")
    text = holders.holders_text(str(tmp_path / "q.db"), proc=proc)
    assert text == (
        "process pid 4242 (python -m jobq worker), which is stopped (SIGSTOP or a debugger; "
        "`kill -CONT 4242` continues it), pid 4343 (sqlite3 q.db) holds its write lock"
    )


def test_no_holder_found_says_nothing(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "1: POSIX  ADVISORY  READ  11 {device} 128 128")
    assert holders.holders_text(str(tmp_path / "q.db"), proc=proc) is None
    assert holders.describe_process(999_999, proc=proc) == "pid 999999"  # gone since


class _Time:
    """A clock that moves only when slept on, for ``held_up_by``'s probe."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _versions(*values: int) -> tuple[list[int], Callable[[], int]]:
    """A data_version that reads ``values`` in turn (the last one for ever), and its reads."""
    reads: list[int] = []

    def read() -> int:
        reads.append(values[min(len(reads), len(values) - 1)])
        return reads[-1]

    return reads, read


def test_held_up_by_names_a_stopped_holder_at_once_and_probes_nothing(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "1: POSIX  ADVISORY  WRITE 4242 {device} 120 120")
    _process(proc, 4242, b"sqlite3\0q.db\0", "T")
    t, (reads, version) = _Time(), _versions(1)
    found = holders.held_up_by(str(tmp_path / "q.db"), version, 1.0, proc, clock=t.clock, sleep=t.sleep)
    assert found == [
        "pid 4242 (sqlite3 q.db), which is stopped (SIGSTOP or a debugger; `kill -CONT 4242` continues it)"
    ]
    assert t.slept == [] and reads == []
    (tmp_path / "none").mkdir()
    unlocked = _proc(tmp_path / "none", "1: POSIX  ADVISORY  READ  11 {device} 128 128")
    assert (
        holders.held_up_by(str(tmp_path / "none" / "q.db"), version, 1.0, unlocked, clock=t.clock, sleep=t.sleep) == []
    )
    assert t.slept == [] and reads == []


def test_held_up_by_names_a_running_holder_that_kept_the_lock_while_nobody_committed(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "1: POSIX  ADVISORY  WRITE 4343 {device} 120 120")
    _process(proc, 4343, b"sqlite3\0q.db\0", "S")
    t, (reads, version) = _Time(), _versions(7)
    (found,) = holders.held_up_by(str(tmp_path / "q.db"), version, 1.0, proc, clock=t.clock, sleep=t.sleep)
    assert found.startswith("pid 4343 (sqlite3 q.db), which has held it 1 s or more while nobody committed")
    assert sum(t.slept) == pytest.approx(1.0) and max(t.slept) <= holders.HOLD_PROBE_STEP_SECONDS
    assert len(reads) == len(t.slept) + 1  # read before the probe and after each look


def test_held_up_by_lets_a_holder_go_at_the_first_commit_or_when_it_lets_go(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "1: POSIX  ADVISORY  WRITE 4343 {device} 120 120")
    _process(proc, 4343, b"python\0-m\0jobq\0worker\0", "S")
    t, (_, version) = _Time(), _versions(7, 7, 8)  # a commit seen at the second look
    assert holders.held_up_by(str(tmp_path / "q.db"), version, 1.0, proc, clock=t.clock, sleep=t.sleep) == []
    assert len(t.slept) == 2 and sum(t.slept) < 0.1

    t2, (_, same) = _Time(), _versions(7)

    def let_go(seconds: float) -> None:
        t2.sleep(seconds)
        if len(t2.slept) == 3:  # the holder's transaction ends, with no change (a ROLLBACK)
            (tmp_path / "locks").write_text("")

    assert holders.held_up_by(str(tmp_path / "q.db"), same, 1.0, proc, clock=t2.clock, sleep=let_go) == []
    assert len(t2.slept) == 3


def test_held_up_by_names_a_holder_found_before_at_once_while_nobody_committed(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "1: POSIX  ADVISORY  WRITE 4343 {device} 120 120")
    _process(proc, 4343, b"sqlite3\0q.db\0", "S")
    path, seen = str(tmp_path / "q.db"), holders.HeldSeen()

    def probe(version: Callable[[], int]) -> tuple[list[str], float]:
        t = _Time()
        return holders.held_up_by(path, version, 1.0, proc, seen=seen, clock=t.clock, sleep=t.sleep), sum(t.slept)

    _, seven = _versions(7)
    found, waited = probe(seven)
    assert len(found) == 1 and "held it 1 s or more" in found[0] and waited == pytest.approx(1.0)
    assert probe(seven) == (found, 0.0)  # the same holder, nobody committed since: no probe
    _, eight = _versions(8)  # a commit since (the holder let go, and it or another took the lock)
    assert probe(eight) == (found, pytest.approx(1.0))
    assert probe(eight) == (found, 0.0)

    (tmp_path / "locks").write_text("")  # let go with no commit (a ROLLBACK) ...
    assert probe(eight) == ([], 0.0)
    _proc(tmp_path, "1: POSIX  ADVISORY  WRITE 4343 {device} 120 120")  # ... and a new transaction
    assert probe(eight) == (found, pytest.approx(1.0))  # probed anew: its hold is new

    _proc(tmp_path, "1: POSIX  ADVISORY  WRITE 4444 {device} 120 120")  # another holder, same version
    _process(proc, 4444, b"sqlite3\0q.db\0", "S")
    (other,), waited = probe(eight)
    assert other.startswith("pid 4444 ") and waited == pytest.approx(1.0)
