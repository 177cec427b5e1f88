"""``jobq backup`` and ``jobq restore`` under faults: a full disk, a write lock held with a
transaction open, and a restore killed at any moment (the queue's file is always one whole queue,
the replaced one is never lost). The promises without faults: tests/integration/test_backup_restore.py."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import apsw
from children import stopped
from cli_errors import JOBQ, one_line_error, run_jobq, without_jobq_settings
from harness import Mount
from polling import wait_for

import jobq


def _count(db: Path) -> tuple[int, str]:
    """(jobs, integrity_check) of the queue file ``db``, read without writing beside it."""
    conn = apsw.Connection(f"file:{db}?mode=ro&immutable=1", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        jobs = conn.execute("SELECT count(*) FROM jobs").fetchall()[0][0]
        return int(jobs), str(conn.execute("PRAGMA integrity_check").fetchall()[0][0])
    finally:
        conn.close()


def test_a_backup_to_a_full_disk_is_one_line_naming_it_and_leaves_nothing(tmpfs: Mount, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"pad": "x" * 1000, "n": i} for i in range(3000)])
    small = tmpfs("1m")
    for args in (("backup", str(small / "b.db")), ("backup", "--compact", str(small / "b.db"))):
        line = one_line_error(run_jobq("--db", url, *args, cwd=tmp_path), "full")
        assert "b.db: the disk is full" in line, line
        assert not list(small.iterdir())
    with jobq.Queue(url) as q:
        assert q.count() == 3000 and q.enqueue({"after": "full"}) == 3001


def test_a_backup_runs_while_another_process_holds_the_write_lock_and_leaves_out_what_it_has_not_committed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": i} for i in range(50)])
    go = tmp_path / "go"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import apsw, os, time
                c = apsw.Connection({str(db)!r})
                c.execute("BEGIN IMMEDIATE")
                c.execute("DELETE FROM jobs WHERE id > 10")
                open({str(tmp_path / "holding")!r}, "w").close()
                while not os.path.exists({str(go)!r}):
                    time.sleep(0.01)
                c.execute("ROLLBACK")
            """),
        ]
    )
    try:
        wait_for(lambda: (tmp_path / "holding").exists(), what="the write lock to be held")
        done = run_jobq("--db", url, "backup", "b.db", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert holder.poll() is None, "the lock was let go before the backup ran"
        assert _count(tmp_path / "b.db") == (50, "ok")
    finally:
        go.touch()
        holder.wait(30)


def test_a_restore_killed_at_any_moment_leaves_one_whole_queue_and_never_loses_the_replaced_one(
    tmp_path: Path,
) -> None:
    """SIGKILL at random moments of ``jobq restore`` (a backup of 8,000 jobs over a queue of
    3,000 whose newest id is 9,000): the queue's file is always the old queue or the restored
    one, whole, and the old one is always somewhere (in place, or kept as
    ``queue.db.replaced-*``). Run to its end, the restore then takes ids above the old queue's."""
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(f"sqlite:///{tmp_path / 'source.db'}") as src:
        src.enqueue_many([{"pad": "y" * 2000, "n": i} for i in range(8000)])
        src.backup(tmp_path / "b.db")
    with jobq.Queue(url) as q:
        q.enqueue_many([{"n": i} for i in range(9000)])
    conn = apsw.Connection(str(db))
    conn.execute("DELETE FROM jobs WHERE id <= 6000")  # 3,000 jobs left, the newest id 9,000
    conn.close()
    rng = random.Random(11)
    states = set()
    for _ in range(10):
        proc = subprocess.Popen(
            [str(JOBQ), "--db", url, "restore", str(tmp_path / "b.db")],
            env=without_jobq_settings(),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
        )
        try:
            proc.wait(rng.uniform(0.05, 0.8))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        jobs, check = _count(db)
        assert check == "ok" and jobs in (3000, 8000), (jobs, check)
        states.add(jobs)
        kept = [_count(p)[0] for p in tmp_path.glob("queue.db.replaced-*") if not p.name.endswith(("-wal", "-shm"))]
        assert jobs == 3000 or 3000 in kept, "the replaced queue is gone"
        if jobs == 8000:
            break
    if 8000 not in states:
        done = run_jobq("--db", url, "restore", str(tmp_path / "b.db"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    with jobq.Queue(url) as q:
        assert q.count() == 8000 and q.enqueue({"n": "new"}) == 9001


def _copy_size(directory: Path, name: str) -> int | None:
    """How much a backup to ``name`` has written of its temporary file, with the file's rollback
    journal (None: neither there)."""
    sizes = []
    for p in directory.glob(f"{name}.tmp-*"):
        with contextlib.suppress(FileNotFoundError):  # linked and removed meanwhile
            sizes.append(p.stat().st_size)
    return sum(sizes) if sizes else None


def test_a_backup_frozen_mid_copy_blocks_no_worker_and_resumed_copies_the_one_commit_it_began_at(
    tmp_path: Path,
) -> None:
    """SIGSTOP of ``jobq backup`` while it writes its copy (a read transaction open on the queue,
    as a frozen process may hold one for minutes): producers and workers go on meanwhile, and the
    copy, once the process runs again, is the queue as it stood when the copy began, checked."""
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    with jobq.Queue(url) as q:
        q.enqueue_many([{"pad": "z" * 4000, "n": i} for i in range(20_000)])  # ~90 MB: a copy of ~0.5 s
        stored = q.count()
    froze = False
    for attempt in range(5):  # the freeze must land while the copy is written: tried until it does
        dest = tmp_path / f"b{attempt}.db"
        proc = subprocess.Popen(
            [str(JOBQ), "--db", url, "backup", str(dest)], env=without_jobq_settings(), cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60  # polled closely: the copy takes a fraction of a second
            while (_copy_size(tmp_path, dest.name) or 0) < 1 << 20 and proc.poll() is None:
                assert time.monotonic() < deadline, "the backup never began its copy"
                time.sleep(0.001)
            if proc.poll() is not None:  # done before a freeze could land
                continue
            proc.send_signal(signal.SIGSTOP)
            written = _copy_size(tmp_path, dest.name)
            if written is None or written >= db.stat().st_size * 0.9:  # copied before the stop
                continue
            froze = True
            with jobq.Queue(url) as q:  # the worker's and the producer's writes, while it is frozen
                ids = q.enqueue_many([{"after": i} for i in range(50)])
                for _ in ids:
                    job = q.claim("w")
                    assert job is not None
                    q.complete(job)
                assert q.count() == stored + 50
            assert stopped(proc.pid), "the backup ran on while the writes were made"
        finally:
            proc.send_signal(signal.SIGCONT)
            if not froze:
                proc.kill()
            out = proc.communicate(timeout=120)[1]
        assert proc.returncode == 0, out
        assert _count(dest) == (stored, "ok")  # the commit it began at: none of the 50 jobs made meanwhile
        break
    assert froze, "no freeze landed while the copy was written in 5 tries"
