"""Item 10: database faults. Disk full, read-only filesystem, corrupt or truncated file, missing directory.

Each gets a clear one-line error from the real ``jobq`` command (non-zero exit, one stderr line
starting ``jobq: error:``, no traceback), and no stored job is lost once the fault is removed.
Disk full and read-only use a small tmpfs (root only: skipped when ``mount`` is not permitted);
root ignores file permissions, so a read-only *mount* is the honest read-only database here.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_errors import one_line_error, run_jobq
from harness import Mount, Recorder
from killed_writer import commit_then_die

import jobq

cli = run_jobq


@pytest.fixture
def read_only_view(tmpfs: Mount, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A queue of 3 jobs, closed cleanly (no -wal), on a tmpfs ``fs``, and the same files through
    a read-only bind mount ``ro`` (as a container's `:ro` volume): ``(fs, ro)``."""
    fs = tmpfs("16m")
    ro = tmp_path / "ro"
    ro.mkdir()
    with jobq.Queue(f"sqlite:///{fs}/q.db") as q:
        q.enqueue_many([{"n": n} for n in range(3)])
    assert not (fs / "q.db-wal").exists()  # a clean shutdown
    subprocess.run(["mount", "--bind", str(fs), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        yield fs, ro
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)


def stored(url: str) -> tuple[dict[str, int], str]:
    with jobq.Queue(url) as q:
        jobs = {j.idempotency_key or "": j.id for j in q.list(page=jobq.Page(limit=1_000_000))}
        return jobs, q.backend.integrity_check()  # type: ignore[attr-defined]


def test_disk_full(tmpfs: Mount, tmp_path: Path, record: Recorder) -> None:
    fs = tmpfs("2m")
    url = f"sqlite:///{fs}/q.db"
    acked: dict[str, int] = {}
    with jobq.Queue(url) as q:
        for i in range(20):
            acked[f"k{i}"] = q.enqueue({"n": i}, key=f"k{i}")
        filler = fs / "filler"
        # Unbuffered: a buffered file's close would retry the write that found the disk full
        # (and raise), depending on how much room the enqueues above happened to leave.
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass  # the disk is full now
        refused = None
        for i in range(20, 2000):  # the WAL may have room left for a few commits
            try:
                acked[f"k{i}"] = q.enqueue({"n": i, "pad": "x" * 2000}, key=f"k{i}")
            except jobq.StorageError as exc:
                refused = str(exc)
                break
    assert refused and "full" in refused, refused
    line = one_line_error(cli("--db", url, "enqueue", "--json", '{"pad": "' + "x" * 30000 + '"}', cwd=tmp_path), "full")

    filler.unlink()  # the fault is removed
    jobs, integrity = stored(url)
    missing = sum(1 for k, v in acked.items() if jobs.get(k) != v)
    done = cli("--db", url, "enqueue", "--json", '{"after": "full"}', cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record("disk full (2 MB tmpfs)", backend="sqlite", jobs=len(acked), faults=1, lost=missing, duplicated=0,
           integrity=integrity, error=line)  # fmt: skip
    assert missing == 0 and integrity == "ok"


def test_read_only_filesystem(tmpfs: Mount, tmp_path: Path, record: Recorder) -> None:
    fs = tmpfs("8m")
    url = f"sqlite:///{fs}/q.db"
    with jobq.Queue(url) as q:
        acked = {f"k{i}": q.enqueue({"n": i}, key=f"k{i}") for i in range(10)}
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    line = one_line_error(
        cli("--db", url, "enqueue", "--json", "{}", cwd=tmp_path), "read-only", "readonly", "permission"
    )
    # Reads work on the read-only mount (after a clean shutdown: no -wal or -shm to share).
    listing = cli("--db", url, "list", "--limit", "100", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert len(re.findall(r"(?m)^\d+ +PENDING ", listing.stdout)) == len(acked), listing.stdout
    counts = cli("--db", url, "stats", cwd=tmp_path)
    assert counts.returncode == 0 and re.search(r"(?m)^PENDING +10$", counts.stdout), counts.stdout
    one_line_error(cli("--db", url, "cancel", "1", cwd=tmp_path), "read-only")
    # A new database there: the mount is named too, though there is no file to read.
    new = f"sqlite:///{fs}/new.db"
    one_line_error(cli("--db", new, "enqueue", "--json", "{}", cwd=tmp_path), "mounted read-only")
    subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)
    jobs, integrity = stored(url)
    missing = sum(1 for k, v in acked.items() if jobs.get(k) != v)
    record("read-only filesystem", backend="sqlite", jobs=len(acked), faults=1, lost=missing, duplicated=0,
           integrity=integrity, error=line, list_while_read_only=listing.returncode == 0)  # fmt: skip
    assert missing == 0 and integrity == "ok"


def test_a_queue_opened_on_a_read_only_mount_writes_once_the_mount_is_writable_again(tmpfs: Mount) -> None:
    """A long-running process (the manager, an application's Queue) opened the queue while its
    volume was read-only. Once the volume is writable again its writes go through: they failed
    until a restart, blaming file permissions. (The other way round cannot be made here: the
    kernel refuses to remount read-only while a process has the -wal open for writing.)"""
    fs = tmpfs("8m")
    url = f"sqlite:///{fs}/q.db"
    with jobq.Queue(url) as q:
        q.enqueue({"n": 1})
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    reader = jobq.Queue(url, create=False)
    try:
        assert reader.count() == 1
        with pytest.raises(jobq.StorageError, match="mounted read-only"):
            reader.enqueue({"n": "refused"})
        subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)
        assert reader.enqueue({"n": 2}) == 2
        assert reader.cancel(1).ok and reader.enqueue({"n": 3}) == 3
    finally:
        reader.close()
    with jobq.Queue(url) as q:
        assert sorted(j.id for j in q.list_jobs()) == [1, 2, 3]
        assert q.backend.integrity_check() == "ok"  # type: ignore[attr-defined]


def make_db(path: Path, n: int) -> None:
    with jobq.Queue(f"sqlite:///{path}") as q:
        q.enqueue_many([{"n": i, "pad": "y" * 500} for i in range(n)])
    assert not Path(f"{path}-wal").exists(), "the last close checkpointed the WAL into the file"


def test_corrupt_header(tmp_path: Path, record: Recorder) -> None:
    db = tmp_path / "q.db"
    make_db(db, 200)
    with open(db, "r+b") as f:
        f.write(b"this is not sqlite at all")
    line = one_line_error(cli("--db", f"sqlite:///{db}", "list", cwd=tmp_path), "not a sqlite database", "corrupt")
    one_line_error(cli("--db", f"sqlite:///{db}", "enqueue", "--json", "{}", cwd=tmp_path))
    record("corrupt database header", backend="sqlite", jobs=200, faults=1, lost=0, duplicated=0,
           integrity=None, error=line)  # fmt: skip


def test_truncated_file(tmp_path: Path, record: Recorder) -> None:
    db = tmp_path / "q.db"
    make_db(db, 2000)
    size = db.stat().st_size
    os.truncate(db, size // 2)
    line = one_line_error(
        cli("--db", f"sqlite:///{db}", "list", "--limit", "5000", cwd=tmp_path), "corrupt", "malformed"
    )
    record("truncated database file", backend="sqlite", jobs=2000, faults=1, lost=0, duplicated=0,
           integrity=None, error=line)  # fmt: skip


def test_missing_or_unusable_directory(tmp_path: Path, record: Recorder) -> None:
    missing = tmp_path / f"nowhere-{uuid.uuid4().hex}" / "q.db"
    line = one_line_error(cli("--db", f"sqlite:///{missing}", "list", cwd=tmp_path), "no database", "not found")
    assert not missing.parent.exists(), "a read-only command must not create the directory"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line2 = one_line_error(
        cli("--db", f"sqlite:///{blocker}/sub/q.db", "enqueue", "--json", "{}", cwd=tmp_path), "directory", "open"
    )
    record("missing database directory", backend="sqlite", jobs=0, faults=2, lost=0, duplicated=0,
           integrity=None, error=line, error_unusable=line2)  # fmt: skip


def test_a_directory_named_as_the_database_is_said_to_be_one(tmp_path: Path) -> None:
    # `--db data` meant as `--db data/queue.db`: the error named a missing directory or permissions.
    for command in (["list"], ["enqueue", "--json", "{}"]):
        line = one_line_error(cli("--db", f"sqlite:///{tmp_path}", *command, cwd=tmp_path), "is a directory")
        assert "queue.db" in line, line
    assert list(tmp_path.iterdir()) == [], "nothing was created in it"
    assert not any(p.name.startswith(tmp_path.name + "-") for p in tmp_path.parent.iterdir()), "nor next to it"


def test_a_read_only_mount_of_a_live_queue_follows_its_writer(
    read_only_view: tuple[Path, Path], tmp_path: Path
) -> None:
    """The ops app's case: the queue's directory mounted read-only (`-v data:/data:ro`) while the
    workers write through their own mount. A reader opened before any writer (no -wal: read
    without locks) sees what the writer commits once it appears, through a checkpoint of the WAL
    into the file and after the writer closes; it never writes (an action is one line's error)."""
    fs, ro = read_only_view
    with jobq.Queue(f"sqlite:///{ro}/q.db") as reader:
        assert reader.count() == 3
        with pytest.raises(jobq.StorageError, match="mounted read-only"):
            reader.enqueue({"n": "refused"})
        with jobq.Queue(f"sqlite:///{fs}/q.db") as writer:
            writer.enqueue_many([{"n": n} for n in range(10)])
            assert reader.count() == 13
            for _ in range(60):  # past the WAL's auto-checkpoint: pages move into the file
                writer.enqueue_many([{"pad": "x" * 1000} for _ in range(20)])
            assert reader.count() == 13 + 1200
            newest = writer.enqueue({"n": "last"})
            assert reader.get(newest).payload == {"n": "last"}  # type: ignore[union-attr]
        assert reader.count() == 13 + 1200 + 1
        assert cli("--db", f"sqlite:///{ro}/q.db", "stats", cwd=tmp_path).returncode == 0


def test_a_killed_writer_s_wal_is_read_on_a_read_only_mount(tmpfs: Mount, tmp_path: Path) -> None:
    """A host that died with the queue open, its volume then mounted read-only for a look: the
    jobs its writer committed are still in the -wal (never checkpointed), which SQLite reads with
    its shared index kept in the reader's memory (-shm cannot be written there)."""
    fs = tmpfs("8m")
    url = f"sqlite:///{fs}/q.db"
    commit_then_die(url, "q.enqueue_many([{'n': n} for n in range(4)])")
    assert (fs / "q.db-wal").stat().st_size > 0
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    counts = cli("--db", url, "stats", cwd=tmp_path)
    assert counts.returncode == 0 and re.search(r"(?m)^PENDING +4$", counts.stdout), (counts.stdout, counts.stderr)
    one_line_error(cli("--db", url, "enqueue", "--json", "{}", cwd=tmp_path), "read-only")


def test_a_writer_that_came_and_went_between_two_reads_is_seen(read_only_view: tuple[Path, Path]) -> None:
    """Read without locks (a read-only mount, no -wal when opened), a writer through the other
    mount that opens, commits and closes between two reads (`jobq enqueue`, a worker's restart)
    checkpoints and deletes its -wal on close: no -wal is ever seen. The reader served what it had
    read before, for good (its immutable file's pages), until it was restarted. A file put in
    place of the queue's (a restore) is read too."""
    fs, ro = read_only_view
    with jobq.Queue(f"sqlite:///{ro}/q.db") as reader:
        backend: Any = reader.backend
        assert reader.count() == 3 and backend._immutable
        for n in (4, 5):
            with jobq.Queue(f"sqlite:///{fs}/q.db") as writer:
                writer.enqueue({"n": n})
            assert not (fs / "q.db-wal").exists()
            assert reader.count() == n
            assert [j.payload for j in reader.list(page=jobq.Page(limit=1))] == [{"n": n}]
        with jobq.Queue(f"sqlite:///{fs}/other.db") as other:  # a copy put in place (a restore)
            other.enqueue({"restored": True})
        os.replace(fs / "other.db", fs / "q.db")
        assert reader.count() == 1 and reader.get(1).payload == {"restored": True}


def test_a_read_during_which_a_writer_appeared_runs_again_with_locks(read_only_view: tuple[Path, Path]) -> None:
    """Read without locks (a read-only mount, no -wal when opened), a read that a writer's first
    commit overtakes is not served: it runs again with SQLite's locks and sees the commit."""
    fs, ro = read_only_view
    writers: list[jobq.Queue] = []
    with jobq.Queue(f"sqlite:///{ro}/q.db") as reader:
        backend: Any = reader.backend
        assert reader.count() == 3 and backend._immutable
        runs: list[int] = []

        def count_while_a_writer_commits(c: Any) -> int:
            seen = int(c.execute("SELECT count(*) FROM jobs").fetchall()[0][0])
            if not runs:  # the first run: a writer opens and commits after the read, before its end
                writers.append(jobq.Queue(f"sqlite:///{fs}/q.db"))
                writers[0].enqueue({"n": "overtaking"})
            runs.append(seen)
            return seen

        try:
            assert backend._locked(count_while_a_writer_commits, write=False) == 4
            assert runs == [3, 4] and not backend._immutable
        finally:
            for w in writers:
                w.close()
