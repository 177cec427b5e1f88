"""Who holds a SQLite database's write lock, read from a /proc written by the test."""

from __future__ import annotations

import os
from pathlib import Path

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
