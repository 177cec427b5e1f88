"""A queue that this user may read but not write: an ops app or a `jobq stats` run as another
user, given read access to the queue's files (group or world readable). Every command used to fail,
reads included ("the database is read-only"): SQLite could not make the -wal and -shm files that
WAL mode needs. Now reads work, as on a read-only mount (``tests/reliability/test_db_faults.py``),
and a write is one line's error; the reader never creates or changes a file of the queue.

Root passes every permission check, so the reader runs as ``nobody`` (``setpriv``); the queue's
owner, the writer, is this process (root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_errors import JOBQ, one_line_error, without_jobq_settings
from killed_writer import commit_then_die

import jobq

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
#: A reader that stays open, as the ops app does: each line on stdin asks for its count of jobs.
READER = r"""
import sys, jobq
q = jobq.Queue(sys.argv[1])
for line in sys.stdin:
    print(q.count(), flush=True)
"""


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NOBODY, *args], capture_output=True, text=True, timeout=120, env=without_jobq_settings(), cwd="/"
    )


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that every user may enter and read, not write (pytest's own is root's alone)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv, to run a reader as another user")
    where = Path(tempfile.mkdtemp(prefix="jobq-perm-", dir="/tmp"))
    try:
        where.chmod(0o755)
        probe = _as_nobody(sys.executable, "-c", "import jobq")
        if probe.returncode != 0:
            pytest.skip(f"nobody cannot run this Python: {probe.stderr.strip()[-200:]}")
        yield where
    finally:
        shutil.rmtree(where)


def _stats_as_nobody(url: str) -> str:
    stats = _as_nobody(str(JOBQ), "--db", url, "stats")
    assert stats.returncode == 0, stats.stderr
    return stats.stdout


def _queue_of_three(db: Path, mode: int) -> None:
    with jobq.Queue(f"sqlite:///{db}") as q:
        q.enqueue_many([{"n": n} for n in range(3)])
    db.chmod(mode)  # jobq makes it 0600 (it holds every payload): the owner opens it to readers
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]  # closed cleanly: no -wal


def test_a_user_who_may_only_read_the_file_reads_the_queue_and_is_refused_writes(shared_dir: Path) -> None:
    db = shared_dir / "q.db"
    _queue_of_three(db, 0o644)
    url = f"sqlite:///{db}"
    stats = _stats_as_nobody(url)
    assert any(line.split() == ["PENDING", "3"] for line in stats.splitlines()), stats
    listing = _as_nobody(str(JOBQ), "--db", url, "list")
    assert listing.returncode == 0 and "1-3 of 3 jobs" in listing.stdout, (listing.stdout, listing.stderr)
    line = one_line_error(_as_nobody(str(JOBQ), "--db", url, "enqueue", "--json", "{}"), "(file permissions)")
    assert "may read the database but not write it" in line
    one_line_error(_as_nobody(str(JOBQ), "--db", url, "cancel", "1"), "permissions")
    assert sorted(p.name for p in shared_dir.iterdir()) == ["q.db"]  # the reader made no file
    with jobq.Queue(url) as q:
        assert q.count() == 3 and q.get(1).status == jobq.JobStatus.PENDING  # type: ignore[union-attr]
        assert q.backend.integrity_check() == "ok"  # type: ignore[attr-defined]
    db.chmod(0o600)  # not even readable: the usual error, which names the permissions
    one_line_error(_as_nobody(str(JOBQ), "--db", url, "stats"), "no permission")


def test_a_reader_that_may_not_create_the_wal_reads_the_queue(shared_dir: Path) -> None:
    """The file writable by all, its directory not: WAL mode's -wal and -shm cannot be made."""
    db = shared_dir / "q.db"
    _queue_of_three(db, 0o666)
    url = f"sqlite:///{db}"
    _stats_as_nobody(url)
    one_line_error(_as_nobody(str(JOBQ), "--db", url, "enqueue", "--json", "{}"), "directory permissions")
    assert sorted(p.name for p in shared_dir.iterdir()) == ["q.db"]


class _Reader:
    """A reader that stays open as ``nobody``, as the ops app does (``READER``)."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [*NOBODY, sys.executable, "-c", READER, url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=without_jobq_settings(), cwd="/",
        )  # fmt: skip

    def count(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, self.proc.stderr.read() if self.proc.stderr else "the reader exited"
        return int(answer)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=30)


def _reader_of_three(shared_dir: Path) -> tuple[str, _Reader]:
    """A queue of three jobs readable by all (closed cleanly: no -wal), and a reader of it."""
    db = shared_dir / "q.db"
    _queue_of_three(db, 0o644)
    url = f"sqlite:///{db}"
    return url, _Reader(url)


def test_a_reader_as_another_user_follows_the_owner_s_writes(shared_dir: Path) -> None:
    """The ops app's case: opened before any writer (no -wal: read without locks), it sees what
    the owner's writer commits once it appears, through a checkpoint of the WAL into the file
    (its -shm read-only to the reader) and after the writer closes."""
    url, reader = _reader_of_three(shared_dir)
    try:
        assert reader.count() == 3
        with jobq.Queue(url) as writer:
            writer.enqueue_many([{"n": n} for n in range(10)])
            assert reader.count() == 13
            for _ in range(60):  # past the WAL's auto-checkpoint: pages move into the file
                writer.enqueue_many([{"pad": "x" * 1000} for _ in range(20)])
            assert reader.count() == 13 + 1200
        assert reader.count() == 13 + 1200
    finally:
        reader.stop()
    with jobq.Queue(url) as q:
        assert q.backend.integrity_check() == "ok"  # type: ignore[attr-defined]


def test_a_reader_as_another_user_sees_writers_that_came_and_went_between_its_reads(shared_dir: Path) -> None:
    """Opened with no -wal (read without locks), the owner's writers each open, commit and close
    between two reads: each close checkpoints and deletes its -wal, so none is ever seen. The
    reader served the jobs it had first read, for good; now the changed file is read anew."""
    url, reader = _reader_of_three(shared_dir)
    try:
        assert reader.count() == 3
        for n in range(2):
            with jobq.Queue(url) as writer:
                writer.enqueue({"late": n})
            assert not (shared_dir / "q.db-wal").exists()
            assert reader.count() == 3 + n + 1
    finally:
        reader.stop()


def test_a_killed_owner_s_wal_is_read_by_a_user_who_may_only_read(shared_dir: Path) -> None:
    """The owner's writer killed with jobs committed in its -wal only (no checkpoint, -wal and
    -shm left behind, readable by the reader, not writable): the reader reads them through
    SQLite's read-only shared index, and writes nothing, the files included."""
    db = shared_dir / "q.db"
    _queue_of_three(db, 0o644)
    url = f"sqlite:///{db}"
    commit_then_die(url, "q.enqueue_many([{'n': n} for n in range(4)])", "q.cancel(1)")
    left = {p.name: p.stat() for p in shared_dir.iterdir()}
    assert set(left) == {"q.db", "q.db-wal", "q.db-shm"} and left["q.db-wal"].st_size > 0
    # SQLite gives the -wal and -shm the database file's owner and mode: readable, not writable.
    assert {name: st.st_mode & 0o777 for name, st in left.items()} == dict.fromkeys(left, 0o644)
    stats = _stats_as_nobody(url)
    assert any(line.split() == ["PENDING", "6"] for line in stats.splitlines()), stats
    assert any(line.split() == ["CANCELLED", "1"] for line in stats.splitlines()), stats
    one_line_error(_as_nobody(str(JOBQ), "--db", url, "enqueue", "--json", "{}"), "permissions")
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in shared_dir.iterdir()} == {
        name: (st.st_size, st.st_mtime_ns) for name, st in left.items()
    }
    with jobq.Queue(url) as q:  # the owner again: the killed writer's jobs are there
        assert q.count() == 7 and q.backend.integrity_check() == "ok"  # type: ignore[attr-defined]
